//! How many CPU threads the decoder uses.
//!
//! The quantized matrix-vector kernels split rows over rayon's global pool and candle's
//! matrix products read `RAYON_NUM_THREADS`; [`set_threads`] sets both, once, before the
//! first model call.

use crate::error::{EmtError, Result};

/// Use `n` threads (n ≥ 1) for every later model call in this process. Call it before
/// loading the model; a second call with another count is an error (rayon's global
/// pool can be built once).
pub fn set_threads(n: usize) -> Result<()> {
    if n == 0 {
        return Err(EmtError::InvalidConfig {
            field: "threads",
            reason: "must be at least 1".into(),
        });
    }
    // Called before any model thread exists (the CLI calls it first thing).
    std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    match rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
    {
        Ok(()) => Ok(()),
        Err(_) if rayon::current_num_threads() == n => Ok(()),
        Err(e) => Err(EmtError::InvalidConfig {
            field: "threads",
            reason: format!(
                "cannot use {n}: the thread pool already has {} ({e})",
                rayon::current_num_threads()
            ),
        }),
    }
}

/// The number of threads model calls use.
pub fn threads() -> usize {
    rayon::current_num_threads()
}

#[cfg(test)]
mod tests {
    #[test]
    fn zero_threads_is_refused() {
        assert!(super::set_threads(0).is_err());
    }
}
