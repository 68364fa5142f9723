//! A llama-architecture decoder (as in candle's quantized llama) whose attention can read
//! a [`MemoryBank`].
//!
//! Each block: `x += Wo · attn(rope_i(Wq·n(x)), rope_i(Wk·n(x)), Wv·n(x))`, then
//! `x += W2 · (silu(W1·n(x)) ⊙ W3·n(x))`, with `n` the RMS norm. RoPE is the interleaved
//! variant (pairs `2i, 2i+1`) that GGUF llama weights expect; the KV cache stores rotated
//! keys. With memories, the attention is [`emt_attention`].

use std::io::{Read, Seek};
use std::path::Path;

use candle_core::quantized::{gguf_file, GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::attention::{emt_attention, LayerMemory, Retrieved};
use crate::config::{EmtConfig, LlamaConfig};
use crate::error::{EmtError, Result};
use crate::memory::MemoryBank;
use crate::tokenizer::Tokenizer;

#[derive(Debug, Clone)]
struct Block {
    attn_norm: Tensor,
    wq: QMatMul,
    wk: QMatMul,
    wv: QMatMul,
    wo: QMatMul,
    ffn_norm: Tensor,
    w_gate: QMatMul,
    w_up: QMatMul,
    w_down: QMatMul,
}

/// How the linear-layer weights are held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum WeightFormat {
    /// As stored in the GGUF (e.g. Q4_1): activations are quantized to 8 bits per block
    /// in each matmul, exactly as candle's (and llama.cpp's) quantized llama.
    #[default]
    Quantized,
    /// Dequantized to f32 at load (same weights, f32 activations): about 4x the memory
    /// (~0.6 GB for SmolLM2-135M) but on x86 much faster, since candle 0.11 has no SIMD
    /// kernel for Q4_1 dot products.
    Dequantized,
}

/// The decoder.
#[derive(Debug, Clone)]
pub struct Llama {
    cfg: LlamaConfig,
    embed: Tensor,
    blocks: Vec<Block>,
    norm: Tensor,
    lm_head: QMatMul,
    cos: Tensor,
    sin: Tensor,
    device: Device,
}

/// Local key/value cache for generation: per layer rotated keys and values `[H_kv, S, d]`.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl KvCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Memories for a forward pass.
#[derive(Debug, Clone, Copy)]
pub struct Memory<'a> {
    pub bank: &'a MemoryBank,
    pub config: &'a EmtConfig,
}

/// How often each memory was retrieved, summed over layers and heads, for each query of a
/// forward pass: `counts[t * n_memories + j]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrievalCounts {
    pub n_queries: usize,
    pub n_memories: usize,
    pub counts: Vec<u32>,
}

impl RetrievalCounts {
    fn new(n_queries: usize, n_memories: usize) -> Self {
        Self {
            n_queries,
            n_memories,
            counts: vec![0; n_queries * n_memories],
        }
    }

    fn add(&mut self, r: &Retrieved) {
        for (i, (&j, &used)) in r.indices.iter().zip(&r.used).enumerate() {
            if used {
                let t = (i / r.k) % r.n_queries;
                self.counts[t * self.n_memories + j as usize] += 1;
            }
        }
    }

    /// The counts of query `t`.
    pub fn row(&self, t: usize) -> &[u32] {
        &self.counts[t * self.n_memories..(t + 1) * self.n_memories]
    }
}

/// RoPE tables `[max_position, d/2]`, computed as candle's quantized llama does.
fn rope_tables(
    head_dim: usize,
    theta: f32,
    max_pos: usize,
    dev: &Device,
) -> Result<(Tensor, Tensor)> {
    let inv: Vec<f32> = (0..head_dim)
        .step_by(2)
        .map(|i| 1f32 / theta.powf(i as f32 / head_dim as f32))
        .collect();
    let n = inv.len();
    let inv = Tensor::from_vec(inv, (1, n), dev)?;
    let pos = Tensor::arange(0, max_pos as u32, dev)?
        .to_dtype(DType::F32)?
        .reshape((max_pos, 1))?;
    let idx = pos.matmul(&inv)?;
    Ok((idx.cos()?, idx.sin()?))
}

fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    Ok(candle_nn::ops::rms_norm(x, w, eps as f32)?)
}

impl Llama {
    /// Load the decoder and its tokenizer from a GGUF file (llama architecture).
    pub fn load(path: impl AsRef<Path>) -> Result<(Self, Tokenizer)> {
        Self::load_with(path, WeightFormat::Quantized)
    }

    /// Load with a choice of weight format (see [`WeightFormat`]).
    pub fn load_with(path: impl AsRef<Path>, format: WeightFormat) -> Result<(Self, Tokenizer)> {
        let path = path.as_ref();
        if !path.is_file() {
            return Err(EmtError::ModelNotFound {
                path: path.to_path_buf(),
                looked: path.display().to_string(),
            });
        }
        let io = |source| EmtError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut f = std::io::BufReader::new(std::fs::File::open(path).map_err(io)?);
        let content = gguf_file::Content::read(&mut f)
            .map_err(|e| EmtError::InvalidModel(format!("{}: {e}", path.display())))?;
        let tok = Tokenizer::from_gguf(&content)?;
        let model = Self::from_gguf_with(&content, &mut f, &Device::Cpu, format)?;
        if tok.vocab_size() != model.cfg.vocab_size {
            return Err(EmtError::InvalidModel(format!(
                "tokenizer has {} tokens, embeddings {}",
                tok.vocab_size(),
                model.cfg.vocab_size
            )));
        }
        Ok((model, tok))
    }

    /// Read the model from GGUF content (tensor names as llama.cpp writes them).
    pub fn from_gguf<R: Read + Seek>(
        ct: &gguf_file::Content,
        r: &mut R,
        device: &Device,
    ) -> Result<Self> {
        Self::from_gguf_with(ct, r, device, WeightFormat::Quantized)
    }

    /// [`Llama::from_gguf`] with a choice of weight format.
    pub fn from_gguf_with<R: Read + Seek>(
        ct: &gguf_file::Content,
        r: &mut R,
        device: &Device,
        format: WeightFormat,
    ) -> Result<Self> {
        let mm = |q: QTensor| -> Result<QMatMul> {
            Ok(match format {
                WeightFormat::Quantized => QMatMul::from_qtensor(q)?,
                WeightFormat::Dequantized => QMatMul::Tensor(q.dequantize(device)?),
            })
        };
        let md = |k: &str| {
            ct.metadata
                .get(k)
                .ok_or_else(|| EmtError::InvalidModel(format!("missing metadata {k}")))
        };
        let arch = md("general.architecture")?.to_string()?.clone();
        if arch != "llama" {
            return Err(EmtError::InvalidModel(format!(
                "architecture {arch:?} is not llama"
            )));
        }
        let n_heads = md("llama.attention.head_count")?.to_u32()? as usize;
        let n_kv_heads = md("llama.attention.head_count_kv")?.to_u32()? as usize;
        let n_layers = md("llama.block_count")?.to_u32()? as usize;
        let hidden = md("llama.embedding_length")?.to_u32()? as usize;
        let eps = md("llama.attention.layer_norm_rms_epsilon")?.to_f32()? as f64;
        let theta = ct
            .metadata
            .get("llama.rope.freq_base")
            .and_then(|v| v.to_f32().ok())
            .unwrap_or(10_000.0);
        let max_position = ct
            .metadata
            .get("llama.context_length")
            .and_then(|v| v.to_u32().ok())
            .map_or(4096, |v| v as usize);
        if let Ok(rd) = md("llama.rope.dimension_count").and_then(|v| Ok(v.to_u32()?)) {
            if n_heads == 0 || rd as usize != hidden / n_heads {
                return Err(EmtError::InvalidModel(format!(
                    "partial RoPE (dimension {rd}) is not supported"
                )));
            }
        }
        let get = |r: &mut R, name: &str| -> Result<QTensor> {
            ct.tensor(r, name, device)
                .map_err(|e| EmtError::InvalidModel(format!("tensor {name}: {e}")))
        };
        let deq = |q: QTensor| -> Result<Tensor> { Ok(q.dequantize(device)?) };
        let embed_q = get(r, "token_embd.weight")?;
        let (vocab, emb_dim) = embed_q.shape().dims2()?;
        if emb_dim != hidden {
            return Err(EmtError::InvalidModel(format!(
                "embedding width {emb_dim} != {hidden}"
            )));
        }
        let embed = embed_q.dequantize(device)?;
        let lm_head = match ct.tensor_infos.contains_key("output.weight") {
            true => mm(get(r, "output.weight")?)?,
            false => mm(embed_q)?, // tied embeddings
        };
        let norm = deq(get(r, "output_norm.weight")?)?;
        let mut blocks = Vec::with_capacity(n_layers);
        let mut intermediate = 0;
        for l in 0..n_layers {
            let p = format!("blk.{l}");
            let qm =
                |r: &mut R, n: &str| -> Result<QMatMul> { mm(get(r, &format!("{p}.{n}.weight"))?) };
            let gate = get(r, &format!("{p}.ffn_gate.weight"))?;
            intermediate = gate.shape().dims2()?.0;
            blocks.push(Block {
                attn_norm: deq(get(r, &format!("{p}.attn_norm.weight"))?)?,
                wq: qm(r, "attn_q")?,
                wk: qm(r, "attn_k")?,
                wv: qm(r, "attn_v")?,
                wo: qm(r, "attn_output")?,
                ffn_norm: deq(get(r, &format!("{p}.ffn_norm.weight"))?)?,
                w_gate: mm(gate)?,
                w_up: qm(r, "ffn_up")?,
                w_down: qm(r, "ffn_down")?,
            });
        }
        let cfg = LlamaConfig {
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: intermediate,
            n_layers,
            n_heads,
            n_kv_heads,
            rope_theta: theta,
            rms_norm_eps: eps,
            max_position,
        };
        cfg.validate()?;
        let (cos, sin) = rope_tables(cfg.head_dim(), theta, max_position, device)?;
        Ok(Self {
            cfg,
            embed,
            blocks,
            norm,
            lm_head,
            cos,
            sin,
            device: device.clone(),
        })
    }

    /// Write a GGUF file (in memory, f32 tensors) with random weights for `cfg`:
    /// used by tests to check this model against candle's own quantized llama.
    pub fn random_gguf(cfg: &LlamaConfig, seed: u64) -> Result<Vec<u8>> {
        cfg.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let dev = Device::Cpu;
        let mut tensors: Vec<(String, QTensor)> = Vec::new();
        let mut add =
            |name: String, rows: usize, cols: usize, scale: f32, offset: f32| -> Result<()> {
                let v: Vec<f32> = (0..rows * cols)
                    .map(|_| offset + scale * rng.random_range(-1.0f32..1.0))
                    .collect();
                let t = if rows == 1 {
                    Tensor::from_vec(v, cols, &dev)?
                } else {
                    Tensor::from_vec(v, (rows, cols), &dev)?
                };
                tensors.push((name, QTensor::quantize(&t, GgmlDType::F32)?));
                Ok(())
            };
        let (h, i, kvd) = (
            cfg.hidden_size,
            cfg.intermediate_size,
            cfg.n_kv_heads * cfg.head_dim(),
        );
        let s_h = 1.0 / (h as f32).sqrt();
        let s_i = 1.0 / (i as f32).sqrt();
        add("token_embd.weight".into(), cfg.vocab_size, h, 1.0, 0.0)?;
        add("output_norm.weight".into(), 1, h, 0.1, 1.0)?;
        for l in 0..cfg.n_layers {
            let p = format!("blk.{l}");
            add(format!("{p}.attn_norm.weight"), 1, h, 0.1, 1.0)?;
            add(format!("{p}.attn_q.weight"), h, h, 2.0 * s_h, 0.0)?;
            add(format!("{p}.attn_k.weight"), kvd, h, 2.0 * s_h, 0.0)?;
            add(format!("{p}.attn_v.weight"), kvd, h, s_h, 0.0)?;
            add(format!("{p}.attn_output.weight"), h, h, s_h, 0.0)?;
            add(format!("{p}.ffn_norm.weight"), 1, h, 0.1, 1.0)?;
            add(format!("{p}.ffn_gate.weight"), i, h, s_h, 0.0)?;
            add(format!("{p}.ffn_up.weight"), i, h, s_h, 0.0)?;
            add(format!("{p}.ffn_down.weight"), h, i, s_i, 0.0)?;
        }
        use gguf_file::Value;
        let md: Vec<(&str, Value)> = vec![
            ("general.architecture", Value::String("llama".into())),
            ("llama.attention.head_count", Value::U32(cfg.n_heads as u32)),
            (
                "llama.attention.head_count_kv",
                Value::U32(cfg.n_kv_heads as u32),
            ),
            ("llama.block_count", Value::U32(cfg.n_layers as u32)),
            ("llama.embedding_length", Value::U32(h as u32)),
            (
                "llama.rope.dimension_count",
                Value::U32(cfg.head_dim() as u32),
            ),
            (
                "llama.attention.layer_norm_rms_epsilon",
                Value::F32(cfg.rms_norm_eps as f32),
            ),
            ("llama.rope.freq_base", Value::F32(cfg.rope_theta)),
            ("llama.context_length", Value::U32(cfg.max_position as u32)),
        ];
        let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (*k, v)).collect();
        let t_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let mut buf = std::io::Cursor::new(Vec::new());
        gguf_file::write(&mut buf, &md_refs, &t_refs)?;
        Ok(buf.into_inner())
    }

    /// Build a model with random weights (see [`Llama::random_gguf`]).
    pub fn random(cfg: &LlamaConfig, seed: u64) -> Result<Self> {
        let bytes = Self::random_gguf(cfg, seed)?;
        let mut r = std::io::Cursor::new(bytes);
        let ct = gguf_file::Content::read(&mut r)?;
        Self::from_gguf(&ct, &mut r, &Device::Cpu)
    }

    /// The model's dimensions.
    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Rotate `x` `[H, T, d]` by the given absolute positions.
    pub(crate) fn rope_at(&self, x: &Tensor, positions: &[u32]) -> Result<Tensor> {
        let (h, t, d) = x.dims3()?;
        if positions.len() != t {
            return Err(EmtError::DimensionMismatch {
                expected: format!("{t} positions"),
                got: format!("{}", positions.len()),
            });
        }
        if let Some(&p) = positions
            .iter()
            .find(|&&p| p as usize >= self.cfg.max_position)
        {
            return Err(EmtError::ContextTooLong {
                len: p as usize + 1,
                max: self.cfg.max_position,
            });
        }
        let idx = Tensor::new(positions, &self.device)?;
        let cos = self.cos.index_select(&idx, 0)?;
        let sin = self.sin.index_select(&idx, 0)?;
        let x = x.contiguous()?.reshape((1, h, t, d))?;
        Ok(candle_nn::rotary_emb::rope_i(&x, &cos, &sin)?.reshape((h, t, d))?)
    }

    fn check_ids(&self, ids: &[u32], start: usize) -> Result<()> {
        if ids.is_empty() {
            return Err(EmtError::EmptyInput("token ids"));
        }
        if let Some(&id) = ids.iter().find(|&&i| i as usize >= self.cfg.vocab_size) {
            return Err(EmtError::TokenOutOfRange {
                id,
                vocab: self.cfg.vocab_size,
            });
        }
        if start + ids.len() > self.cfg.max_position {
            return Err(EmtError::ContextTooLong {
                len: start + ids.len(),
                max: self.cfg.max_position,
            });
        }
        Ok(())
    }

    /// Run the blocks over `ids` appended to `cache`. Returns the final-normed hidden
    /// states `[T, hidden]`. `collect` receives each layer's unrotated keys and values
    /// `[H_kv, T, d]`; `counts` accumulates retrievals.
    fn run(
        &self,
        ids: &[u32],
        cache: &mut KvCache,
        memory: Option<Memory<'_>>,
        mut counts: Option<&mut RetrievalCounts>,
        mut collect: Option<&mut Vec<(Tensor, Tensor)>>,
    ) -> Result<Tensor> {
        let start = cache.len;
        self.check_ids(ids, start)?;
        if let Some(m) = memory {
            m.config.validate(self.cfg.n_layers)?;
            m.bank.check_compatible(&self.cfg)?;
        }
        // Work on a copy so that a failed pass leaves the cache untouched.
        let mut layers = if cache.layers.is_empty() && start == 0 {
            vec![None; self.cfg.n_layers]
        } else if cache.layers.len() == self.cfg.n_layers {
            cache.layers.clone()
        } else {
            return Err(EmtError::DimensionMismatch {
                expected: format!("cache for {} layers", self.cfg.n_layers),
                got: format!("{} layers", cache.layers.len()),
            });
        };
        let t = ids.len();
        let (nh, nkv, hd) = (self.cfg.n_heads, self.cfg.n_kv_heads, self.cfg.head_dim());
        let eps = self.cfg.rms_norm_eps;
        let cos = self.cos.narrow(0, start, t)?;
        let sin = self.sin.narrow(0, start, t)?;
        let ids_t = Tensor::new(ids, &self.device)?;
        let mut x = self.embed.index_select(&ids_t, 0)?.unsqueeze(0)?; // [1, T, hidden]
        for (l, b) in self.blocks.iter().enumerate() {
            let h = rms_norm(&x, &b.attn_norm, eps)?;
            let q =
                b.wq.forward(&h)?
                    .reshape((1, t, nh, hd))?
                    .transpose(1, 2)?
                    .contiguous()?;
            let k =
                b.wk.forward(&h)?
                    .reshape((1, t, nkv, hd))?
                    .transpose(1, 2)?
                    .contiguous()?;
            let v =
                b.wv.forward(&h)?
                    .reshape((1, t, nkv, hd))?
                    .transpose(1, 2)?
                    .contiguous()?;
            if let Some(c) = collect.as_deref_mut() {
                c.push((k.squeeze(0)?, v.squeeze(0)?));
            }
            let q = candle_nn::rotary_emb::rope_i(&q, &cos, &sin)?.squeeze(0)?;
            let k = candle_nn::rotary_emb::rope_i(&k, &cos, &sin)?.squeeze(0)?;
            let v = v.squeeze(0)?;
            let (k, v) = match &layers[l] {
                Some((ck, cv)) => (Tensor::cat(&[ck, &k], 1)?, Tensor::cat(&[cv, &v], 1)?),
                None => (k, v),
            };
            layers[l] = Some((k.clone(), v.clone()));
            let lm = match memory {
                Some(m) if m.config.layer_enabled(l) && !m.bank.is_empty() => {
                    let (keys, unit, values) = m.bank.layer(l)?;
                    Some(LayerMemory {
                        keys,
                        keys_unit: unit,
                        values,
                        top_k: m.config.top_k,
                        sim_threshold: m.config.sim_threshold,
                    })
                }
                _ => None,
            };
            let (att, ret) = emt_attention(&q, &k, &v, lm.as_ref())?;
            if let (Some(c), Some(r)) = (counts.as_deref_mut(), ret.as_ref()) {
                c.add(r);
            }
            let att = att.transpose(0, 1)?.reshape((1, t, nh * hd))?;
            x = (x + b.wo.forward(&att)?)?;
            let h = rms_norm(&x, &b.ffn_norm, eps)?;
            let mlp = b
                .w_down
                .forward(&(candle_nn::ops::silu(&b.w_gate.forward(&h)?)? * b.w_up.forward(&h)?)?)?;
            x = (x + mlp)?;
        }
        cache.layers = layers;
        cache.len = start + t;
        Ok(rms_norm(&x, &self.norm, eps)?.squeeze(0)?)
    }

    /// Feed `ids` after what `cache` holds; return the logits of the last position `[vocab]`.
    pub fn forward(
        &self,
        ids: &[u32],
        cache: &mut KvCache,
        memory: Option<Memory<'_>>,
    ) -> Result<Tensor> {
        let h = self.run(ids, cache, memory, None, None)?;
        let last = h.narrow(0, ids.len() - 1, 1)?;
        Ok(self.lm_head.forward(&last)?.squeeze(0)?)
    }

    /// Like [`Llama::forward`], also returning how often each memory was retrieved by each
    /// new position (summed over layers and heads).
    pub fn forward_traced(
        &self,
        ids: &[u32],
        cache: &mut KvCache,
        memory: Memory<'_>,
    ) -> Result<(Tensor, RetrievalCounts)> {
        let mut counts = RetrievalCounts::new(ids.len(), memory.bank.len());
        let h = self.run(ids, cache, Some(memory), Some(&mut counts), None)?;
        let last = h.narrow(0, ids.len() - 1, 1)?;
        Ok((self.lm_head.forward(&last)?.squeeze(0)?, counts))
    }

    /// Logits of every position `[T, vocab]` (no cache kept).
    pub fn forward_all(&self, ids: &[u32], memory: Option<Memory<'_>>) -> Result<Tensor> {
        let h = self.run(ids, &mut KvCache::new(), memory, None, None)?;
        Ok(self.lm_head.forward(&h)?)
    }

    /// Run the plain model over `ids` (positions from 0) and return each layer's keys
    /// (before RoPE) and values, `[H_kv, T, d]`.
    pub fn keys_values(&self, ids: &[u32]) -> Result<Vec<(Tensor, Tensor)>> {
        let mut kv = Vec::with_capacity(self.cfg.n_layers);
        self.run(ids, &mut KvCache::new(), None, None, Some(&mut kv))?;
        Ok(kv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_candle_quantized_llama_on_random_weights() {
        let cfg = LlamaConfig::tiny();
        let bytes = Llama::random_gguf(&cfg, 1).unwrap();
        let mut r = std::io::Cursor::new(bytes);
        let ct = gguf_file::Content::read(&mut r).unwrap();
        let mut theirs = candle_transformers::models::quantized_llama::ModelWeights::from_gguf(
            ct,
            &mut r,
            &Device::Cpu,
        )
        .unwrap();
        let ours = Llama::random(&cfg, 1).unwrap();
        let ids: Vec<u32> = vec![3, 17, 42, 5, 63, 0, 9];
        // Prompt, then two single-token steps with the cache.
        let want = theirs
            .forward(
                &Tensor::new(&ids[..5], &Device::Cpu)
                    .unwrap()
                    .unsqueeze(0)
                    .unwrap(),
                0,
            )
            .unwrap()
            .squeeze(0)
            .unwrap();
        let mut cache = KvCache::new();
        let got = ours.forward(&ids[..5], &mut cache, None).unwrap();
        let diff = (got - want)
            .unwrap()
            .abs()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-4, "prompt logits differ by {diff}");
        for i in 5..7 {
            let want = theirs
                .forward(
                    &Tensor::new(&ids[i..i + 1], &Device::Cpu)
                        .unwrap()
                        .unsqueeze(0)
                        .unwrap(),
                    i,
                )
                .unwrap()
                .squeeze(0)
                .unwrap();
            let got = ours.forward(&ids[i..i + 1], &mut cache, None).unwrap();
            let diff = (got - want)
                .unwrap()
                .abs()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 1e-4, "step {i} logits differ by {diff}");
        }
    }

    #[test]
    fn cached_generation_equals_full_forward() {
        let cfg = LlamaConfig::tiny();
        let m = Llama::random(&cfg, 2).unwrap();
        let ids: Vec<u32> = vec![1, 2, 3, 4, 5, 6];
        let all = m.forward_all(&ids, None).unwrap();
        let mut cache = KvCache::new();
        m.forward(&ids[..3], &mut cache, None).unwrap();
        for i in 3..6 {
            let step = m.forward(&ids[i..i + 1], &mut cache, None).unwrap();
            let want = all.get(i).unwrap();
            let d = (step - want)
                .unwrap()
                .abs()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(d < 1e-5, "{d}");
        }
        assert_eq!(cache.len(), 6);
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn with_no_memories_logits_equal_the_plain_model() {
        let cfg = LlamaConfig::tiny();
        let m = Llama::random(&cfg, 4).unwrap();
        let ids: Vec<u32> = vec![5, 9, 2, 33, 7];
        let plain = m.forward_all(&ids, None).unwrap();
        // A bank with zero memories (the document was only special tokens).
        let empty = MemoryBank::build(&m, &[0, 0], &[0], &crate::MemoryOptions::default()).unwrap();
        assert!(empty.is_empty());
        let ec = EmtConfig::default();
        let got = m
            .forward_all(
                &ids,
                Some(Memory {
                    bank: &empty,
                    config: &ec,
                }),
            )
            .unwrap();
        assert!(max_diff(&got, &plain) < 1e-5);
        // A real bank read by no layer.
        let bank =
            MemoryBank::build(&m, &[3, 4, 5, 6], &[], &crate::MemoryOptions::default()).unwrap();
        let none = EmtConfig {
            layers: Some(vec![]),
            ..EmtConfig::default()
        };
        let got = m
            .forward_all(
                &ids,
                Some(Memory {
                    bank: &bank,
                    config: &none,
                }),
            )
            .unwrap();
        assert!(max_diff(&got, &plain) < 1e-5);
        // ... and read by every layer, the logits do change.
        let got = m
            .forward_all(
                &ids,
                Some(Memory {
                    bank: &bank,
                    config: &ec,
                }),
            )
            .unwrap();
        assert!(max_diff(&got, &plain) > 1e-3);
        // Reading only layer 1 differs from reading all layers.
        let one = EmtConfig {
            layers: Some(vec![1]),
            ..EmtConfig::default()
        };
        let got1 = m
            .forward_all(
                &ids,
                Some(Memory {
                    bank: &bank,
                    config: &one,
                }),
            )
            .unwrap();
        assert!(max_diff(&got1, &got) > 1e-4 && max_diff(&got1, &plain) > 1e-4);
        let bad = EmtConfig {
            layers: Some(vec![7]),
            ..EmtConfig::default()
        };
        assert!(m
            .forward_all(
                &ids,
                Some(Memory {
                    bank: &bank,
                    config: &bad
                })
            )
            .is_err());
    }

    #[test]
    fn memory_cached_generation_equals_full_forward() {
        let m = Llama::random(&LlamaConfig::tiny(), 8).unwrap();
        let bank = MemoryBank::build(
            &m,
            &[3, 4, 5, 6, 7, 8],
            &[],
            &crate::MemoryOptions::default(),
        )
        .unwrap();
        let ec = EmtConfig::with_top_k(2);
        let mem = Memory {
            bank: &bank,
            config: &ec,
        };
        let ids: Vec<u32> = vec![1, 2, 3, 4, 5];
        let all = m.forward_all(&ids, Some(mem)).unwrap();
        let mut cache = KvCache::new();
        m.forward(&ids[..2], &mut cache, Some(mem)).unwrap();
        for i in 2..5 {
            let step = m.forward(&ids[i..i + 1], &mut cache, Some(mem)).unwrap();
            assert!(max_diff(&step, &all.get(i).unwrap()) < 1e-5);
        }
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let m = Llama::random(&LlamaConfig::tiny(), 3).unwrap();
        let mut c = KvCache::new();
        assert!(matches!(
            m.forward(&[], &mut c, None),
            Err(EmtError::EmptyInput(_))
        ));
        assert!(matches!(
            m.forward(&[999], &mut c, None),
            Err(EmtError::TokenOutOfRange { .. })
        ));
        let long = vec![1u32; 300];
        assert!(matches!(
            m.forward(&long, &mut c, None),
            Err(EmtError::ContextTooLong { .. })
        ));
        assert!(matches!(
            Llama::load("/nonexistent/model.gguf"),
            Err(EmtError::ModelNotFound { .. })
        ));
    }
}
