//! Memory banks on disk: [`MemoryBank::save`] and [`MemoryBank::load`], in safetensors.
//!
//! Building a bank runs the model over the whole document (minutes for a long one on a
//! CPU); loading one back is a file read. The file (safetensors, little endian, format
//! version [`VERSION`]) holds:
//!
//! * `layer.{l}.keys`, `layer.{l}.values` `[H_kv, M, d]`, F32 by default or F16
//!   ([`BankDType`]): the memory keys as the kernel compares them and the values (the
//!   unit-norm keys are recomputed at load);
//! * `token_ids` U32 `[M]`, `positions` U64 `[M]`, `spans` U64 `[M, 2]` (`[0, 2]` for a
//!   bank built from ids) and `text` U8 (the document, UTF-8): what citations need;
//! * `model.probe` F32 `[L, H_kv, T, d]`: the model's fingerprint (below);
//! * `__metadata__`: `format` ([`FORMAT`]), `version`, `options` (the [`MemoryOptions`]
//!   as JSON, `null` for a bank made from tensors), `model` ([`ModelInfo`] as JSON: the
//!   model's dimensions and, when the caller knows it, the GGUF's `general.name`) and
//!   `checksums` (a 64-bit checksum of each tensor's bytes, hex).
//!
//! **Model fingerprint.** A bank only makes sense for the model that made it. Loading
//! checks the dimensions exactly and the *probe*: every layer's keys of
//! [`PROBE_TOKENS`] fixed token ids under the plain model, which depend on every
//! weight up to the last attention block. The loading model's probe must lie within a
//! relative L2 distance of [`PROBE_TOLERANCE`] (25%) of the stored one in every layer.
//! Measured on SmolLM2-135M: the same GGUF with quantized and with dequantized weights
//! (8-bit activations or f32) differs by 0.55% in layer 0 and at most 5.6% in a layer;
//! a random model of the same dimensions by 237%. (A hash of the GGUF's weight bytes
//! would be an exact identity, but a loaded [`Llama`] keeps neither the file nor such a
//! hash; the probe needs only the model, and accepts both weight formats of one file,
//! whose banks are interchangeable.)
//!
//! **F32 by default; F16 on request.** With [`BankDType::F32`] a loaded bank is the bank
//! it was saved from, bit for bit: identical logits, answers and citations.
//! [`BankDType::F16`] halves the file (SmolLM2-135M: 23 KB instead of 46 KB per memory;
//! relative rounding 2^-11 per entry) but retrieval is a discontinuous function of the
//! keys: where two memories' cosine similarities are within the rounding of each other,
//! the top-k flips, and the retrieved memory changes a head's output by a finite amount.
//! Measured on SmolLM2 (two needle documents, 436 memories, k = 2): the same 12
//! generated tokens, but the per-token citation scores differ and the prompt's logits
//! differ by up to 4.3 (max |logit| 39). On a random tiny model, where no near-tie flips,
//! the f16 logits are within 9e-5 of the largest |logit| (test
//! `f16_bank_is_within_tolerance_and_half_the_size`, tolerance 1e-3). So F16 is an
//! option for large banks whose size matters more than exact reproduction. A tensor
//! with a finite value beyond f16's range is stored as F32 in either case.
//!
//! Every way a file can be wrong (missing, truncated, not safetensors, another format or
//! version, a checksum that differs, shapes that disagree, spans outside the text,
//! another model) is a typed [`EmtError`] naming the file, never a panic.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use half::f16;
use half::slice::HalfFloatSliceExt;
use safetensors::tensor::{Dtype, SafeTensors, TensorView, View};
use serde::{Deserialize, Serialize};

use crate::attention::unit_norm;
use crate::config::LlamaConfig;
use crate::error::{EmtError, Result};
use crate::memory::{MemoryBank, MemoryOptions};
use crate::model::Llama;

/// The `format` entry of a bank file's metadata.
pub const FORMAT: &str = "langevin-emt memory bank";
/// The file format version this code writes and reads.
pub const VERSION: u32 = 1;
/// Number of fixed token ids of the model probe.
pub const PROBE_TOKENS: usize = 8;
/// Largest relative L2 distance, in any layer, between a bank's stored probe and the
/// loading model's.
pub const PROBE_TOLERANCE: f32 = 0.25;

/// How keys and values are stored on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum BankDType {
    /// Single precision: the exact bank (the default).
    #[default]
    F32,
    /// Half precision: half the file, but near-ties in retrieval can flip (see the
    /// [module](crate::bank_io) docs).
    F16,
}

impl std::str::FromStr for BankDType {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f16" => Ok(Self::F16),
            "f32" => Ok(Self::F32),
            _ => Err(format!("unknown bank dtype {s:?} (f16 or f32)")),
        }
    }
}

/// Options of [`MemoryBank::save_with`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SaveOptions {
    /// Storage of keys and values.
    pub dtype: BankDType,
    /// The model's name (e.g. the GGUF's `general.name`, see [`gguf_model_name`]),
    /// recorded so that a refusal can say which model made the bank.
    pub model_name: Option<String>,
}

/// What a bank file records about the model that made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub config: LlamaConfig,
    pub name: Option<String>,
}

impl ModelInfo {
    fn describe(&self) -> String {
        let c = &self.config;
        let dims = format!(
            "{} layers, hidden {}, {} heads, {} kv heads, vocabulary {}",
            c.n_layers, c.hidden_size, c.n_heads, c.n_kv_heads, c.vocab_size
        );
        match &self.name {
            Some(n) => format!("`{n}` ({dims})"),
            None => format!("a model with {dims}"),
        }
    }
}

/// The GGUF's `general.name`, if the file has one (reads the header only).
pub fn gguf_model_name(path: impl AsRef<Path>) -> Option<String> {
    let mut f = std::io::BufReader::new(std::fs::File::open(path).ok()?);
    let ct = candle_core::quantized::gguf_file::Content::read(&mut f).ok()?;
    ct.metadata
        .get("general.name")
        .and_then(|v| v.to_string().ok().cloned())
}

/// The fixed token ids of the probe (spread over the vocabulary).
fn probe_ids(vocab: usize) -> Vec<u32> {
    (0..PROBE_TOKENS)
        .map(|i| ((i * 7919 + 11) % vocab) as u32)
        .collect()
}

/// Every layer's keys `[H_kv, T, d]` of the probe ids, stacked: `[L, H_kv, T, d]`.
fn probe(model: &Llama) -> Result<Tensor> {
    let ids = probe_ids(model.config().vocab_size);
    let kv = model.keys_values(&ids)?;
    let keys: Vec<Tensor> = kv.into_iter().map(|(k, _)| k).collect();
    Ok(Tensor::stack(&keys, 0)?.to_dtype(DType::F32)?)
}

/// Per layer, `|a - b| / |b|` (L2 over each layer's entries); the largest.
fn probe_distance(stored: &[f32], ours: &[f32], n_layers: usize) -> f32 {
    let per = ours.len() / n_layers.max(1);
    let mut worst = 0f32;
    for l in 0..n_layers {
        let (a, b) = (
            &stored[l * per..(l + 1) * per],
            &ours[l * per..(l + 1) * per],
        );
        let diff: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
        let norm: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
        let rel = (diff.sqrt() / norm.sqrt().max(1e-30)) as f32;
        // NaN (a corrupt probe) counts as the largest distance.
        worst = if rel.is_nan() {
            f32::INFINITY
        } else {
            worst.max(rel)
        };
    }
    worst
}

/// A 64-bit checksum of `bytes` (four multiply-xor lanes over 8-byte words; not
/// cryptographic): any change of one word changes it. Several GB/s.
pub fn checksum(bytes: &[u8]) -> u64 {
    const P: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut lanes: [u64; 4] = [
        0x243F_6A88_85A3_08D3,
        0x1319_8A2E_0370_7344,
        0xA409_3822_299F_31D0,
        0x082E_FA98_EC4E_6C89,
    ];
    let word = |c: &[u8]| {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        u64::from_le_bytes(w)
    };
    let mut chunks = bytes.chunks_exact(32);
    for c in &mut chunks {
        for (i, lane) in lanes.iter_mut().enumerate() {
            *lane = (*lane ^ word(&c[i * 8..i * 8 + 8]))
                .wrapping_mul(P)
                .rotate_left(29);
        }
    }
    let mut h = (bytes.len() as u64).wrapping_mul(P);
    for lane in lanes {
        h = (h ^ lane).wrapping_mul(P).rotate_left(31);
    }
    for &b in chunks.remainder() {
        h = (h ^ b as u64).wrapping_mul(P).rotate_left(31);
    }
    h ^ (h >> 29)
}

/// A tensor's bytes as they go into the file.
struct Raw {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Raw {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// A tensor of `dtype` from its elements' little-endian bytes.
fn le_raw<const N: usize>(
    dtype: Dtype,
    shape: Vec<usize>,
    elements: impl ExactSizeIterator<Item = [u8; N]>,
) -> Raw {
    let mut data = Vec::with_capacity(elements.len() * N);
    for x in elements {
        data.extend_from_slice(&x);
    }
    Raw { dtype, shape, data }
}

fn f32_raw(values: &[f32], shape: Vec<usize>) -> Raw {
    le_raw(Dtype::F32, shape, values.iter().map(|x| x.to_le_bytes()))
}

/// A key or value tensor in the requested storage (f32 if a finite value exceeds f16).
fn kv_raw(t: &Tensor, dtype: BankDType) -> Result<Raw> {
    let shape = t.dims().to_vec();
    let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let fits_f16 = v
        .iter()
        .all(|x| !x.is_finite() || x.abs() <= f16::MAX.to_f32());
    if dtype == BankDType::F32 || !fits_f16 {
        return Ok(f32_raw(&v, shape));
    }
    let mut h = vec![f16::ZERO; v.len()];
    h.convert_from_f32_slice(&v);
    Ok(le_raw(Dtype::F16, shape, h.iter().map(|x| x.to_le_bytes())))
}

fn u64_raw(values: impl ExactSizeIterator<Item = u64>, shape: Vec<usize>) -> Raw {
    le_raw(Dtype::U64, shape, values.map(u64::to_le_bytes))
}

impl MemoryBank {
    /// Write the bank to `path` (safetensors, keys and values in f32: loading it gives
    /// this bank bit for bit; see the [module](crate::bank_io) docs). `model` must be the model the bank was built
    /// with: its fingerprint is recorded. Returns the file size in bytes.
    pub fn save(&self, path: impl AsRef<Path>, model: &Llama) -> Result<u64> {
        self.save_with(path, model, &SaveOptions::default())
    }

    /// [`MemoryBank::save`] with a choice of storage and the model's name.
    pub fn save_with(
        &self,
        path: impl AsRef<Path>,
        model: &Llama,
        opts: &SaveOptions,
    ) -> Result<u64> {
        let path = path.as_ref();
        let cfg = model.config();
        self.check_compatible(cfg)?;
        let m = self.len();
        let mut raws: Vec<(String, Raw)> = Vec::with_capacity(2 * self.layers.len() + 5);
        for (l, (k, _, v)) in self.layers.iter().enumerate() {
            raws.push((format!("layer.{l}.keys"), kv_raw(k, opts.dtype)?));
            raws.push((format!("layer.{l}.values"), kv_raw(v, opts.dtype)?));
        }
        let mut ids = Vec::with_capacity(m * 4);
        for x in &self.token_ids {
            ids.extend_from_slice(&x.to_le_bytes());
        }
        raws.push((
            "token_ids".into(),
            Raw {
                dtype: Dtype::U32,
                shape: vec![m],
                data: ids,
            },
        ));
        raws.push((
            "positions".into(),
            u64_raw(self.positions.iter().map(|&p| p as u64), vec![m]),
        ));
        raws.push((
            "spans".into(),
            u64_raw(
                self.spans
                    .iter()
                    .flat_map(|&(a, b)| [a as u64, b as u64])
                    .collect::<Vec<_>>()
                    .into_iter(),
                vec![self.spans.len(), 2],
            ),
        ));
        raws.push((
            "text".into(),
            Raw {
                dtype: Dtype::U8,
                shape: vec![self.text.len()],
                data: self.text.as_bytes().to_vec(),
            },
        ));
        let p = probe(model)?;
        let p_shape = p.dims().to_vec();
        raws.push((
            "model.probe".into(),
            f32_raw(&p.flatten_all()?.to_vec1::<f32>()?, p_shape),
        ));
        let checksums: HashMap<&str, String> = raws
            .iter()
            .map(|(n, r)| (n.as_str(), format!("{:016x}", checksum(&r.data))))
            .collect();
        let json = |e: serde_json::Error| EmtError::BankFormat {
            path: path.to_path_buf(),
            reason: format!("cannot encode the metadata: {e}"),
        };
        let info = ModelInfo {
            config: cfg.clone(),
            name: opts.model_name.clone(),
        };
        let meta: HashMap<String, String> = [
            ("format".to_string(), FORMAT.to_string()),
            ("version".to_string(), VERSION.to_string()),
            (
                "options".to_string(),
                serde_json::to_string(&self.options).map_err(json)?,
            ),
            (
                "model".to_string(),
                serde_json::to_string(&info).map_err(json)?,
            ),
            (
                "checksums".to_string(),
                serde_json::to_string(&checksums).map_err(json)?,
            ),
        ]
        .into_iter()
        .collect();
        safetensors::serialize_to_file(raws.iter().map(|(n, r)| (n, r)), Some(meta), path)
            .map_err(|e| match e {
                safetensors::SafeTensorError::IoError(source) => EmtError::Io {
                    path: path.to_path_buf(),
                    source,
                },
                e => EmtError::BankFormat {
                    path: path.to_path_buf(),
                    reason: format!("cannot write: {e}"),
                },
            })?;
        std::fs::metadata(path)
            .map(|md| md.len())
            .map_err(|source| EmtError::Io {
                path: path.to_path_buf(),
                source,
            })
    }

    /// Read a bank written by [`MemoryBank::save`], for `model`: refused with
    /// [`EmtError::BankModelMismatch`] when another model made it, and with
    /// [`EmtError::BankFormat`] when the file is truncated, corrupt or not a bank.
    pub fn load(path: impl AsRef<Path>, model: &Llama) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| EmtError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Reader::new(path, &bytes)?.bank(model)
    }

    /// What a bank file records about the model that made it and how it was built
    /// (reads and checks the whole file, without a model).
    pub fn file_info(path: impl AsRef<Path>) -> Result<(ModelInfo, Option<MemoryOptions>)> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| EmtError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let r = Reader::new(path, &bytes)?;
        Ok((r.model_info()?, r.options()?))
    }
}

/// The largest relative L2 distance, over layers, between the probe stored in the bank
/// file at `path` and `model`'s (what [`MemoryBank::load`] compares with
/// [`PROBE_TOLERANCE`]; dimensions must agree).
pub fn probe_distance_to(path: impl AsRef<Path>, model: &Llama) -> Result<f32> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| EmtError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let r = Reader::new(path, &bytes)?;
    let ours = probe(model)?;
    let shape = ours.dims().to_vec();
    let stored = Reader::f32s(&r.view("model.probe", &[Dtype::F32], Some(&shape))?);
    Ok(probe_distance(
        &stored,
        &ours.flatten_all()?.to_vec1::<f32>()?,
        model.config().n_layers,
    ))
}

/// A parsed, checksum-verified bank file.
struct Reader<'a> {
    path: PathBuf,
    st: SafeTensors<'a>,
    meta: HashMap<String, String>,
}

impl<'a> Reader<'a> {
    fn bad(&self, reason: impl Into<String>) -> EmtError {
        EmtError::BankFormat {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    fn new(path: &Path, bytes: &'a [u8]) -> Result<Self> {
        let bad = |reason: String| EmtError::BankFormat {
            path: path.to_path_buf(),
            reason,
        };
        let st = SafeTensors::deserialize(bytes).map_err(|e| {
            bad(format!(
                "not a readable safetensors file (truncated or corrupt?): {e}"
            ))
        })?;
        let (_, md) = SafeTensors::read_metadata(bytes)
            .map_err(|e| bad(format!("not a readable safetensors file: {e}")))?;
        let meta = md.metadata().clone().unwrap_or_default();
        match meta.get("format") {
            Some(f) if f == FORMAT => {}
            _ => {
                return Err(bad(format!(
                    "a safetensors file but not a {FORMAT} (no `format: {FORMAT}` metadata)"
                )))
            }
        }
        let version = meta.get("version").map(String::as_str).unwrap_or("?");
        if version != VERSION.to_string() {
            return Err(bad(format!(
                "format version {version}; this program reads version {VERSION}"
            )));
        }
        let r = Self {
            path: path.to_path_buf(),
            st,
            meta,
        };
        r.verify_checksums()?;
        Ok(r)
    }

    fn verify_checksums(&self) -> Result<()> {
        let sums: HashMap<String, String> = self
            .meta
            .get("checksums")
            .and_then(|s| serde_json::from_str(s).ok())
            .ok_or_else(|| self.bad("no readable `checksums` metadata"))?;
        for (name, view) in self.st.iter() {
            let want = sums
                .get(name)
                .ok_or_else(|| self.bad(format!("tensor `{name}` has no checksum")))?;
            let got = format!("{:016x}", checksum(view.data()));
            if &got != want {
                return Err(self.bad(format!(
                    "tensor `{name}` is corrupt (checksum {got}, recorded {want})"
                )));
            }
        }
        if let Some(missing) = sums.keys().find(|n| self.st.tensor(n).is_err()) {
            return Err(self.bad(format!("tensor `{missing}` is missing")));
        }
        Ok(())
    }

    fn model_info(&self) -> Result<ModelInfo> {
        self.meta
            .get("model")
            .and_then(|s| serde_json::from_str(s).ok())
            .ok_or_else(|| self.bad("no readable `model` metadata"))
    }

    fn options(&self) -> Result<Option<MemoryOptions>> {
        self.meta
            .get("options")
            .and_then(|s| serde_json::from_str(s).ok())
            .ok_or_else(|| self.bad("no readable `options` metadata"))
    }

    /// The tensor `name`, of one of `dtypes`, with `shape` (when given).
    fn view(
        &self,
        name: &str,
        dtypes: &[Dtype],
        shape: Option<&[usize]>,
    ) -> Result<TensorView<'a>> {
        let v = self
            .st
            .tensor(name)
            .map_err(|_| self.bad(format!("tensor `{name}` is missing")))?;
        if !dtypes.contains(&v.dtype()) {
            return Err(self.bad(format!(
                "tensor `{name}` has dtype {:?}, expected one of {dtypes:?}",
                v.dtype()
            )));
        }
        if let Some(s) = shape {
            if v.shape() != s {
                return Err(self.bad(format!(
                    "tensor `{name}` has shape {:?}, expected {s:?}",
                    v.shape()
                )));
            }
        }
        Ok(v)
    }

    fn f32s(v: &TensorView<'_>) -> Vec<f32> {
        match v.dtype() {
            Dtype::F16 => {
                let h: Vec<f16> = v
                    .data()
                    .chunks_exact(2)
                    .map(|c| f16::from_le_bytes([c[0], c[1]]))
                    .collect();
                let mut out = vec![0f32; h.len()];
                h.convert_to_f32_slice(&mut out);
                out
            }
            _ => v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        }
    }

    fn u64s(v: &TensorView<'_>) -> Vec<u64> {
        v.data()
            .chunks_exact(8)
            .map(|c| {
                let mut w = [0u8; 8];
                w.copy_from_slice(c);
                u64::from_le_bytes(w)
            })
            .collect()
    }

    fn check_model(&self, model: &Llama) -> Result<()> {
        let info = self.model_info()?;
        let cfg = model.config();
        let mismatch = |reason: String| EmtError::BankModelMismatch {
            path: self.path.clone(),
            reason,
        };
        if &info.config != cfg {
            let ours = ModelInfo {
                config: cfg.clone(),
                name: None,
            };
            return Err(mismatch(format!(
                "it was built with {}; this model has {}",
                info.describe(),
                ours.describe().trim_start_matches("a model with ")
            )));
        }
        let ours = probe(model)?;
        let shape = ours.dims().to_vec();
        let stored = Self::f32s(&self.view("model.probe", &[Dtype::F32], Some(&shape))?);
        let ours = ours.flatten_all()?.to_vec1::<f32>()?;
        let dist = probe_distance(&stored, &ours, cfg.n_layers);
        if dist.is_nan() || dist > PROBE_TOLERANCE {
            return Err(mismatch(format!(
                "it was built with {} whose weights differ from this model's (same \
                 dimensions; probe keys differ by {:.0}% of their norm, tolerance {:.0}%)",
                info.describe(),
                100.0 * dist.min(1e6),
                100.0 * PROBE_TOLERANCE
            )));
        }
        Ok(())
    }

    fn bank(&self, model: &Llama) -> Result<MemoryBank> {
        self.check_model(model)?;
        let cfg = model.config();
        let ids_v = self.view("token_ids", &[Dtype::U32], None)?;
        let m = match ids_v.shape() {
            [m] => *m,
            s => return Err(self.bad(format!("tensor `token_ids` has shape {s:?}"))),
        };
        let token_ids: Vec<u32> = ids_v
            .data()
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if let Some(id) = token_ids.iter().find(|&&i| i as usize >= cfg.vocab_size) {
            return Err(self.bad(format!(
                "token id {id} is outside the vocabulary ({})",
                cfg.vocab_size
            )));
        }
        let positions: Vec<usize> =
            Self::u64s(&self.view("positions", &[Dtype::U64], Some(&[m]))?)
                .into_iter()
                .map(|p| usize::try_from(p).unwrap_or(usize::MAX))
                .collect();
        let text_v = self.view("text", &[Dtype::U8], None)?;
        let text = String::from_utf8(text_v.data().to_vec())
            .map_err(|e| self.bad(format!("the document text is not UTF-8: {e}")))?;
        let spans_v = self.view("spans", &[Dtype::U64], None)?;
        let n_spans = match spans_v.shape() {
            [s, 2] if *s == m || *s == 0 => *s,
            s => {
                return Err(self.bad(format!(
                    "tensor `spans` has shape {s:?}, expected [{m}, 2] or [0, 2]"
                )))
            }
        };
        let flat = Self::u64s(&spans_v);
        let mut spans = Vec::with_capacity(n_spans);
        for (j, pair) in flat.chunks_exact(2).enumerate() {
            let (a, b) = (pair[0] as usize, pair[1] as usize);
            if a > b || b > text.len() || !text.is_char_boundary(a) || !text.is_char_boundary(b) {
                return Err(self.bad(format!(
                    "span {a}..{b} of memory {j} is not a range of the {}-byte text",
                    text.len()
                )));
            }
            spans.push((a, b));
        }
        let (h_kv, d) = (cfg.n_kv_heads, cfg.head_dim());
        let shape = [h_kv, m, d];
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for l in 0..cfg.n_layers {
            let read = |what: &str| -> Result<Tensor> {
                let v = self.view(
                    &format!("layer.{l}.{what}"),
                    &[Dtype::F16, Dtype::F32],
                    Some(&shape),
                )?;
                Ok(Tensor::from_vec(
                    Self::f32s(&v),
                    (h_kv, m, d),
                    model.device(),
                )?)
            };
            let k = read("keys")?;
            let v = read("values")?;
            let u = unit_norm(&k)?;
            layers.push((k, u, v));
        }
        Ok(MemoryBank {
            layers,
            n_kv_heads: h_kv,
            head_dim: d,
            token_ids,
            positions,
            spans,
            text,
            options: self.options()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EmtConfig;
    use crate::model::Memory;

    /// A fresh folder under the system's temporary folder, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let p = std::env::temp_dir().join(format!(
                "langevin-emt-bank-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn max_abs(t: &Tensor) -> f32 {
        t.abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// A bank with text and spans (as `from_text` makes), from ids over a toy "text"
    /// of one letter per token.
    fn bank_with_text(model: &Llama, n: usize, opts: &MemoryOptions) -> MemoryBank {
        let ids: Vec<u32> = (0..n).map(|i| ((i * 13 + 5) % 64) as u32).collect();
        let mut bank = MemoryBank::build(model, &ids, &[0], opts).unwrap();
        bank.text = "é".repeat(n); // 2 bytes per char: spans must sit on char boundaries
        bank.spans = bank.positions.iter().map(|&p| (2 * p, 2 * p + 2)).collect();
        bank
    }

    fn logits(model: &Llama, bank: &MemoryBank) -> Tensor {
        let ec = EmtConfig::with_top_k(3);
        model
            .forward_all(&[7, 3, 9, 21, 4, 40], Some(Memory { bank, config: &ec }))
            .unwrap()
    }

    fn same_metadata(a: &MemoryBank, b: &MemoryBank) {
        assert_eq!(a.token_ids(), b.token_ids());
        assert_eq!(a.positions(), b.positions());
        assert_eq!(a.spans, b.spans);
        assert_eq!(a.text(), b.text());
        assert_eq!(a.options(), b.options());
        assert_eq!(
            (a.n_layers(), a.n_kv_heads(), a.head_dim()),
            (b.n_layers(), b.n_kv_heads(), b.head_dim())
        );
    }

    #[test]
    fn f32_bank_round_trips_exactly() {
        let dir = TempDir::new("f32");
        let model = Llama::random(&LlamaConfig::tiny(), 5).unwrap();
        let opts = MemoryOptions {
            max_len: 16,
            stride: 4,
            ..Default::default()
        };
        let bank = bank_with_text(&model, 40, &opts);
        assert!(bank.len() < 40, "token 0 is dropped as special");
        let path = dir.0.join("b.safetensors");
        let size = bank
            .save_with(
                &path,
                &model,
                &SaveOptions {
                    model_name: Some("tiny".into()),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(size, std::fs::metadata(&path).unwrap().len());
        let loaded = MemoryBank::load(&path, &model).unwrap();
        same_metadata(&bank, &loaded);
        for l in 0..bank.n_layers() {
            let (k, u, v) = bank.layer(l).unwrap();
            let (k2, u2, v2) = loaded.layer(l).unwrap();
            for (a, b) in [(k, k2), (u, u2), (v, v2)] {
                assert_eq!(max_abs(&(a - b).unwrap()), 0.0);
            }
        }
        // Identical logits, bit for bit.
        let want = logits(&model, &bank)
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let got = logits(&model, &loaded)
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(want, got);
        let (info, o) = MemoryBank::file_info(&path).unwrap();
        assert_eq!(info.name.as_deref(), Some("tiny"));
        assert_eq!(&info.config, model.config());
        assert_eq!(o.as_ref(), Some(&opts));
    }

    /// The f16 tolerance: logits within 1e-3 of the largest |logit| (measured: 1.6e-3
    /// with max |logit| 16.7, i.e. 9e-5 of it).
    #[test]
    fn f16_bank_is_within_tolerance_and_half_the_size() {
        let dir = TempDir::new("f16");
        // Enough memories that the key/value tensors dominate the file.
        let cfg = LlamaConfig::tiny();
        let model = Llama::random(&cfg, 7).unwrap();
        let bank = bank_with_text(&model, 200, &MemoryOptions::default());
        let p16 = dir.0.join("h.safetensors");
        let p32 = dir.0.join("s.safetensors");
        let s16 = bank
            .save_with(
                &p16,
                &model,
                &SaveOptions {
                    dtype: BankDType::F16,
                    ..Default::default()
                },
            )
            .unwrap();
        let s32 = bank.save(&p32, &model).unwrap();
        let kv32 = (2 * cfg.n_layers * cfg.n_kv_heads * bank.len() * cfg.head_dim() * 4) as u64;
        // f16 halves the key/value bytes (the headers differ by a few bytes of offsets).
        assert!(
            (s32 - s16).abs_diff(kv32 / 2) <= 64,
            "{s32} - {s16} vs {}",
            kv32 / 2
        );
        let loaded = MemoryBank::load(&p16, &model).unwrap();
        same_metadata(&bank, &loaded);
        let want = logits(&model, &bank);
        let got = logits(&model, &loaded);
        let scale = max_abs(&want);
        let diff = max_abs(&(&got - &want).unwrap());
        eprintln!("f16 bank: max |logit diff| = {diff:e}, max |logit| = {scale}");
        assert!(diff > 0.0, "f16 rounding must show");
        assert!(diff < 1e-3 * scale, "{diff} vs scale {scale}");
        // The same greedy tokens at every position.
        assert_eq!(
            want.argmax(1).unwrap().to_vec1::<u32>().unwrap(),
            got.argmax(1).unwrap().to_vec1::<u32>().unwrap()
        );
    }

    #[test]
    fn rotated_and_empty_banks_round_trip() {
        let dir = TempDir::new("rot");
        let model = Llama::random(&LlamaConfig::tiny(), 9).unwrap();
        let rotated = MemoryBank::build(
            &model,
            &[4, 5, 6, 7, 8],
            &[],
            &MemoryOptions {
                rotate_keys: true,
                ..Default::default()
            },
        )
        .unwrap();
        let p = dir.0.join("r.safetensors");
        rotated
            .save_with(
                &p,
                &model,
                &SaveOptions {
                    dtype: BankDType::F32,
                    ..Default::default()
                },
            )
            .unwrap();
        let back = MemoryBank::load(&p, &model).unwrap();
        same_metadata(&rotated, &back);
        assert!(back.options().unwrap().rotate_keys);
        assert_eq!(
            max_abs(&(rotated.layer(1).unwrap().0 - back.layer(1).unwrap().0).unwrap()),
            0.0
        );
        // Only special tokens: an empty bank.
        let empty = MemoryBank::build(&model, &[0, 0], &[0], &MemoryOptions::default()).unwrap();
        assert!(empty.is_empty());
        let p = dir.0.join("e.safetensors");
        empty.save(&p, &model).unwrap();
        let back = MemoryBank::load(&p, &model).unwrap();
        assert!(back.is_empty());
        assert_eq!(back.layer(0).unwrap().0.dims3().unwrap(), (2, 0, 8));
        // A bank made from tensors has no options.
        let t = Tensor::ones((2, 3, 8), DType::F32, model.device()).unwrap();
        let raw = MemoryBank::from_tensors(
            vec![t.clone(), t.clone()],
            vec![t.clone(), t],
            vec![1, 2, 3],
        )
        .unwrap();
        let p = dir.0.join("t.safetensors");
        raw.save(&p, &model).unwrap();
        let back = MemoryBank::load(&p, &model).unwrap();
        assert_eq!(back.options(), None);
        assert_eq!(back.text(), "");
        assert_eq!(back.span(0), None);
    }

    #[test]
    fn a_bank_of_another_model_is_refused() {
        let dir = TempDir::new("other");
        let cfg = LlamaConfig::tiny();
        let model = Llama::random(&cfg, 1).unwrap();
        let bank = bank_with_text(&model, 20, &MemoryOptions::default());
        let p = dir.0.join("b.safetensors");
        bank.save_with(
            &p,
            &model,
            &SaveOptions {
                model_name: Some("tiny-1".into()),
                ..Default::default()
            },
        )
        .unwrap();
        // Same dimensions, other weights.
        let other = Llama::random(&cfg, 2).unwrap();
        let e = MemoryBank::load(&p, &other).unwrap_err();
        assert!(matches!(e, EmtError::BankModelMismatch { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains(&p.display().to_string())
                && msg.contains("`tiny-1`")
                && msg.contains("weights differ"),
            "{msg}"
        );
        // Other dimensions.
        let wider = Llama::random(
            &LlamaConfig {
                n_layers: 3,
                ..cfg.clone()
            },
            1,
        )
        .unwrap();
        let e = MemoryBank::load(&p, &wider).unwrap_err();
        assert!(matches!(e, EmtError::BankModelMismatch { .. }), "{e}");
        assert!(
            e.to_string().contains("2 layers") && e.to_string().contains("3 layers"),
            "{e}"
        );
        // Saving a bank with a model it does not fit is an error too.
        assert!(bank.save(dir.0.join("x.safetensors"), &wider).is_err());
        // The model that made it still loads it.
        assert!(MemoryBank::load(&p, &model).is_ok());
    }

    #[test]
    fn truncated_corrupt_and_foreign_files_are_typed_errors() {
        let dir = TempDir::new("bad");
        let model = Llama::random(&LlamaConfig::tiny(), 3).unwrap();
        let bank = bank_with_text(&model, 30, &MemoryOptions::default());
        let p = dir.0.join("b.safetensors");
        bank.save(&p, &model).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        let format_err = |data: &[u8], name: &str| -> String {
            let q = dir.0.join(name);
            std::fs::write(&q, data).unwrap();
            match MemoryBank::load(&q, &model) {
                Err(e @ EmtError::BankFormat { .. }) => {
                    let m = e.to_string();
                    assert!(m.contains(&q.display().to_string()), "{m}");
                    m
                }
                other => panic!("{name}: expected BankFormat, got {other:?}"),
            }
        };
        // Truncated anywhere: in the length prefix, the header, the data.
        for cut in [0, 5, 8, 40, bytes.len() / 2, bytes.len() - 1] {
            let m = format_err(&bytes[..cut], &format!("cut{cut}.safetensors"));
            assert!(m.contains("truncated or corrupt"), "{m}");
        }
        // One flipped bit in the middle of the tensor data.
        let mut flip = bytes.clone();
        let i = bytes.len() - bytes.len() / 3;
        flip[i] ^= 0x10;
        let m = format_err(&flip, "flip.safetensors");
        assert!(m.contains("is corrupt"), "{m}");
        // Not safetensors at all.
        format_err(b"hello, world, this is not a bank", "text.safetensors");
        // A safetensors file that is not a bank.
        let other = safetensors::serialize(
            [(
                "x",
                &Raw {
                    dtype: Dtype::F32,
                    shape: vec![1],
                    data: vec![0; 4],
                },
            )],
            None,
        )
        .unwrap();
        let m = format_err(&other, "foreign.safetensors");
        assert!(m.contains("not a langevin-emt memory bank"), "{m}");
        // A missing file.
        assert!(matches!(
            MemoryBank::load(dir.0.join("none.safetensors"), &model),
            Err(EmtError::Io { .. })
        ));
    }

    #[test]
    fn checksum_sees_every_word() {
        let base: Vec<u8> = (0..100u32).map(|i| (i * 37 % 251) as u8).collect();
        let h = checksum(&base);
        for i in 0..base.len() {
            let mut b = base.clone();
            b[i] ^= 1;
            assert_ne!(checksum(&b), h, "byte {i}");
        }
        assert_ne!(checksum(&base[..99]), h);
        assert_ne!(checksum(&[]), checksum(&[0]));
    }
}
