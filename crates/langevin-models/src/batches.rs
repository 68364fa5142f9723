//! Minibatches of a model's data as a run's [`BatchSource`].

use candle_core::Tensor;
use langevin::shard::Shard;
use langevin_core::{BatchRef, BatchSource, ChainRng, ShuffledIndices};

use crate::model::Batch;

/// Minibatches of `size` rows of `full`, reshuffled every epoch with the
/// chain's generator ([`ShuffledIndices`]); when `size` covers every row,
/// the full batch itself at every step (nothing is drawn).
#[derive(Debug, Clone)]
pub struct Minibatches {
    full: Batch,
    rows: usize,
    size: usize,
}

impl Minibatches {
    /// Minibatches of `size` rows of `full` (`size` is capped at the number of rows).
    pub fn new(full: Batch, size: usize) -> langevin_core::Result<Self> {
        let rows = full.x.dims().first().copied().unwrap_or(0);
        if size == 0 || rows == 0 {
            return Err(langevin_core::Error::config(
                "batch_size",
                format!("must be >= 1 with at least one row (batch size {size}, {rows} rows)"),
            ));
        }
        Ok(Self {
            full,
            rows,
            size: size.min(rows),
        })
    }

    /// Number of rows of the data.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Rows per minibatch.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The full batch.
    pub fn full(&self) -> &Batch {
        &self.full
    }
}

impl BatchSource for Minibatches {
    type Batch = Batch;
    type Cursor = ShuffledIndices;

    fn cursor(&self, _chain: usize) -> ShuffledIndices {
        ShuffledIndices::new(self.rows)
    }

    fn next<'a>(
        &'a self,
        _chain: usize,
        _step: u64,
        cursor: &mut ShuffledIndices,
        rng: &mut ChainRng,
    ) -> langevin_core::Result<BatchRef<'a, Batch>> {
        let Some(idx) = cursor.next(self.size, rng) else {
            return Ok(BatchRef::Borrowed(&self.full));
        };
        let it = Tensor::from_slice(idx, idx.len(), self.full.x.device())?;
        Ok(BatchRef::Owned(Batch {
            x: self.full.x.index_select(&it, 0)?,
            y: self.full.y.index_select(&it, 0)?,
        }))
    }
}

/// The minibatches of a data-parallel run ([`langevin_core`]'s batches
/// split over ranks, see `langevin::shard`): the same stream of row indices
/// over *all* `n` training rows as [`Minibatches`] draws in one process
/// (the chain's generator is the same on every rank), of which this rank
/// keeps the rows it holds, rows `lo..hi`.
#[derive(Debug, Clone)]
pub struct ShardMinibatches {
    /// This rank's rows as the full batch of the shard.
    full: Shard<Batch>,
    lo: usize,
    hi: usize,
    rows: usize,
    size: usize,
}

impl ShardMinibatches {
    /// Minibatches of `size` of the `rows` rows of a run, of which this rank
    /// holds `local`, the rows `lo..lo + local.rows`.
    pub fn new(local: Batch, lo: usize, rows: usize, size: usize) -> langevin_core::Result<Self> {
        let n_local = local.x.dims().first().copied().unwrap_or(0);
        if size == 0 || rows == 0 || lo + n_local > rows {
            return Err(langevin_core::Error::config(
                "batch_size",
                format!(
                    "must be >= 1 with at least one row, and the shard inside the rows \
                     (batch size {size}, {rows} rows, shard {lo}..{})",
                    lo + n_local
                ),
            ));
        }
        Ok(Self {
            full: Shard::new((n_local > 0).then_some(local), n_local, rows),
            lo,
            hi: lo + n_local,
            rows,
            size: size.min(rows),
        })
    }

    /// Rows of the run (over every rank).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Rows per minibatch (over every rank).
    pub fn size(&self) -> usize {
        self.size
    }

    /// This rank's rows as a batch of all the rows (for full-data gradients).
    pub fn full(&self) -> &Shard<Batch> {
        &self.full
    }
}

impl BatchSource for ShardMinibatches {
    type Batch = Shard<Batch>;
    type Cursor = ShuffledIndices;

    fn cursor(&self, _chain: usize) -> ShuffledIndices {
        ShuffledIndices::new(self.rows)
    }

    fn next<'a>(
        &'a self,
        _chain: usize,
        _step: u64,
        cursor: &mut ShuffledIndices,
        rng: &mut ChainRng,
    ) -> langevin_core::Result<BatchRef<'a, Shard<Batch>>> {
        let Some(idx) = cursor.next(self.size, rng) else {
            return Ok(BatchRef::Borrowed(&self.full));
        };
        let (lo, hi) = (self.lo as u32, self.hi as u32);
        let mine: Vec<u32> = idx
            .iter()
            .filter(|&&i| (lo..hi).contains(&i))
            .map(|&i| i - lo)
            .collect();
        let rows = match (&self.full.rows, mine.is_empty()) {
            (Some(full), false) => {
                let select = || -> candle_core::Result<Batch> {
                    let it = Tensor::from_slice(&mine, mine.len(), full.x.device())?;
                    Ok(Batch {
                        x: full.x.index_select(&it, 0)?,
                        y: full.y.index_select(&it, 0)?,
                    })
                };
                match select() {
                    Ok(b) => Some(b),
                    // Every rank must still take part in the evaluation.
                    Err(e) => return Ok(BatchRef::Owned(Shard::failed(idx.len(), e.to_string()))),
                }
            }
            _ => None,
        };
        Ok(BatchRef::Owned(Shard::new(rows, mine.len(), idx.len())))
    }
}
