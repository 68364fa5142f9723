//! Runs split into parts: `langevin fit --chain-range A..B` and
//! `langevin merge DIR... --out DIR`.
//!
//! A part runs chains `A..B` of a `--chains C` run. Chain `k` draws every
//! random number from `chain_rng(seed, k)` whatever process runs it, so its
//! draws are the whole run's. A part's folder holds `run.json` (the whole
//! run's), `samples.csv` (its chains' rows, numbered as in the whole run)
//! and, once finished, `part.json`: the saved command and resolved
//! configuration, its chains, the steps done, the thinning, and each chain's
//! divergences and final tuning.
//!
//! `merge` checks that the parts are of one run (same command but for
//! `--chain-range` and `--out`, same resolved configuration and data
//! fingerprint, identical `run.json`) and that their ranges cover `0..C`
//! exactly once, then writes the folder the single run writes: `run.json`
//! (copied), `samples.csv` (every row, draw-major, formatted by the same
//! writer: byte-identical), the plots (byte-identical), and `summary.json`
//! (identical but for `seconds`, the time the merge took).
//!
//! A run until converged cannot be split: whether it stops after a check
//! depends on the draws of every chain, so `--chain-range` needs `--steps`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use langevin::run::{write_json_atomic, SAMPLES_FILE};
use langevin::samples::{CsvDrawWriter, Samples};
use langevin_core::Tuning;
use serde::{Deserialize, Serialize};

use super::args::{ChainRange, MethodArg};
use super::plan::FitConfig;
use super::sample::Sampled;
use super::{data, plan, report, Saved};
use crate::exit::bad_input;
use crate::rundir::prepare_out_dir;

/// The file a finished part of a run writes.
pub const PART_FILE: &str = "part.json";
/// Version of the part format.
const PART_VERSION: u32 = 1;

/// `part.json`.
#[derive(Serialize, Deserialize)]
struct Part {
    version: u32,
    chains: ChainRange,
    /// What the part was started with (as a checkpoint saves it).
    saved: Saved,
    steps_done: u64,
    thin: u64,
    divergences: Vec<u64>,
    tuning: Vec<Tuning>,
}

/// `langevin merge`.
#[derive(Args, Debug, Clone)]
pub struct MergeArgs {
    /// The part folders (`fit --chain-range`), in any order.
    #[arg(required = true, value_name = "DIR")]
    pub parts: Vec<PathBuf>,
    /// The merged run folder (must not hold a run).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Skip the PNG plots.
    #[arg(long)]
    pub no_plots: bool,
    /// No report on stdout.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Refuse a `--chain-range` the run cannot be split by.
pub fn check_chain_range(r: ChainRange, cfg: &FitConfig) -> Result<()> {
    if !cfg.method.is_sampler() || cfg.method == MethodArg::Nuts {
        crate::bail_input!(
            "--chain-range: --method {} is not run chain by chain on the run loop; \
             only sgld, sghmc, sgnht, baoa and map runs can be split",
            cfg.method.name()
        );
    }
    if cfg.until.is_some() {
        crate::bail_input!(
            "--chain-range needs a run of fixed length (--steps N): a run until converged \
             stops when the draws of all its chains have converged, which no part can judge \
             alone (under mpirun, rank 0 judges it for all ranks)"
        );
    }
    if r.end > cfg.chains {
        crate::bail_input!(
            "--chain-range {r}: the run has {} chains (0..{}); give --chains C for the whole run",
            cfg.chains,
            cfg.chains
        );
    }
    Ok(())
}

/// Write `DIR/part.json` for a finished part.
pub fn write_part(
    dir: &Path,
    chains: ChainRange,
    saved: serde_json::Value,
    sampled: &Sampled,
) -> Result<()> {
    let part = Part {
        version: PART_VERSION,
        chains,
        saved: serde_json::from_value(saved)?,
        steps_done: sampled.steps_done,
        thin: sampled.thinning.thin,
        divergences: sampled.divergences.clone(),
        tuning: sampled.tuning.clone(),
    };
    write_json_atomic(&dir.join(PART_FILE), &part)?;
    Ok(())
}

fn read_part(dir: &Path) -> Result<Part> {
    let path = dir.join(PART_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        bad_input(format!(
            "{}: not a finished part of a run ({e}); run `langevin fit --chain-range A..B \
             --out {}` (or --resume it) first",
            path.display(),
            dir.display()
        ))
    })?;
    let part: Part = serde_json::from_str(&text)
        .map_err(|e| bad_input(format!("{}: invalid part file: {e}", path.display())))?;
    if part.version != PART_VERSION {
        crate::bail_input!(
            "{}: part format version {} is not supported (expected {PART_VERSION})",
            path.display(),
            part.version
        );
    }
    let n = part.chains.end - part.chains.start;
    if part.divergences.len() != n || part.tuning.len() != n {
        crate::bail_input!(
            "{}: {n} chains, but {} divergence counts and {} tunings",
            path.display(),
            part.divergences.len(),
            part.tuning.len()
        );
    }
    Ok(part)
}

/// The command of a part without what may differ between parts (the
/// range, the folder, checkpointing, what is printed).
fn command_of(saved: &Saved) -> Result<serde_json::Value> {
    let mut args = saved.args.clone();
    args.chain_range = None;
    args.out = None;
    args.quiet = false;
    args.no_plots = false;
    // Checkpointing does not change the draws.
    args.checkpoint_every = None;
    args.require_converged = false;
    Ok(serde_json::to_value(args)?)
}

/// Run `langevin merge`.
pub fn run(a: MergeArgs) -> Result<()> {
    let t0 = Instant::now();
    let mut parts = Vec::with_capacity(a.parts.len());
    for dir in &a.parts {
        if !dir.is_dir() {
            crate::bail_input!("{}: no such directory", dir.display());
        }
        parts.push((dir.clone(), read_part(dir)?));
    }
    parts.sort_by_key(|(_, p)| p.chains.start);
    // One run: the same command, configuration, data and run.json.
    let (dir0, p0) = &parts[0];
    let command0 = command_of(&p0.saved)?;
    let meta0 = std::fs::read(dir0.join("run.json"))
        .map_err(|e| bad_input(format!("{}: {e}", dir0.join("run.json").display())))?;
    for (dir, p) in &parts[1..] {
        let same = command_of(&p.saved)? == command0
            && p.saved.config == p0.saved.config
            && p.saved.data_fingerprint == p0.saved.data_fingerprint;
        if !same {
            crate::bail_input!(
                "{} and {} are parts of different runs (their commands, configurations or \
                 data differ); only parts of one run (the same options but for --chain-range \
                 and --out) can be merged",
                dir0.display(),
                dir.display()
            );
        }
        let meta = std::fs::read(dir.join("run.json"))
            .map_err(|e| bad_input(format!("{}: {e}", dir.join("run.json").display())))?;
        if meta != meta0 {
            crate::bail_input!(
                "{} and {}: run.json differs; the parts are not of one run",
                dir0.join("run.json").display(),
                dir.join("run.json").display()
            );
        }
        if p.steps_done != p0.steps_done || p.thin != p0.thin {
            crate::bail_input!(
                "{} ran {} steps (thinning {}), {} ran {} (thinning {}): parts of one run \
                 run the same steps",
                dir0.display(),
                p0.steps_done,
                p0.thin,
                dir.display(),
                p.steps_done,
                p.thin
            );
        }
    }
    let args = p0.saved.args.clone();
    let prep = data::prepare(&args.d)?;
    let cfg = plan::resolve(&args, &prep)?;
    if super::without_data(serde_json::to_value(&cfg)?)
        != super::without_data(p0.saved.config.clone())
        || prep.fingerprint() != p0.saved.data_fingerprint
    {
        crate::bail_input!(
            "{}: the data or the resolved configuration differ from the parts' (was the data \
             file changed?); cannot merge",
            dir0.display()
        );
    }
    // The ranges cover 0..C exactly once.
    let mut next = 0;
    for (i, (dir, p)) in parts.iter().enumerate() {
        if p.chains.start < next {
            let (prev, _) = &parts[i - 1];
            crate::bail_input!(
                "chains {}..{next} are in two parts ({} and {}): the ranges overlap",
                p.chains.start,
                prev.display(),
                dir.display()
            );
        }
        if p.chains.start > next {
            crate::bail_input!(
                "chains {next}..{} of the run's {} are in no part: run `langevin fit \
                 --chain-range {next}..{}` with the same options first",
                p.chains.start,
                cfg.chains,
                p.chains.start
            );
        }
        next = p.chains.end;
    }
    if next != cfg.chains {
        crate::bail_input!(
            "chains {next}..{c} of the run's {c} are in no part: run `langevin fit \
             --chain-range {next}..{c}` with the same options first",
            c = cfg.chains
        );
    }
    // The draws, chain by chain.
    let names = prep.model.param_names().to_vec();
    let mut samples = Samples::new(names.clone(), cfg.chains);
    let (mut divergences, mut tuning) = (Vec::new(), Vec::new());
    for (dir, p) in &parts {
        let path = dir.join(SAMPLES_FILE);
        let s = Samples::read_csv_from_chain(&path, None, p.chains.start).map_err(bad_input)?;
        let n = p.chains.end - p.chains.start;
        if s.names != names || s.chains.len() != n {
            crate::bail_input!(
                "{}: expected the {} parameters of the run over chains {}, found {} \
                 parameters over {} chains",
                path.display(),
                names.len(),
                p.chains,
                s.names.len(),
                s.chains.len()
            );
        }
        let expected = langevin::run::Thinning {
            burn_in: cfg.burn_in,
            thin: p.thin,
        }
        .n_draws(p.steps_done) as usize;
        if let Some(k) = s.chains.iter().position(|t| t.n_draws() != expected) {
            crate::bail_input!(
                "{}: chain {} has {} draws, {expected} were kept in {} steps",
                path.display(),
                p.chains.start + k,
                s.chains[k].n_draws(),
                p.steps_done
            );
        }
        for (k, tr) in s.chains.into_iter().enumerate() {
            samples.chains[p.chains.start + k] = tr;
        }
        divergences.extend_from_slice(&p.divergences);
        tuning.extend(p.tuning.iter().cloned());
    }
    let _lock = prepare_out_dir(&a.out)?;
    std::fs::write(a.out.join("run.json"), &meta0)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", a.out.join("run.json").display()))?;
    write_draws(&a.out.join(SAMPLES_FILE), &samples)?;
    let r = report::ReportArgs {
        cfg: &cfg,
        prep: &prep,
        out_dir: &a.out,
        no_plots: a.no_plots,
        quiet: a.quiet,
        t0,
    };
    let summary = report::summarize_and_report(
        &r,
        &samples,
        &divergences,
        Some(&report::SamplerFacts {
            steps_done: p0.steps_done,
            thin: p0.thin,
            tuning: &tuning,
        }),
    )?;
    write_json_atomic(&a.out.join("summary.json"), &summary)?;
    if !a.quiet {
        println!(
            "wrote {} ({} parts, {} chains)",
            a.out.display(),
            parts.len(),
            cfg.chains
        );
    }
    Ok(())
}

/// Every draw, draw-major (draw `i` of chains 0, 1, ..., then draw `i + 1`),
/// as the run loop streams them.
fn write_draws(path: &Path, samples: &Samples) -> Result<()> {
    let mut w = CsvDrawWriter::create(path, &samples.names)?;
    let n = samples
        .chains
        .iter()
        .map(|c| c.n_draws())
        .max()
        .unwrap_or(0);
    for i in 0..n {
        for (k, tr) in samples.chains.iter().enumerate() {
            if i < tr.n_draws() {
                w.write(k, i, tr.draw(i))?;
            }
        }
    }
    w.sync()?;
    Ok(())
}
