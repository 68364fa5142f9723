//! Minibatches of a model's data as a run's [`BatchSource`].

use candle_core::Tensor;
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
