//! The memory bank: per layer, each document token's key (before RoPE) and value.
//!
//! Construction follows the reference implementation's `generate_cache`: the plain model
//! runs over windows `[b, min(b + max_len, n))` for `b = 0, stride, 2·stride, ...`; from each
//! window only the tokens not covered by the previous window are kept (so each token is
//! stored once, computed with up to `max_len - stride` tokens of left context); the loop
//! stops at the window that reaches the end. Special-token ids are then dropped.
//! `max_len` is capped at the model's position table (and `stride` at `max_len`).

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::attention::unit_norm;
use crate::config::LlamaConfig;
use crate::error::{EmtError, Result};
use crate::model::Llama;
use crate::tokenizer::Tokenizer;

/// How to build a memory bank.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryOptions {
    /// Window length (reference: 3072).
    pub max_len: usize,
    /// Window stride (reference: 512).
    pub stride: usize,
    /// Drop special-token ids from the bank (reference: true).
    pub drop_special: bool,
    /// Ablation: rotate memory keys by their document positions (RoPE), instead of
    /// leaving them unrotated. The method does not do this; it is here to measure why.
    pub rotate_keys: bool,
}

impl Default for MemoryOptions {
    fn default() -> Self {
        Self {
            max_len: 3072,
            stride: 512,
            drop_special: true,
            rotate_keys: false,
        }
    }
}

/// Cached key/value memories of a document.
///
/// [`MemoryBank::save`] writes one to a safetensors file and [`MemoryBank::load`] reads
/// it back for the same model (see [`crate::bank_io`]).
#[derive(Debug, Clone)]
pub struct MemoryBank {
    /// Per layer: keys, unit-norm keys, values, each `[H_kv, M, d]`.
    pub(crate) layers: Vec<(Tensor, Tensor, Tensor)>,
    pub(crate) n_kv_heads: usize,
    pub(crate) head_dim: usize,
    pub(crate) token_ids: Vec<u32>,
    pub(crate) positions: Vec<usize>,
    pub(crate) spans: Vec<(usize, usize)>,
    pub(crate) text: String,
    /// How the bank was built (`None` for [`MemoryBank::from_tensors`]).
    pub(crate) options: Option<MemoryOptions>,
}

impl MemoryBank {
    /// Build from token ids with the plain model. `special` ids are dropped when
    /// `opts.drop_special`.
    pub fn build(
        model: &Llama,
        ids: &[u32],
        special: &[u32],
        opts: &MemoryOptions,
    ) -> Result<Self> {
        Self::build_with_progress(model, ids, special, opts, |_, _| {})
    }

    /// Number of model windows [`MemoryBank::build`] runs over `n_tokens` tokens
    /// (each of at most `max_len` tokens, capped at the model's position table): the
    /// unit of [`MemoryBank::build_with_progress`]'s progress.
    pub fn window_count(n_tokens: usize, max_position: usize, opts: &MemoryOptions) -> usize {
        let max_len = opts.max_len.min(max_position).max(1);
        let stride = opts.stride.min(max_len).max(1);
        if n_tokens <= max_len {
            usize::from(n_tokens > 0)
        } else {
            // Windows start at 0, stride, ...; the last is the first that reaches the end.
            (n_tokens - max_len).div_ceil(stride) + 1
        }
    }

    /// [`MemoryBank::build`], calling `progress(done, total)` after each model window
    /// (`total` = [`MemoryBank::window_count`]); a long document takes minutes on a CPU.
    pub fn build_with_progress(
        model: &Llama,
        ids: &[u32],
        special: &[u32],
        opts: &MemoryOptions,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Self> {
        let cfg = model.config();
        if opts.max_len == 0 || opts.stride == 0 || opts.stride > opts.max_len {
            return Err(EmtError::InvalidConfig {
                field: "stride",
                reason: format!(
                    "need 0 < stride <= max_len (stride {}, max_len {})",
                    opts.stride, opts.max_len
                ),
            });
        }
        // Windows never exceed the model's position table.
        let max_len = opts.max_len.min(cfg.max_position);
        let stride = opts.stride.min(max_len);
        if ids.is_empty() {
            return Err(EmtError::EmptyInput("memory document"));
        }
        let n = ids.len();
        let windows = Self::window_count(n, cfg.max_position, opts);
        let mut done = 0;
        let mut per_layer: Vec<(Vec<Tensor>, Vec<Tensor>)> =
            vec![(Vec::new(), Vec::new()); cfg.n_layers];
        let mut prev_end = 0;
        let mut b = 0;
        while b < n {
            let end = (b + max_len).min(n);
            let trg = end - prev_end;
            let win = end - b;
            // Copies of the kept positions: a narrowed view would keep each window's
            // whole key/value buffers alive until the end (6x the bank at stride 512).
            for (l, (k, v)) in model.keys_values(&ids[b..end])?.into_iter().enumerate() {
                per_layer[l]
                    .0
                    .push(k.narrow(1, win - trg, trg)?.force_contiguous()?);
                per_layer[l]
                    .1
                    .push(v.narrow(1, win - trg, trg)?.force_contiguous()?);
            }
            prev_end = end;
            done += 1;
            progress(done, windows);
            if end == n {
                break;
            }
            b += stride;
        }
        let keep: Vec<usize> = (0..n)
            .filter(|&i| !(opts.drop_special && special.contains(&ids[i])))
            .collect();
        let keep_t = Tensor::new(
            keep.iter().map(|&i| i as u32).collect::<Vec<_>>(),
            model.device(),
        )?;
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for (ks, vs) in per_layer {
            let k = Tensor::cat(&ks, 1)?.index_select(&keep_t, 1)?;
            let v = Tensor::cat(&vs, 1)?.index_select(&keep_t, 1)?;
            let u = unit_norm(&k)?;
            layers.push((k, u, v.contiguous()?));
        }
        let bank = Self {
            layers,
            n_kv_heads: cfg.n_kv_heads,
            head_dim: cfg.head_dim(),
            token_ids: keep.iter().map(|&i| ids[i]).collect(),
            positions: keep,
            spans: Vec::new(),
            text: String::new(),
            options: Some(opts.clone()),
        };
        if opts.rotate_keys {
            bank.with_rotated_keys(model)
        } else {
            Ok(bank)
        }
    }

    /// The ablation of [`MemoryOptions::rotate_keys`]: a copy of this bank whose keys are
    /// rotated (RoPE) by their document positions.
    pub fn with_rotated_keys(&self, model: &Llama) -> Result<Self> {
        self.check_compatible(model.config())?;
        let mut out = self.clone();
        if let Some(o) = out.options.as_mut() {
            o.rotate_keys = true;
        }
        if self.is_empty() {
            return Ok(out);
        }
        let positions: Vec<u32> = self.positions.iter().map(|&p| p as u32).collect();
        for (k, u, _) in out.layers.iter_mut() {
            *k = model.rope_at(k, &positions)?;
            *u = unit_norm(k)?;
        }
        Ok(out)
    }

    /// Tokenize `text` and build its memory bank, keeping each memory's text span for
    /// citations.
    pub fn from_text(
        model: &Llama,
        tok: &Tokenizer,
        text: &str,
        opts: &MemoryOptions,
    ) -> Result<Self> {
        Self::from_text_with_progress(model, tok, text, opts, |_, _| {})
    }

    /// [`MemoryBank::from_text`] with `progress(done, total)` over model windows, as
    /// [`MemoryBank::build_with_progress`].
    pub fn from_text_with_progress(
        model: &Llama,
        tok: &Tokenizer,
        text: &str,
        opts: &MemoryOptions,
        progress: impl FnMut(usize, usize),
    ) -> Result<Self> {
        let enc = tok.encode_with_offsets(text)?;
        if enc.is_empty() {
            return Err(EmtError::EmptyInput("memory document"));
        }
        let ids: Vec<u32> = enc.iter().map(|e| e.0).collect();
        let mut bank = Self::build_with_progress(model, &ids, tok.special_ids(), opts, progress)?;
        bank.spans = bank.positions.iter().map(|&p| enc[p].1).collect();
        bank.text = text.to_string();
        Ok(bank)
    }

    /// Build from explicit per-layer keys and values `[H_kv, M, d]` (keys as they will be
    /// compared with rotated queries). Positions are `0..M`.
    pub fn from_tensors(
        keys: Vec<Tensor>,
        values: Vec<Tensor>,
        token_ids: Vec<u32>,
    ) -> Result<Self> {
        if keys.is_empty() || keys.len() != values.len() {
            return Err(EmtError::DimensionMismatch {
                expected: "one key and one value tensor per layer".into(),
                got: format!("{} keys, {} values", keys.len(), values.len()),
            });
        }
        let (h_kv, m, d) = keys[0].dims3()?;
        if token_ids.len() != m {
            return Err(EmtError::DimensionMismatch {
                expected: format!("{m} token ids"),
                got: format!("{}", token_ids.len()),
            });
        }
        let mut layers = Vec::with_capacity(keys.len());
        for (k, v) in keys.into_iter().zip(values) {
            if k.dims3()? != (h_kv, m, d) || v.dims3()? != (h_kv, m, d) {
                return Err(EmtError::DimensionMismatch {
                    expected: format!("[{h_kv}, {m}, {d}]"),
                    got: format!("{:?} / {:?}", k.dims(), v.dims()),
                });
            }
            let u = unit_norm(&k)?;
            layers.push((k.contiguous()?, u, v.contiguous()?));
        }
        Ok(Self {
            layers,
            n_kv_heads: h_kv,
            head_dim: d,
            token_ids,
            positions: (0..m).collect(),
            spans: Vec::new(),
            text: String::new(),
            options: None,
        })
    }

    /// Number of memories (tokens kept).
    pub fn len(&self) -> usize {
        self.token_ids.len()
    }

    /// Whether the bank holds no memory.
    pub fn is_empty(&self) -> bool {
        self.token_ids.is_empty()
    }

    /// Token id of each memory.
    pub fn token_ids(&self) -> &[u32] {
        &self.token_ids
    }

    /// Document position of each memory.
    pub fn positions(&self) -> &[usize] {
        &self.positions
    }

    /// The document text (empty when built from ids).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Byte span of memory `j` in [`MemoryBank::text`], when built from text.
    pub fn span(&self, j: usize) -> Option<(usize, usize)> {
        self.spans.get(j).copied()
    }

    /// The options the bank was built with (`None` when made by
    /// [`MemoryBank::from_tensors`]).
    pub fn options(&self) -> Option<&MemoryOptions> {
        self.options.as_ref()
    }

    /// Number of layers.
    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }

    /// Key/value heads per layer.
    pub fn n_kv_heads(&self) -> usize {
        self.n_kv_heads
    }

    /// Dimension of each key and value.
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// Layer `l`'s keys, unit keys and values.
    pub fn layer(&self, l: usize) -> Result<(&Tensor, &Tensor, &Tensor)> {
        let (k, u, v) = self
            .layers
            .get(l)
            .ok_or_else(|| EmtError::DimensionMismatch {
                expected: format!("layer < {}", self.layers.len()),
                got: format!("{l}"),
            })?;
        Ok((k, u, v))
    }

    pub(crate) fn check_compatible(&self, cfg: &LlamaConfig) -> Result<()> {
        if self.layers.len() != cfg.n_layers
            || self.n_kv_heads != cfg.n_kv_heads
            || self.head_dim != cfg.head_dim()
        {
            return Err(EmtError::DimensionMismatch {
                expected: format!(
                    "memories for {} layers x {} kv heads x dim {}",
                    cfg.n_layers,
                    cfg.n_kv_heads,
                    cfg.head_dim()
                ),
                got: format!(
                    "{} layers x {} kv heads x dim {}",
                    self.layers.len(),
                    self.n_kv_heads,
                    self.head_dim
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention::tests::max_diff;

    #[test]
    fn progress_counts_every_window_and_matches_window_count() {
        let cfg = LlamaConfig::tiny();
        let m = Llama::random(&cfg, 5).unwrap();
        for (n, max_len, stride) in [
            (37, 16, 4),
            (16, 16, 4),
            (5, 16, 4),
            (40, 16, 16),
            (17, 16, 5),
        ] {
            let ids: Vec<u32> = (0..n).map(|i| (i * 7 + 3) % 64).collect();
            let opts = MemoryOptions {
                max_len,
                stride,
                ..Default::default()
            };
            let mut calls = Vec::new();
            let plain = MemoryBank::build(&m, &ids, &[], &opts).unwrap();
            let bank =
                MemoryBank::build_with_progress(&m, &ids, &[], &opts, |d, t| calls.push((d, t)))
                    .unwrap();
            let total = MemoryBank::window_count(n as usize, cfg.max_position, &opts);
            let expect: Vec<(usize, usize)> = (1..=total).map(|d| (d, total)).collect();
            assert_eq!(calls, expect, "n {n}, max_len {max_len}, stride {stride}");
            assert_eq!(bank.len(), plain.len());
        }
    }

    #[test]
    fn each_token_is_stored_once_with_its_window_context() {
        let cfg = LlamaConfig::tiny();
        let m = Llama::random(&cfg, 5).unwrap();
        let ids: Vec<u32> = (0..37).map(|i| (i * 7 + 3) % 64).collect();
        let opts = MemoryOptions {
            max_len: 16,
            stride: 4,
            ..Default::default()
        };
        let bank = MemoryBank::build(&m, &ids, &[], &opts).unwrap();
        assert_eq!(bank.len(), ids.len());
        assert_eq!(bank.positions(), (0..37).collect::<Vec<_>>().as_slice());
        assert_eq!(bank.token_ids(), ids.as_slice());
        // Windows: [0,16) keeps 0..16; [4,20) keeps 16..20; [8,24) keeps 20..24; ...
        let (k, _, v) = bank.layer(1).unwrap();
        assert_eq!(k.dims3().unwrap(), (cfg.n_kv_heads, 37, cfg.head_dim()));
        let first = m.keys_values(&ids[..16]).unwrap();
        assert!(max_diff(&k.narrow(1, 0, 16).unwrap(), &first[1].0) < 1e-6);
        let win = m.keys_values(&ids[4..20]).unwrap();
        assert!(
            max_diff(
                &k.narrow(1, 16, 4).unwrap(),
                &win[1].0.narrow(1, 12, 4).unwrap()
            ) < 1e-6
        );
        assert!(
            max_diff(
                &v.narrow(1, 16, 4).unwrap(),
                &win[1].1.narrow(1, 12, 4).unwrap()
            ) < 1e-6
        );
        // ... [20, 36) keeps 32..36 and [24, 37) reaches the end, keeping 36..37.
        let last = m.keys_values(&ids[24..37]).unwrap();
        assert!(
            max_diff(
                &k.narrow(1, 36, 1).unwrap(),
                &last[1].0.narrow(1, 12, 1).unwrap()
            ) < 1e-6
        );
    }

    #[test]
    fn special_tokens_are_dropped_and_keys_optionally_rotated() {
        let cfg = LlamaConfig::tiny();
        let m = Llama::random(&cfg, 6).unwrap();
        let ids: Vec<u32> = vec![0, 5, 6, 0, 7];
        let bank = MemoryBank::build(&m, &ids, &[0], &MemoryOptions::default()).unwrap();
        assert_eq!(bank.token_ids(), &[5, 6, 7]);
        assert_eq!(bank.positions(), &[1, 2, 4]);
        let rot = MemoryBank::build(
            &m,
            &ids,
            &[0],
            &MemoryOptions {
                rotate_keys: true,
                ..Default::default()
            },
        )
        .unwrap();
        let (k, _, _) = bank.layer(0).unwrap();
        let (kr, _, _) = rot.layer(0).unwrap();
        let want = m.rope_at(k, &[1, 2, 4]).unwrap();
        assert!(max_diff(kr, &want) < 1e-6);
        assert!(max_diff(kr, k) > 1e-3);
    }

    #[test]
    fn bad_options_are_errors() {
        let m = Llama::random(&LlamaConfig::tiny(), 6).unwrap();
        let bad = MemoryOptions {
            stride: 0,
            ..Default::default()
        };
        assert!(MemoryBank::build(&m, &[1, 2], &[], &bad).is_err());
        assert!(MemoryBank::build(&m, &[], &[], &MemoryOptions::default()).is_err());
    }
}
