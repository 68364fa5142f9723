//! `langevin fit`: Bayesian learning on a CSV file or a bundled data set.
//!
//! A typed pipeline, one module per stage:
//! * [`args`]: the command line;
//! * [`data`]: load the table, split it (seeded), standardise features (and
//!   a regression target) with training statistics, build the model's
//!   batch-averaged log posterior;
//! * [`plan`]: every option resolved and validated in one place (step size,
//!   steps, burn-in, thinning, chains, batch size);
//! * [`sample`]: the samplers on the library's run loop ([`langevin::run`]),
//!   draws streamed to `samples.csv`, checkpoints, resume;
//!   [`gaussian`]: the Gaussian approximations, fitted then sampled;
//!   [`nuts`]: the NUTS reference ([`langevin::nuts`], full batch);
//! * [`report`]: summaries (ESS, R-hat), the posterior predictive on the
//!   held-out rows, plots; `summary.json` is written last (atomically).
//!
//! Reproducibility: chain `c` draws every random number (initial point,
//! momenta, minibatch order, noise) from `chain_rng(seed, c)`; the split uses
//! its own stream of the same seed. The result does not depend on the number
//! of threads.

pub mod analog;
pub mod args;
pub mod cv;
pub mod data;
pub mod gaussian;
pub mod merge;
pub mod nuts;
pub mod plan;
pub mod ranks;
pub mod report;
pub mod sample;
pub mod shards;
pub mod tngd;

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use langevin::run::{read_checkpoint_user, write_json_atomic, RunFiles};
use serde::{Deserialize, Serialize};

pub use args::{DataArgs, FitArgs, MethodArg};
pub use data::DEFAULT_DATA;

use crate::exit::bad_input;
use crate::rundir::{default_out_dir, lock_run_dir, prepare_out_dir};

/// What `checkpoint.json` keeps of the command, to resume it.
#[derive(Serialize, Deserialize)]
struct Saved {
    /// The arguments of the original command (a data file path made absolute).
    args: FitArgs,
    /// The resolved configuration; a resumed run must resolve to the same
    /// (but for the data path, which may be written differently).
    config: serde_json::Value,
    /// Hash of the prepared training and evaluation data.
    data_fingerprint: u64,
}

/// `config` without the data path (compared through the fingerprint).
fn without_data(mut config: serde_json::Value) -> serde_json::Value {
    if let Some(o) = config.as_object_mut() {
        o.remove("data");
    }
    config
}

/// Run `langevin fit`.
pub fn run(args: FitArgs) -> Result<()> {
    let t0 = Instant::now();
    // Parallelism is over chains. candle's CPU matmul asks rayon for threads
    // on every call (even on tiny matrices), which costs more than it gains
    // here and fights the chain threads: keep each chain's tensor operations
    // on its own thread unless the user chose otherwise.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
    if args.threads == Some(0) {
        crate::bail_input!("--threads must be at least 1");
    }
    // Under mpirun: this process's rank; rank 0 writes the run folder. The
    // ranks share the chains, or with --data-parallel the rows.
    let world = ranks::team();
    let root = world.as_ref().is_none_or(|t| t.rank() == 0);
    if args.data_parallel && args.chain_range.is_some() {
        crate::bail_input!(
            "--chain-range and --data-parallel do not go together: a job array splits the \
             chains, --data-parallel the rows"
        );
    }
    if world.is_some() && args.chain_range.is_some() {
        crate::bail_input!(
            "--chain-range is for runs without MPI (job arrays); under mpirun every rank \
             runs its block of the --chains"
        );
    }
    // `--resume DIR`: every option comes from the checkpoint.
    let (args, saved, resume_lock) = match &args.resume {
        Some(dir) => {
            if dir.join("summary.json").is_file() || dir.join(merge::PART_FILE).is_file() {
                if !args.quiet && root {
                    eprintln!("{}: the run is already complete", dir.display());
                }
                return Ok(());
            }
            if !dir.is_dir() {
                crate::bail_input!("--resume {}: no such directory", dir.display());
            }
            // Lock first, so the checkpoint cannot change under us (rank 0
            // holds the lock for the job).
            let lock = if root { Some(lock_run_dir(dir)?) } else { None };
            if !dir.join(langevin::run::CHECKPOINT_FILE).is_file() {
                crate::bail_input!(
                    "--resume {}: no {} in it; only a run started with --checkpoint-every \
                     can be resumed, and only after its first checkpoint (a --method nuts \
                     run cannot be resumed)",
                    dir.display(),
                    langevin::run::CHECKPOINT_FILE
                );
            }
            let (user, steps_done) = read_checkpoint_user(dir)?;
            let saved: Saved = serde_json::from_value(user).map_err(|e| {
                bad_input(format!(
                    "{}: invalid saved command: {e}",
                    dir.join(langevin::run::CHECKPOINT_FILE).display()
                ))
            })?;
            let mut a = saved.args.clone();
            a.out = Some(dir.clone());
            a.quiet = args.quiet;
            a.no_plots = args.no_plots;
            a.threads = args.threads;
            a.require_converged |= args.require_converged;
            (a, Some((saved, steps_done)), lock)
        }
        None => (args, None, None),
    };
    let mut args = args;
    args.quiet |= !root;
    let (team, shard_team) = match world {
        Some(t) if args.data_parallel => (None, t),
        t => (
            t,
            Box::new(langevin::run::Solo) as Box<dyn langevin::run::Team>,
        ),
    };
    let reduce = ranks::reduce();
    if args.checkpoint_every == Some(0) {
        crate::bail_input!("--checkpoint-every must be at least 1");
    }
    if args.data_parallel {
        if !matches!(
            args.method,
            MethodArg::Sgld
                | MethodArg::Sghmc
                | MethodArg::Sgnht
                | MethodArg::Baoa
                | MethodArg::Map
        ) {
            crate::bail_input!(
                "--data-parallel: only the samplers on the run loop (sgld, sghmc, sgnht, baoa, \
                 map) sum their gradients over the ranks, not --method {}",
                args.method.name()
            );
        }
        if args.adapt == Some(args::AdaptArg::None) && args.step_size.is_none() {
            crate::bail_input!(
                "--data-parallel with --adapt none needs a --step-size (the default one is \
                 found from every row's curvature, which no rank has)"
            );
        }
    }
    let prep = if args.data_parallel {
        shards::prepare(&args.d, shard_team.as_ref(), reduce.as_ref())?
    } else {
        data::prepare(&args.d)?
    };
    let cfg = plan::resolve(&args, &prep)?;
    let config_json = serde_json::to_value(&cfg)?;
    let fingerprint = if args.data_parallel {
        // Every rank's rows: the same on every rank (for as many ranks).
        shards::fingerprint(shard_team.as_ref(), prep.fingerprint())?
    } else {
        prep.fingerprint()
    };
    let chains = match args.chain_range {
        Some(r) => {
            merge::check_chain_range(r, &cfg)?;
            r.range()
        }
        None => 0..cfg.chains,
    };
    let out_dir = args.out.clone().unwrap_or_else(default_out_dir);
    if let Some((s, _)) = &saved {
        if without_data(s.config.clone()) != without_data(config_json.clone())
            || s.data_fingerprint != fingerprint
        {
            // Every rank of the job sees the same (the checkpoint and every
            // rank's rows): rank 0 reports it.
            ranks::team_done();
            crate::bail_input!(
                "--resume {}: the data or the resolved configuration differ from the \
                 checkpoint's (was the data file changed?{}); cannot continue this run",
                out_dir.display(),
                if args.data_parallel {
                    " a --data-parallel run resumes with as many ranks as it started with"
                } else {
                    ""
                }
            );
        }
    }
    if saved.is_some() {
        // The run folder must still hold this run's run.json.
        let meta = crate::rundir::read_meta(&out_dir)?;
        if meta.param_names != prep.model.param_names() || meta.model != *prep.model.spec() {
            crate::bail_input!(
                "{}: param_names/model do not match the checkpointed run; cannot continue it",
                out_dir.join("run.json").display()
            );
        }
    }
    // Held until the run ends: no second process writes this directory.
    if team.is_some() && (!cfg.method.is_sampler() || cfg.method == MethodArg::Nuts) {
        crate::bail_input!(
            "--method {}: under mpirun only the samplers on the run loop (sgld, sghmc, sgnht, \
             baoa, map) spread their chains over the ranks",
            cfg.method.name()
        );
    }
    let _lock = match resume_lock {
        Some(lock) => Some(lock),
        None if root => Some(prepare_out_dir(&out_dir)?),
        None => None,
    };
    if !args.quiet {
        if args.d.data.is_none() {
            eprintln!(
                "no --data given: using the bundled data set `{DEFAULT_DATA}` (target `{}`)",
                cfg.target
            );
        }
        let part = match args.chain_range {
            Some(r) => format!(" (chains {r} only: a part for `langevin merge`)"),
            None => String::new(),
        };
        let what = if let Some(u) = &cfg.until {
            format!(
                "{} chains until converged (every R-hat <= {}, every ESS >= {}; warm-up {}, at most {} steps)",
                cfg.chains, u.max_rhat, u.target_ess, cfg.burn_in, cfg.steps
            )
        } else if cfg.method.is_sampler() {
            format!("{} chains x {} steps", cfg.chains, cfg.steps)
        } else if cfg.method == MethodArg::Tngd {
            format!(
                "{} TNGD steps (device simulated), then the baselines: Adam (learning rate tuned on a validation split) and NGD-CG over the same steps",
                cfg.steps
            )
        } else if cfg.method == MethodArg::Analog {
            format!(
                "{} simulated circuit runs x {} draws",
                cfg.chains,
                cfg.draws_per_chain(prep.model.n_params())
            )
        } else {
            format!(
                "{} steps, then {} chains x {} draws",
                cfg.steps,
                cfg.chains,
                cfg.draws_per_chain(prep.model.n_params())
            )
        };
        eprintln!(
            "fitting {} ({}) on {} ({} rows: {} train, {} test) with {}: {what}{part}",
            cfg.model,
            cfg.task,
            prep.data_name,
            cfg.n_rows,
            cfg.n_train,
            cfg.n_test,
            cfg.method.label(),
        );
        if let Some((_, done)) = &saved {
            eprintln!(
                "resuming {} at step {done} of {}",
                out_dir.display(),
                cfg.steps
            );
        }
    }
    if saved.is_none() && root {
        write_json_atomic(
            &out_dir.join("run.json"),
            &prep.run_meta(config_json.clone()),
        )?;
    }
    let report = report::ReportArgs {
        cfg: &cfg,
        prep: &prep,
        out_dir: &out_dir,
        no_plots: args.no_plots,
        quiet: args.quiet,
        t0,
    };
    let summary = if cfg.method == MethodArg::Nuts {
        nuts::run(&report, args.threads)?
    } else if cfg.method.is_sampler() {
        let checkpoint = match args.checkpoint_every {
            Some(every) => Some((
                every,
                checkpoint_data(&args, config_json.clone(), fingerprint)?,
            )),
            None => None,
        };
        let sampled = sample::SampleRun {
            cfg: &cfg,
            prep: &prep,
            out_dir: &out_dir,
            quiet: args.quiet,
            threads: args.threads,
            checkpoint,
            resume: saved.is_some(),
            chains: chains.clone(),
            team: team.as_deref(),
            shards: args.data_parallel.then(|| sample::Shards {
                team: shard_team.as_ref(),
                reduce: reduce.as_ref(),
            }),
        }
        .run()?;
        if !root {
            // Rank 0 writes the report.
            return Ok(());
        }
        if let Some(r) = args.chain_range {
            let saved = checkpoint_data(&args, config_json, fingerprint)?;
            merge::write_part(&out_dir, r, saved, &sampled)?;
            RunFiles::remove_checkpoint(&out_dir)?;
            if !args.quiet {
                println!(
                    "wrote {} (chains {r}; combine the parts with `langevin merge`)",
                    out_dir.display()
                );
            }
            return Ok(());
        }
        report::summarize_and_report(
            &report,
            &sampled.samples,
            &sampled.divergences,
            Some(&report::SamplerFacts {
                steps_done: sampled.steps_done,
                thin: sampled.thinning.thin,
                tuning: &sampled.tuning,
            }),
        )?
    } else if cfg.method == MethodArg::Analog {
        analog::run(&report)?
    } else if cfg.method == MethodArg::Tngd {
        tngd::run(&report)?
    } else {
        gaussian::run(&report)?
    };
    write_json_atomic(&out_dir.join("summary.json"), &summary)?;
    // The run is complete: its checkpoint is no longer needed.
    RunFiles::remove_checkpoint(&out_dir)?;
    if !args.quiet {
        println!("wrote {}", out_dir.display());
    }
    if args.require_converged && summary["converged"] != serde_json::Value::Bool(true) {
        let why = summary["convergence"]["reason"]
            .as_str()
            .unwrap_or("no convergence diagnostics (too few draws per chain)");
        return Err(anyhow::Error::new(crate::exit::NotConverged(format!(
            "--require-converged: {why} (everything was written to {})",
            out_dir.display()
        ))));
    }
    Ok(())
}

/// What a checkpoint saves of the command (a data file path made absolute,
/// so the run can be resumed from any working directory).
fn checkpoint_data(
    args: &FitArgs,
    config: serde_json::Value,
    fp: u64,
) -> Result<serde_json::Value> {
    let mut saved = args.clone();
    saved.resume = None;
    if let Some(d) = &saved.d.data {
        if Path::new(d).is_file() {
            if let Ok(abs) = std::fs::canonicalize(d) {
                saved.d.data = Some(abs.display().to_string());
            }
        }
    }
    Ok(serde_json::to_value(Saved {
        args: saved,
        config,
        data_fingerprint: fp,
    })?)
}
