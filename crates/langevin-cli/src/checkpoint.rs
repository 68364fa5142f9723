//! Checkpoints of `langevin fit` (`--checkpoint-every N`, `--resume DIR`).
//!
//! A run advances all chains in *rounds* of steps. After each round the kept
//! draws are appended to `samples.csv` in a fixed order (draw-major: draw i of
//! chain 0, 1, ..., then draw i + 1), the file is flushed and fsynced, and,
//! when checkpointing, `checkpoint.json` is replaced atomically (temporary
//! file, fsync, rename, fsync of the directory). It holds the command-line
//! arguments, the resolved configuration, a fingerprint of the prepared data,
//! the byte length of `samples.csv` at that moment, and for every chain its
//! full transform state (parameters, momenta, thermostat, step), its random
//! generator, its minibatch cursor and its counters.
//!
//! `--resume DIR` reloads it, truncates `samples.csv` to the recorded length
//! (dropping rows written after the checkpoint by a killed process), reads the
//! draws back (numbers are written in shortest round-trip form, so they come
//! back bit for bit) and continues. Since each chain's computation depends
//! only on the seed and the chain index, and the row order does not depend on
//! the round length, the final `samples.csv` is byte-identical to the one an
//! uninterrupted run writes.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{Context, Result};
use langevin_core::{ChainRng, TransformState};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::exit::bad_input;
use crate::fit::FitArgs;

/// Version of the checkpoint format.
pub const CHECKPOINT_VERSION: u32 = 1;
/// File name inside the run directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.json";

/// Everything needed to continue a run (`checkpoint.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    pub version: u32,
    /// The arguments of the original command (a data file path made absolute).
    pub args: FitArgs,
    /// The resolved configuration; a resumed run must resolve to the same.
    pub config: serde_json::Value,
    /// Hash of the prepared training and evaluation data.
    pub data_fingerprint: u64,
    /// Byte length of `samples.csv` when the checkpoint was taken.
    pub samples_len: u64,
    /// Steps every chain has completed.
    pub steps_done: u64,
    /// One [`ChainCheckpoint`] per chain (kept as JSON until the transform is known).
    pub chains: Vec<serde_json::Value>,
}

/// Position in the minibatch stream of one chain.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cursor {
    order: Vec<u32>,
    pos: usize,
}

impl Cursor {
    /// Start of the stream over `n` rows (the first minibatch reshuffles).
    pub fn new(n: usize) -> Self {
        Self {
            order: (0..n as u32).collect(),
            pos: n,
        }
    }

    /// Indices of the next minibatch of `size` rows (reshuffled every epoch
    /// with the chain's generator), or `None` when a minibatch is every row.
    pub fn next(&mut self, size: usize, rng: &mut ChainRng) -> Option<&[u32]> {
        let n = self.order.len();
        if size >= n {
            return None;
        }
        if self.pos + size > n {
            self.order.shuffle(rng);
            self.pos = 0;
        }
        let idx = &self.order[self.pos..self.pos + size];
        self.pos += size;
        Some(idx)
    }
}

/// The saved progress of one chain.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound(
    serialize = "S: Serialize",
    deserialize = "S: serde::de::DeserializeOwned"
))]
pub struct ChainCheckpoint<S> {
    pub state: S,
    pub rng: ChainRng,
    pub cursor: Cursor,
    /// Steps completed.
    pub step: u64,
    /// Draws written to `samples.csv`.
    pub draws: usize,
    pub divergences: u64,
    pub stopped: bool,
}

impl<S: TransformState> ChainCheckpoint<S> {
    pub fn to_json(&self) -> Result<serde_json::Value> {
        Ok(serde_json::to_value(self)?)
    }

    pub fn from_json(v: &serde_json::Value, path: &Path, chain: usize) -> Result<Self> {
        serde_json::from_value(v.clone()).map_err(|e| {
            bad_input(format!(
                "{}: chain {chain}: invalid saved state for this method: {e}",
                path.display()
            ))
        })
    }
}

/// Read `DIR/checkpoint.json`; a missing or damaged file is bad input.
pub fn load(dir: &Path) -> Result<Checkpoint> {
    let path = dir.join(CHECKPOINT_FILE);
    if !dir.is_dir() {
        crate::bail_input!("--resume {}: no such directory", dir.display());
    }
    let text = std::fs::read_to_string(&path).map_err(|e| {
        bad_input(format!(
            "--resume {}: cannot read {} ({e}); only a run started with --checkpoint-every \
             can be resumed, and only after its first checkpoint",
            dir.display(),
            path.display()
        ))
    })?;
    let ck: Checkpoint = serde_json::from_str(&text)
        .map_err(|e| bad_input(format!("{}: invalid checkpoint: {e}", path.display())))?;
    if ck.version != CHECKPOINT_VERSION {
        crate::bail_input!(
            "{}: checkpoint format version {} is not supported (expected {CHECKPOINT_VERSION})",
            path.display(),
            ck.version
        );
    }
    Ok(ck)
}

/// FNV-1a hash of the bits of some number slices.
pub fn fingerprint(parts: &[&[f64]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in (p.len() as u64).to_le_bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        for v in *p {
            for b in v.to_bits().to_le_bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    h
}

/// Cut `samples.csv` back to `len` bytes (rows a killed process wrote after
/// the checkpoint) and read the draws in it: `out[c][i]` is draw `i` of chain
/// `c`. Checks that every chain has the number of draws the checkpoint says.
pub fn truncate_and_read_draws(
    path: &Path,
    len: u64,
    n_params: usize,
    expected: &[usize],
) -> Result<Vec<Vec<Vec<f64>>>> {
    let name = path.display().to_string();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| bad_input(format!("{name}: cannot open for resuming: {e}")))?;
    let have = file.metadata()?.len();
    if have < len {
        crate::bail_input!(
            "{name}: {have} bytes, shorter than the {len} bytes the checkpoint recorded; \
             the file was changed after the run"
        );
    }
    file.set_len(len)
        .with_context(|| format!("truncating {name}"))?;
    file.sync_all()?;
    drop(file);
    let mut out: Vec<Vec<Vec<f64>>> = vec![Vec::new(); expected.len()];
    let rdr = BufReader::new(File::open(path).with_context(|| format!("reading {name}"))?);
    for (i, line) in rdr.lines().enumerate() {
        let line = line.with_context(|| format!("reading {name}"))?;
        if i == 0 {
            continue; // header
        }
        let bad = |what: &str| bad_input(format!("{name}:{}: {what}", i + 1));
        let mut cells = line.split(',');
        let chain: usize = cells
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("bad chain index"))?;
        let draw: usize = cells
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("bad draw index"))?;
        if chain >= out.len() || draw != out[chain].len() {
            return Err(bad("rows out of order for a checkpointed run"));
        }
        let vals: Vec<f64> = cells
            .map(|s| s.parse::<f64>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| bad("a value is not a number"))?;
        if vals.len() != n_params {
            return Err(bad("wrong number of values"));
        }
        out[chain].push(vals);
    }
    let got: Vec<usize> = out.iter().map(|c| c.len()).collect();
    if got != expected {
        crate::bail_input!(
            "{name}: draws per chain {got:?} do not match the checkpoint's {expected:?}"
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use langevin_core::chain_rng;

    #[test]
    fn cursor_round_trips_mid_epoch() {
        let mut rng = chain_rng(1, 0);
        let mut a = Cursor::new(10);
        let _ = a.next(3, &mut rng);
        let mut rng_b = rng.clone();
        let mut b: Cursor = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        for _ in 0..7 {
            assert_eq!(
                a.next(3, &mut rng).map(|s| s.to_vec()),
                b.next(3, &mut rng_b).map(|s| s.to_vec())
            );
        }
        assert!(a.next(10, &mut rng).is_none());
    }

    #[test]
    fn fingerprint_sees_one_bit() {
        let x = [1.0, 2.0];
        let y = [1.0, f64::from_bits(2.0f64.to_bits() + 1)];
        assert_ne!(fingerprint(&[&x]), fingerprint(&[&y]));
        assert_ne!(fingerprint(&[&x, &[]]), fingerprint(&[&[], &x]));
    }
}
