//! Extended Mind attention (Klett & Ahle, 2024) on a llama-architecture decoder in candle.
//!
//! A pre-trained decoder reads a bank of pre-computed key/value memories of a document:
//! in every (chosen) layer, each query retrieves its own top-k memories by cosine
//! similarity between its rotated query and the unrotated memory keys, and attends to
//! them jointly with its causal local context. No fine-tuning.
//!
//! * [`Llama`]: the decoder (GGUF loading, KV cache, memories), checked against
//!   candle's `quantized_llama`;
//! * [`Tokenizer`]: GPT-2 byte-level BPE from GGUF metadata (Hugging Face `tokenizers`);
//! * [`MemoryBank`]: memories built by striding the plain model over a document, saved
//!   to and loaded from safetensors files ([`bank_io`]);
//! * [`attention::emt_attention`]: the kernel;
//! * [`generate()`]: greedy / temperature sampling with citations and optional
//!   uncertainty-triggered extra retrieval;
//! * [`needle`]: the behavioural benchmark (a fact hidden in filler text);
//! * [`counterfactual`]: the long-document benchmark (facts the model knows, changed in
//!   a document), with the retrieval-augmented baseline in [`rag`].

pub mod attention;
pub mod bank_io;
pub mod config;
pub mod counterfactual;
pub mod error;
pub mod generate;
pub mod locate;
pub mod memory;
pub mod model;
pub mod needle;
pub mod quant;
pub mod rag;
pub mod threads;
pub mod tokenizer;

pub use bank_io::{BankDType, SaveOptions};
pub use config::{EmtConfig, LlamaConfig};
pub use error::{EmtError, Result};
pub use generate::{
    citations, generate, repetition, Citation, GenerateConfig, Generation, StopReason, Uncertainty,
};
pub use locate::{find_model, MODEL_ENV, MODEL_FILE};
pub use memory::{MemoryBank, MemoryOptions};
pub use model::{KvCache, Llama, Memory, RetrievalCounts, WeightFormat};
pub use threads::{set_threads, threads};
pub use tokenizer::Tokenizer;

/// The SmolLM2-135M-Instruct GGUF relative to the repository root (one of the places
/// [`find_model`] looks; `scripts/fetch-smollm2.sh` now fetches into the user cache folder).
pub const DEFAULT_MODEL_PATH: &str = ".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf";
