//! `fit --data-parallel`: the rows of the data split over the ranks of
//! `mpirun`, every rank running every chain (see [`langevin::shard`]).
//!
//! Each rank reads only its shard of the CSV file ([`read_csv_shard`]; a
//! bundled set is small and is loaded whole, then cut), and the ranks agree
//! on what needs every row: the line numbers in messages, the number of rows
//! and the split, the model's choice and the class labels (from the distinct
//! target values), the standardisation (sums over the ranks), and the
//! held-out rows (gathered to rank 0, which alone evaluates and writes).
//! A failure of any rank while loading is reported by rank 0 with that
//! rank's message (the file and the line) and every rank exits with code 2.

use anyhow::Result;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use langevin::run::Team;
use langevin::shard::{rows_of, Allreduce};
use langevin_models::data::{Columns, Dataset};
use langevin_models::{bundled, read_csv_shard};

use super::args::DataArgs;
use super::data::{build, load_data, Prepared, ShardView};
use crate::exit::bad_input;

/// Every rank's `value`, in rank order, on every rank.
fn exchange<T: Serialize + DeserializeOwned>(team: &dyn Team, value: &T) -> Result<Vec<T>> {
    let bytes = serde_json::to_vec(value)?;
    let all = match team.gather(&bytes)? {
        Some(parts) => {
            let parts: Vec<serde_json::Value> = parts
                .iter()
                .map(|p| serde_json::from_slice(p))
                .collect::<std::result::Result<_, _>>()?;
            serde_json::to_vec(&parts)?
        }
        None => Vec::new(),
    };
    Ok(serde_json::from_slice(&team.broadcast(all)?)?)
}

/// A step every rank takes: its outcome, or the first failure in rank
/// order on every rank (as bad input, with the failing rank's message).
fn agree<T>(team: &dyn Team, r: Result<T>) -> Result<T> {
    let mine: Option<String> = r.as_ref().err().map(|e| format!("{e:#}"));
    let all = exchange(team, &mine)?;
    if let Some((rank, msg)) = all
        .iter()
        .enumerate()
        .find_map(|(k, m)| m.as_ref().map(|m| (k, m)))
    {
        super::ranks::team_done();
        return Err(match r {
            Err(e) if rank == team.rank() => e,
            _ => bad_input(format!("{msg} (on rank {rank})")),
        });
    }
    r
}

/// What each rank tells the others after parsing its shard.
#[derive(Serialize, Deserialize)]
struct Parsed {
    rows: usize,
    /// First occurrence of each distinct target value: (value, line).
    targets: Vec<(f64, usize)>,
}

/// The first occurrence of each distinct target value (at most 1001, which
/// is enough for [`Dataset::class_labels`] to decide), in row order.
fn distinct_targets(ds: &Dataset) -> Vec<(f64, usize)> {
    let mut out: Vec<(f64, usize)> = Vec::new();
    for (&v, &line) in ds.y.iter().zip(&ds.lines) {
        if out.len() > 1000 {
            break;
        }
        if !out.iter().any(|(u, _)| *u == v) {
            out.push((v, line));
        }
    }
    out
}

/// This rank's shard of `--data` (with the line of its first row known).
fn load_shard(a: &DataArgs, team: &dyn Team) -> Result<(Dataset, String)> {
    let (rank, k) = (team.rank(), team.size());
    let data = a.data.as_deref().unwrap_or(super::DEFAULT_DATA);
    let path = std::path::Path::new(data);
    if !path.is_file() && bundled::find(data).is_some() {
        // A bundled set is a few hundred rows: load it whole and cut.
        let (ds, name) = agree(team, load_data(Some(data), a.target.as_deref()))?;
        let keep: Vec<usize> = rows_of(rank, k, ds.n()).collect();
        return Ok((ds.subset(&keep), name));
    }
    let read = (|| {
        if !path.is_file() {
            // The same message as one process gives.
            load_data(Some(data), a.target.as_deref())?;
        }
        let Some(target) = a.target.as_deref() else {
            crate::bail_input!(
                "--target is required with a data file (the name of the target column of {data})"
            );
        };
        Ok((read_csv_shard(path, rank, k).map_err(bad_input)?, target))
    })();
    let (shard, target) = agree(team, read)?;
    let ends = exchange(team, &shard.line_ends())?;
    let first_line = 2 + ends[..rank].iter().sum::<usize>();
    let cols = Columns {
        features: None,
        target: Some(target),
        require_target: true,
    };
    let ds = agree(team, shard.parse(cols, first_line).map_err(bad_input))?;
    Ok((ds, data.to_string()))
}

/// The fingerprint of every rank's rows (`own` is this rank's
/// [`Prepared::fingerprint`]), the same on every rank.
pub fn fingerprint(team: &dyn Team, own: u64) -> Result<u64> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for fp in exchange(team, &own)? {
        for b in fp.to_le_bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    Ok(h)
}

/// Load and prepare this rank's shard of `a`'s data.
pub fn prepare(a: &DataArgs, team: &dyn Team, reduce: &dyn Allreduce) -> Result<Prepared> {
    let (ds, data_name) = load_shard(a, team)?;
    let parsed = exchange(
        team,
        &Parsed {
            rows: ds.n(),
            targets: distinct_targets(&ds),
        },
    )?;
    let n_rows: usize = parsed.iter().map(|p| p.rows).sum();
    if n_rows == 0 {
        super::ranks::team_done();
        crate::bail_input!("{data_name}: no data rows after the header");
    }
    let first_row: usize = parsed[..team.rank()].iter().map(|p| p.rows).sum();
    let mut seen: Vec<(f64, usize)> = Vec::new();
    for (v, line) in parsed.into_iter().flat_map(|p| p.targets) {
        if !seen.iter().any(|(u, _)| *u == v) {
            seen.push((v, line));
        }
    }
    let targets = Dataset {
        source: ds.source.clone(),
        feature_names: ds.feature_names.clone(),
        target_name: ds.target_name.clone(),
        x: vec![0.0; seen.len() * ds.d()],
        y: seen.iter().map(|s| s.0).collect(),
        lines: seen.iter().map(|s| s.1).collect(),
    };
    let gather_eval = |eval: &Dataset| -> Result<Dataset> {
        let mut bytes = Vec::with_capacity(8 * (eval.x.len() + eval.y.len()));
        for v in eval.x.iter().chain(&eval.y) {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        let mut all = eval.clone();
        all.x.clear();
        all.y.clear();
        all.lines.clear();
        let Some(parts) = team.gather(&bytes)? else {
            return Ok(all);
        };
        let d = eval.d();
        for p in parts {
            let vals: Vec<f64> = p
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or_default()))
                .collect();
            let rows = vals.len() / (d + 1);
            all.x.extend_from_slice(&vals[..rows * d]);
            all.y.extend_from_slice(&vals[rows * d..]);
            all.lines.extend(std::iter::repeat_n(0, rows));
        }
        Ok(all)
    };
    let view = ShardView {
        reduce,
        n_rows,
        first_row,
        targets,
        gather_eval: &gather_eval,
    };
    // Every rank reaches the same verdict from here on (the same options
    // and the same global facts): an error is everyone's.
    let r = build(a, ds, data_name, Some(&view));
    if r.is_err() {
        super::ranks::team_done();
    }
    r
}
