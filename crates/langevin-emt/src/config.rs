//! Model dimensions and Extended Mind settings.

use serde::{Deserialize, Serialize};

use crate::error::{EmtError, Result};

/// Dimensions of a llama-architecture decoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    /// RoPE base θ.
    pub rope_theta: f32,
    pub rms_norm_eps: f64,
    /// Size of the RoPE table: the longest sequence the model can run.
    pub max_position: usize,
}

impl LlamaConfig {
    /// SmolLM2-135M's dimensions.
    pub fn smollm2_135m() -> Self {
        Self {
            vocab_size: 49152,
            hidden_size: 576,
            intermediate_size: 1536,
            n_layers: 30,
            n_heads: 9,
            n_kv_heads: 3,
            rope_theta: 100_000.0,
            rms_norm_eps: 1e-5,
            max_position: 8192,
        }
    }

    /// A tiny configuration for tests.
    pub fn tiny() -> Self {
        Self {
            vocab_size: 64,
            hidden_size: 32,
            intermediate_size: 48,
            n_layers: 2,
            n_heads: 4,
            n_kv_heads: 2,
            rope_theta: 10_000.0,
            rms_norm_eps: 1e-5,
            max_position: 256,
        }
    }

    /// Per-head dimension.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.n_heads
    }

    /// Check the dimensions fit together.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, reason: &str| {
            Err(EmtError::InvalidConfig {
                field,
                reason: reason.to_string(),
            })
        };
        if self.vocab_size == 0 || self.hidden_size == 0 || self.n_layers == 0 {
            return bad("hidden_size", "sizes must be positive");
        }
        if self.n_heads == 0 || !self.hidden_size.is_multiple_of(self.n_heads) {
            return bad("n_heads", "must divide hidden_size");
        }
        if !self.head_dim().is_multiple_of(2) {
            return bad("n_heads", "head dimension must be even for RoPE");
        }
        if self.n_kv_heads == 0 || !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad("n_kv_heads", "must divide n_heads");
        }
        if !self.rope_theta.is_finite() || self.rope_theta <= 0.0 || self.max_position == 0 {
            return bad("rope_theta", "must be positive");
        }
        Ok(())
    }
}

/// Extended Mind attention settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmtConfig {
    /// Memories retrieved per query and head (exact top-k by cosine similarity).
    pub top_k: usize,
    /// Layers that read memories; `None` means every layer.
    pub layers: Option<Vec<usize>>,
    /// If set, a retrieved memory whose cosine similarity is not above this is masked out.
    pub sim_threshold: Option<f32>,
}

impl Default for EmtConfig {
    fn default() -> Self {
        Self {
            top_k: 10,
            layers: None,
            sim_threshold: None,
        }
    }
}

impl EmtConfig {
    /// Config with the given `top_k`, all layers, no threshold.
    pub fn with_top_k(top_k: usize) -> Self {
        Self {
            top_k,
            ..Self::default()
        }
    }

    /// Validate against a model with `n_layers` layers.
    pub fn validate(&self, n_layers: usize) -> Result<()> {
        if self.top_k == 0 {
            return Err(EmtError::InvalidConfig {
                field: "top_k",
                reason: "must be at least 1".into(),
            });
        }
        if let Some(ls) = &self.layers {
            if let Some(&l) = ls.iter().find(|&&l| l >= n_layers) {
                return Err(EmtError::InvalidConfig {
                    field: "layers",
                    reason: format!("layer {l} does not exist (model has {n_layers})"),
                });
            }
        }
        if let Some(t) = self.sim_threshold {
            if !t.is_finite() {
                return Err(EmtError::InvalidConfig {
                    field: "sim_threshold",
                    reason: "must be finite".into(),
                });
            }
        }
        Ok(())
    }

    /// Whether layer `l` reads memories.
    pub fn layer_enabled(&self, l: usize) -> bool {
        self.layers.as_ref().is_none_or(|ls| ls.contains(&l))
    }
}
