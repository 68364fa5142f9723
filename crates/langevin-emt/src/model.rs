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
use crate::quant::{QMatrix, QuantizedActs};
use crate::tokenizer::Tokenizer;

mod step;

#[derive(Debug, Clone)]
struct Block {
    attn_norm: Tensor,
    wq: Linear,
    wk: Linear,
    wv: Linear,
    wo: Linear,
    ffn_norm: Tensor,
    w_gate: Linear,
    w_up: Linear,
    w_down: Linear,
}

/// A linear layer: this crate's block kernels ([`crate::quant`]) for Q4_1/Q8_0 weights,
/// else candle's.
#[derive(Debug, Clone)]
enum Linear {
    Blocks(std::sync::Arc<QMatrix>),
    Candle(QMatMul),
}

impl Linear {
    fn new(q: QTensor, format: WeightFormat, device: &Device) -> Result<Self> {
        Ok(match format {
            WeightFormat::Quantized => match QMatrix::from_qtensor(&q)? {
                Some(m) if device.is_cpu() => Linear::Blocks(std::sync::Arc::new(m)),
                _ => Linear::Candle(QMatMul::from_qtensor(q)?),
            },
            WeightFormat::CandleQuantized => Linear::Candle(QMatMul::from_qtensor(q)?),
            WeightFormat::Dequantized => Linear::Candle(QMatMul::Tensor(q.dequantize(device)?)),
        })
    }

    /// `x [.., in] → [.., out]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Linear::Candle(m) => Ok(m.forward(x)?),
            Linear::Blocks(_) => Ok(Self::forward_shared(x, &[self])?.remove(0)),
        }
    }

    /// `x` through several layers with the same input: block-kernel layers share one
    /// quantization of `x` (q/k/v, gate/up).
    fn forward_shared(x: &Tensor, layers: &[&Linear]) -> Result<Vec<Tensor>> {
        let dims = x.dims();
        let cols = *dims.last().unwrap_or(&0);
        let mut acts: Option<QuantizedActs> = None;
        layers
            .iter()
            .map(|l| match l {
                Linear::Candle(m) => Ok(m.forward(x)?),
                Linear::Blocks(m) => {
                    if cols != m.cols() {
                        return Err(EmtError::DimensionMismatch {
                            expected: format!("{} inputs", m.cols()),
                            got: format!("{cols}"),
                        });
                    }
                    if acts.is_none() {
                        let xs = x.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
                        acts = Some(QuantizedActs::new(&xs, cols));
                    }
                    let y = m.matmul(acts.as_ref().expect("quantized above"))?;
                    let mut out_dims = dims.to_vec();
                    *out_dims.last_mut().expect("non-empty") = m.rows();
                    Ok(Tensor::from_vec(y, out_dims, x.device())?)
                }
            })
            .collect()
    }
}

/// How the linear-layer weights are held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum WeightFormat {
    /// As stored in the GGUF (e.g. Q4_1), multiplied by this crate's block kernels
    /// ([`crate::quant`]: AVX-512 VNNI / AVX2, activations quantized to 8 bits per block
    /// as llama.cpp does); formats without a kernel there go through candle's.
    #[default]
    Quantized,
    /// As stored in the GGUF, through candle's own quantized matmul (the reference the
    /// tests compare with; candle 0.11 has no SIMD kernel for Q4_1, so it is slow).
    CandleQuantized,
    /// Dequantized to f32 at load (same weights, f32 activations, candle's matmul):
    /// about 5.6x the memory (~0.6 GB for SmolLM2-135M).
    Dequantized,
}

/// The decoder.
#[derive(Debug, Clone)]
pub struct Llama {
    cfg: LlamaConfig,
    embed: Tensor,
    blocks: Vec<Block>,
    norm: Tensor,
    lm_head: Linear,
    cos: Tensor,
    sin: Tensor,
    device: Device,
    /// The one-token path's view of the weights ([`step`]): `None` off the CPU, when a
    /// layer has no block kernel, or with `LANGEVIN_EMT_GENERAL_PATH` set.
    step: Option<step::StepWeights>,
}

/// Local key/value cache for generation: per layer rotated keys and values in buffers
/// `[H_kv, capacity, d]` of which the first `len` positions are filled. A step writes
/// its new positions in place (capacity doubles when full), so a generated token copies
/// only its own keys and values, not the whole cache. Cloning copies the filled part:
/// clones never share a buffer.
#[derive(Debug, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl Clone for KvCache {
    fn clone(&self) -> Self {
        let copy = |t: &Tensor| -> Tensor {
            // `narrow` + `copy` of an in-memory CPU tensor cannot fail for in-range sizes.
            t.narrow(1, 0, self.len)
                .and_then(|n| n.copy())
                .expect("copying a KV cache buffer")
        };
        Self {
            layers: self
                .layers
                .iter()
                .map(|l| l.as_ref().map(|(k, v)| (copy(k), copy(v))))
                .collect(),
            len: self.len,
        }
    }
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

/// Write `new` (`[H, T, d]`) at positions `start..start + T` of `buf` (`[H, cap, d]`, the
/// first `start` positions filled), growing it (doubling, at most `max`) when needed.
/// Returns the buffer and a view of its filled part `[H, start + T, d]`.
fn append_kv(
    buf: Option<&Tensor>,
    new: &Tensor,
    start: usize,
    max: usize,
) -> Result<(Tensor, Tensor)> {
    let (h, t, d) = new.dims3()?;
    let need = start + t;
    let buf = match buf {
        Some(b) if b.dim(1)? >= need => b.clone(),
        old => {
            let cap = need
                .max(2 * old.map_or(0, |b| b.dim(1).unwrap_or(0)))
                .max(64)
                .min(max.max(need));
            let grown = Tensor::zeros((h, cap, d), new.dtype(), new.device())?;
            if let Some(o) = old {
                if start > 0 {
                    grown.slice_set(&o.narrow(1, 0, start)?.contiguous()?, 1, 0)?;
                }
            }
            grown
        }
    };
    buf.slice_set(&new.contiguous()?, 1, start)?;
    let filled = buf.narrow(1, 0, need)?;
    Ok((buf, filled))
}

/// Memories for a forward pass.
#[derive(Debug, Clone, Copy)]
pub struct Memory<'a> {
    pub bank: &'a MemoryBank,
    pub config: &'a EmtConfig,
}

/// Layer `l`'s memories as the attention kernel reads them (`None`: no memory, an empty
/// bank or a layer without retrieval).
fn layer_memory<'a>(memory: Option<Memory<'a>>, l: usize) -> Result<Option<LayerMemory<'a>>> {
    Ok(match memory {
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
    })
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
        let mm = |q: QTensor| -> Result<Linear> { Linear::new(q, format, device) };
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
                |r: &mut R, n: &str| -> Result<Linear> { mm(get(r, &format!("{p}.{n}.weight"))?) };
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
        let mut model = Self {
            cfg,
            embed,
            blocks,
            norm,
            lm_head,
            cos,
            sin,
            device: device.clone(),
            step: None,
        };
        // `LANGEVIN_EMT_GENERAL_PATH=1` keeps every token on the general path (to measure
        // what the step path gains, as `LANGEVIN_EMT_ISA` does for the kernels).
        if std::env::var_os("LANGEVIN_EMT_GENERAL_PATH").is_none() {
            model.step = step::StepWeights::of(&model)?;
        }
        Ok(model)
    }

    /// Write a GGUF file (in memory, f32 tensors) with random weights for `cfg`:
    /// used by tests to check this model against candle's own quantized llama.
    pub fn random_gguf(cfg: &LlamaConfig, seed: u64) -> Result<Vec<u8>> {
        Self::random_gguf_as(cfg, seed, GgmlDType::F32)
    }

    /// [`Llama::random_gguf`] with the linear weights stored as `weights` (e.g. Q4_1, whose
    /// rows need a multiple of 32 columns) and, when that is not F32, the embeddings as
    /// Q8_0, the layout of llama.cpp's Q4_1 files. Norm weights stay F32.
    pub fn random_gguf_as(cfg: &LlamaConfig, seed: u64, weights: GgmlDType) -> Result<Vec<u8>> {
        cfg.validate()?;
        let embed_dtype = match weights {
            GgmlDType::F32 => GgmlDType::F32,
            _ => GgmlDType::Q8_0,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let dev = Device::Cpu;
        let mut tensors: Vec<(String, QTensor)> = Vec::new();
        let mut add =
            |name: String, rows: usize, cols: usize, scale: f32, offset: f32| -> Result<()> {
                let v: Vec<f32> = (0..rows * cols)
                    .map(|_| offset + scale * rng.random_range(-1.0f32..1.0))
                    .collect();
                let (t, dtype) = if rows == 1 {
                    (Tensor::from_vec(v, cols, &dev)?, GgmlDType::F32)
                } else if name == "token_embd.weight" {
                    (Tensor::from_vec(v, (rows, cols), &dev)?, embed_dtype)
                } else {
                    (Tensor::from_vec(v, (rows, cols), &dev)?, weights)
                };
                tensors.push((name, QTensor::quantize(&t, dtype)?));
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
        Self::random_as(cfg, seed, GgmlDType::F32, WeightFormat::Quantized)
    }

    /// Build a model with random weights stored as `weights` (see
    /// [`Llama::random_gguf_as`]), held as `format`.
    pub fn random_as(
        cfg: &LlamaConfig,
        seed: u64,
        weights: GgmlDType,
        format: WeightFormat,
    ) -> Result<Self> {
        let bytes = Self::random_gguf_as(cfg, seed, weights)?;
        let mut r = std::io::Cursor::new(bytes);
        let ct = gguf_file::Content::read(&mut r)?;
        Self::from_gguf_with(&ct, &mut r, &Device::Cpu, format)
    }

    /// The model's dimensions.
    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    /// Bytes of weights one generated token reads: every linear layer and the output
    /// head, as held (the token's embedding row and the norms are negligible).
    pub fn weight_bytes_per_token(&self) -> usize {
        let lin = |l: &Linear| match l {
            Linear::Blocks(m) => m.bytes(),
            Linear::Candle(QMatMul::QTensor(q)) => q.storage_size_in_bytes(),
            Linear::Candle(QMatMul::Tensor(t)) | Linear::Candle(QMatMul::TensorF16(t)) => {
                t.elem_count() * t.dtype().size_in_bytes()
            }
        };
        lin(&self.lm_head)
            + self
                .blocks
                .iter()
                .map(|b| {
                    [&b.wq, &b.wk, &b.wv, &b.wo, &b.w_gate, &b.w_up, &b.w_down]
                        .into_iter()
                        .map(lin)
                        .sum::<usize>()
                })
                .sum::<usize>()
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
        // New positions are written past `cache.len` (or into new buffers), and the cache
        // takes the buffers only at the end: a failed pass leaves it as it was.
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
            let qkv = Linear::forward_shared(&h, &[&b.wq, &b.wk, &b.wv])?;
            let heads = |y: &Tensor, n: usize| -> Result<Tensor> {
                Ok(y.reshape((1, t, n, hd))?.transpose(1, 2)?.contiguous()?)
            };
            let (q, k, v) = (
                heads(&qkv[0], nh)?,
                heads(&qkv[1], nkv)?,
                heads(&qkv[2], nkv)?,
            );
            if let Some(c) = collect.as_deref_mut() {
                c.push((k.squeeze(0)?, v.squeeze(0)?));
            }
            let q = candle_nn::rotary_emb::rope_i(&q, &cos, &sin)?.squeeze(0)?;
            let k = candle_nn::rotary_emb::rope_i(&k, &cos, &sin)?.squeeze(0)?;
            let v = v.squeeze(0)?;
            let max = self.cfg.max_position;
            let (kb, k) = append_kv(layers[l].as_ref().map(|(k, _)| k), &k, start, max)?;
            let (vb, v) = append_kv(layers[l].as_ref().map(|(_, v)| v), &v, start, max)?;
            layers[l] = Some((kb, vb));
            let lm = layer_memory(memory, l)?;
            let (att, ret) = emt_attention(&q, &k, &v, lm.as_ref())?;
            if let (Some(c), Some(r)) = (counts.as_deref_mut(), ret.as_ref()) {
                c.add(r);
            }
            let att = att.transpose(0, 1)?.reshape((1, t, nh * hd))?;
            x = (x + b.wo.forward(&att)?)?;
            let h = rms_norm(&x, &b.ffn_norm, eps)?;
            let gu = Linear::forward_shared(&h, &[&b.w_gate, &b.w_up])?;
            let mlp = b
                .w_down
                .forward(&(candle_nn::ops::silu(&gu[0])? * &gu[1])?)?;
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
        if let (Some(w), [id]) = (&self.step, ids) {
            let h = self.step(w, *id, cache, memory, None)?;
            return self.step_logits(w, &h);
        }
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
        if let (Some(w), [id]) = (&self.step, ids) {
            let h = self.step(w, *id, cache, Some(memory), Some(&mut counts))?;
            return Ok((self.step_logits(w, &h)?, counts));
        }
        let h = self.run(ids, cache, Some(memory), Some(&mut counts), None)?;
        let last = h.narrow(0, ids.len() - 1, 1)?;
        Ok((self.lm_head.forward(&last)?.squeeze(0)?, counts))
    }

    /// Logits of every position `[T, vocab]` (no cache kept).
    pub fn forward_all(&self, ids: &[u32], memory: Option<Memory<'_>>) -> Result<Tensor> {
        let h = self.run(ids, &mut KvCache::new(), memory, None, None)?;
        self.lm_head.forward(&h)
    }

    /// Run the plain model over `ids` (positions from 0) and return each layer's keys
    /// (before RoPE) and values, `[H_kv, T, d]`.
    pub fn keys_values(&self, ids: &[u32]) -> Result<Vec<(Tensor, Tensor)>> {
        let mut kv = Vec::with_capacity(self.cfg.n_layers);
        self.run(ids, &mut KvCache::new(), None, None, Some(&mut kv))?;
        Ok(kv)
    }

    /// Final-normed hidden states `[T, hidden]` of the plain model over `ids` (positions
    /// from 0, no memories, no cache kept): the model's own representation of a text,
    /// e.g. mean-pooled as a chunk embedding for retrieval-augmented generation.
    pub fn hidden_states(&self, ids: &[u32]) -> Result<Tensor> {
        self.run(ids, &mut KvCache::new(), None, None, None)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::attention::tests::max_diff;

    /// A small model whose widths (multiples of 32) fit Q4_1 blocks, with grouped-query
    /// attention (4 heads over 2 KV heads).
    pub(crate) fn q4_config(max_position: usize) -> LlamaConfig {
        LlamaConfig {
            vocab_size: 96,
            hidden_size: 64,
            intermediate_size: 128,
            n_layers: 3,
            n_heads: 4,
            n_kv_heads: 2,
            rope_theta: 10_000.0,
            rms_norm_eps: 1e-5,
            max_position,
        }
    }

    /// A Q4_1 model (Q8_0 embeddings) through this crate's block kernels against the same
    /// file through candle's quantized matmul. Both quantize activations to 8 bits per
    /// block; candle rounds the block scale and sum to f16 (relative 2^-11), this crate
    /// keeps them in f32, so logits differ by about that rounding times the logit scale,
    /// compounded over layers: the test allows 1% of the largest logit, and checks that
    /// both are within the activation-quantization error of the dequantized f32 model.
    #[test]
    fn block_kernels_match_candle_quantized_matmul_on_q4_1_weights() {
        let cfg = q4_config(64);
        let ids: Vec<u32> = vec![3, 17, 42, 5, 63, 0, 9, 77];
        let logits = |format| {
            let m = Llama::random_as(&cfg, 4, GgmlDType::Q4_1, format).unwrap();
            let mut cache = KvCache::new();
            let mut out = m
                .forward(&ids[..6], &mut cache, None)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            for i in 6..8 {
                out.extend(
                    m.forward(&ids[i..i + 1], &mut cache, None)
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap(),
                );
            }
            out
        };
        let ours = logits(WeightFormat::Quantized);
        let candle = logits(WeightFormat::CandleQuantized);
        let f32w = logits(WeightFormat::Dequantized);
        let scale = f32w.iter().fold(0f32, |m, v| m.max(v.abs()));
        let max_diff =
            |a: &[f32], b: &[f32]| a.iter().zip(b).fold(0f32, |m, (u, v)| m.max((u - v).abs()));
        let (d_ours_candle, d_ours_f32, d_candle_f32) = (
            max_diff(&ours, &candle),
            max_diff(&ours, &f32w),
            max_diff(&candle, &f32w),
        );
        assert!(
            d_ours_candle <= 0.01 * scale,
            "block kernels vs candle: {d_ours_candle} (logit scale {scale})"
        );
        assert!(
            d_ours_f32 <= 0.05 * scale && d_candle_f32 <= 0.05 * scale,
            "vs f32 weights: ours {d_ours_f32}, candle {d_candle_f32} (scale {scale})"
        );
    }

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

    /// The cache grows in place (past its first 64-position buffer here) and a clone is an
    /// independent copy: two continuations of one prefix, fed alternately, each equal the
    /// full forward pass of their own sequence.
    #[test]
    fn cloned_caches_grow_independently() {
        let cfg = LlamaConfig::tiny();
        let m = Llama::random(&cfg, 3).unwrap();
        let prefix: Vec<u32> = (0..70).map(|i| (i * 7 % 64) as u32).collect();
        let mut a = KvCache::new();
        m.forward(&prefix, &mut a, None).unwrap();
        let mut b = a.clone();
        let (ta, tb) = ([5u32, 9, 11], [40u32, 2, 63]);
        for i in 0..3 {
            let la = m.forward(&ta[i..i + 1], &mut a, None).unwrap();
            let lb = m.forward(&tb[i..i + 1], &mut b, None).unwrap();
            for (toks, got) in [(&ta, la), (&tb, lb)] {
                let mut full = prefix.clone();
                full.extend_from_slice(&toks[..=i]);
                let want = m
                    .forward_all(&full, None)
                    .unwrap()
                    .get(full.len() - 1)
                    .unwrap();
                assert!(max_diff(&got, &want) < 1e-4, "step {i}");
            }
        }
        assert_eq!((a.len(), b.len()), (73, 73));
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
