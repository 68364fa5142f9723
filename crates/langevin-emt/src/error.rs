//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong in `langevin-emt`.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum EmtError {
    /// The GGUF model file does not exist (`looked`: every place looked, see
    /// [`crate::locate`]).
    #[error("model file not found; looked in: {looked}; {hint}", hint = crate::locate::FETCH_HINT)]
    ModelNotFound { path: PathBuf, looked: String },
    /// Reading a file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The GGUF file is not a llama model we can run, or misses metadata.
    #[error("unsupported or invalid GGUF model: {0}")]
    InvalidModel(String),
    /// The tokenizer metadata is malformed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A configuration value is out of range.
    #[error("invalid config `{field}`: {reason}")]
    InvalidConfig { field: &'static str, reason: String },
    /// Shapes that must agree do not.
    #[error("dimension mismatch: expected {expected}, got {got}")]
    DimensionMismatch { expected: String, got: String },
    /// An input that must not be empty is.
    #[error("empty input: {0}")]
    EmptyInput(&'static str),
    /// The sequence does not fit in the model's position table.
    #[error("context too long: {len} positions, the model supports {max}")]
    ContextTooLong { len: usize, max: usize },
    /// A token id outside the vocabulary.
    #[error("token id {id} out of range (vocabulary size {vocab})")]
    TokenOutOfRange { id: u32, vocab: usize },
    /// A memory-bank file is not one this program can read: not a safetensors file,
    /// truncated, corrupt (a checksum differs), another format or version, or its
    /// contents disagree with each other.
    #[error("memory bank {path}: {reason}")]
    BankFormat { path: PathBuf, reason: String },
    /// A memory-bank file was made with another model (other dimensions or weights).
    #[error("memory bank {path} was made with another model: {reason}")]
    BankModelMismatch { path: PathBuf, reason: String },
    /// An error from candle.
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Shorthand result type.
pub type Result<T> = std::result::Result<T, EmtError>;
