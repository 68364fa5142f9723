//! Matrix-vector products straight from GGUF Q4_1 and Q8_0 blocks.
//!
//! A generated token multiplies each weight matrix by one vector, so its cost is reading
//! the weights: ~96 MB per token for SmolLM2-135M in Q4_1/Q8_0 against ~540 MB once
//! dequantized to f32. These kernels read the GGUF blocks as they are and work as
//! llama.cpp's do: the activations are quantized to 8 bits per block of 32 (scale
//! `d = max|x| / 127`, and for Q4_1 the block sum `s = d Σq`), and each block's dot product
//! is an integer dot product scaled once:
//!
//! * Q4_1 (`w = d_w q + m_w`, `q ∈ 0..16`): `Σ w x ≈ d_w d_x Σ q_w q_x + m_w s_x`;
//! * Q8_0 (`w = d_w q`, `q ∈ -127..=127`): `Σ w x ≈ d_w d_x Σ q_w q_x`.
//!
//! The integer dot products run on AVX-512 VNNI (`vpdpbusd`) or AVX2 (`vpmaddubsw`),
//! chosen at run time, with a portable scalar version that defines the result (the SIMD
//! versions agree with it to f32 rounding of the block sums, checked in the tests).
//! The weights are re-laid at load in groups of sixteen rows (see [`QMatrix`]) so that each
//! integer dot product lands in one lane of a register, and groups are split over
//! rayon's pool when more than one thread is set ([`crate::set_threads`]).

use std::sync::OnceLock;

use candle_core::quantized::{GgmlDType, QTensor};
use half::f16;
use rayon::prelude::*;

use crate::error::{EmtError, Result};

/// Values per block (both formats).
pub const QK: usize = 32;

/// The GGUF block formats with a fast kernel here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockFormat {
    /// `{d: f16, m: f16, qs: [u8; 16]}`: value `j` is `d (qs[j] & 15) + m`, value `j + 16`
    /// is `d (qs[j] >> 4) + m`.
    Q4_1,
    /// `{d: f16, qs: [i8; 32]}`: value `j` is `d qs[j]`.
    Q8_0,
}

impl BlockFormat {
    /// Bytes per block of 32 values.
    pub const fn block_bytes(self) -> usize {
        match self {
            BlockFormat::Q4_1 => 20,
            BlockFormat::Q8_0 => 34,
        }
    }

    /// The format of a candle GGML dtype, if it has a kernel here.
    pub fn from_ggml(dtype: GgmlDType) -> Option<Self> {
        match dtype {
            GgmlDType::Q4_1 => Some(BlockFormat::Q4_1),
            GgmlDType::Q8_0 => Some(BlockFormat::Q8_0),
            _ => None,
        }
    }
}

/// The instruction set a kernel uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// Portable Rust (the reference).
    Scalar,
    /// AVX2 + FMA + F16C.
    Avx2,
    /// AVX-512 (F, BW, VNNI) on 512-bit registers, plus FMA and F16C.
    Avx512Vnni,
}

impl Isa {
    /// The best instruction set this CPU has, unless `LANGEVIN_EMT_ISA` (`scalar`, `avx2`,
    /// `avx512`) asks for a lower one. Detected once.
    pub fn detect() -> Isa {
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| {
            let best = Self::available().last().copied().unwrap_or(Isa::Scalar);
            match std::env::var("LANGEVIN_EMT_ISA").as_deref() {
                Ok("scalar") => Isa::Scalar,
                Ok("avx2") if Self::available().contains(&Isa::Avx2) => Isa::Avx2,
                _ => best,
            }
        })
    }

    /// Every instruction set this CPU can run, from the reference up.
    pub fn available() -> Vec<Isa> {
        #[allow(unused_mut)]
        let mut v = vec![Isa::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
            {
                v.push(Isa::Avx2);
                if is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vnni")
                {
                    v.push(Isa::Avx512Vnni);
                }
            }
        }
        v
    }
}

/// Activations quantized to 8 bits per block of 32, row by row: `q[t * cols + i]`, and per
/// block the scale `d`, the integer sum `Σ q` and `s = d Σ q`.
#[derive(Debug, Clone, Default)]
pub struct QuantizedActs {
    cols: usize,
    q: Vec<i8>,
    d: Vec<f32>,
    s: Vec<f32>,
    isum: Vec<i32>,
}

impl QuantizedActs {
    /// Quantize `x` (`rows × cols`, row-major; `cols` a multiple of 32).
    pub fn new(x: &[f32], cols: usize) -> Self {
        let mut a = Self::default();
        a.fill(x, cols);
        a
    }

    /// Quantize `x` into this buffer (reusing its allocations).
    pub fn fill(&mut self, x: &[f32], cols: usize) {
        debug_assert!(cols.is_multiple_of(QK) && x.len().is_multiple_of(cols));
        let nb = x.len() / QK;
        self.cols = cols;
        self.q.resize(x.len(), 0);
        self.d.resize(nb, 0.0);
        self.s.resize(nb, 0.0);
        self.isum.resize(nb, 0);
        for (b, (xs, qs)) in x
            .chunks_exact(QK)
            .zip(self.q.chunks_exact_mut(QK))
            .enumerate()
        {
            let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let mut sum = 0i32;
            for (q, &v) in qs.iter_mut().zip(xs) {
                // Round to nearest (ties to even) by the 1.5·2^23 trick: |v·id| ≤ 127, and
                // it vectorizes where `f32::round` is a libm call.
                const MAGIC: f32 = 12_582_912.0;
                *q = ((v * id + MAGIC) - MAGIC) as i8;
                sum += *q as i32;
            }
            self.d[b] = d;
            self.s[b] = d * sum as f32;
            self.isum[b] = sum;
        }
    }

    fn rows(&self) -> usize {
        self.q.len().checked_div(self.cols).unwrap_or(0)
    }

    fn row(&self, t: usize) -> ActRow<'_> {
        let nb = self.cols / QK;
        ActRow {
            q: &self.q[t * self.cols..(t + 1) * self.cols],
            d: &self.d[t * nb..(t + 1) * nb],
            s: &self.s[t * nb..(t + 1) * nb],
            isum: &self.isum[t * nb..(t + 1) * nb],
        }
    }
}

#[derive(Clone, Copy)]
struct ActRow<'a> {
    q: &'a [i8],
    d: &'a [f32],
    s: &'a [f32],
    isum: &'a [i32],
}

/// Rows per interleaved group.
const G: usize = 16;

/// A weight matrix `[rows, cols]` of GGUF blocks, re-laid at load in groups of sixteen
/// rows (the last group padded with zero rows) so that one 512-bit register holds the
/// same four columns of sixteen rows: a group's block `b` is its sixteen `d` (f16), for
/// Q4_1 its sixteen `m`, then the quants as 64-byte vectors whose 4-byte lane `i` belongs
/// to row `i` (Q4_1: 4 vectors of packed nibbles, vector `v` lane `i` = `qs[4v..4v+4]` of
/// row `i`; Q8_0: 8 vectors of `qs[4v..4v+4]`). Same bytes as the GGUF, reordered; the
/// integer dot products then land in lane `i` of an accumulator without horizontal sums
/// (AVX2 takes each vector as two 256-bit halves, rows 0..8 and 8..16).
#[derive(Debug, Clone)]
pub struct QMatrix {
    format: BlockFormat,
    rows: usize,
    cols: usize,
    data: Vec<u8>,
}

/// Byte offsets inside one group-block.
const fn group_block_bytes(format: BlockFormat) -> usize {
    G * format.block_bytes()
}

const fn quants_offset(format: BlockFormat) -> usize {
    match format {
        BlockFormat::Q4_1 => 4 * G,
        BlockFormat::Q8_0 => 2 * G,
    }
}

impl QMatrix {
    /// Take a candle quantized tensor `[rows, cols]` of a supported format; `None` when
    /// the format has no kernel here.
    pub fn from_qtensor(q: &QTensor) -> Result<Option<Self>> {
        let Some(format) = BlockFormat::from_ggml(q.dtype()) else {
            return Ok(None);
        };
        let (rows, cols) = q.shape().dims2()?;
        let data = q.data()?;
        Self::from_blocks(format, rows, cols, &data).map(Some)
    }

    /// Build from GGUF block bytes (row-major, `cols / 32` blocks per row).
    pub fn from_blocks(format: BlockFormat, rows: usize, cols: usize, data: &[u8]) -> Result<Self> {
        if !cols.is_multiple_of(QK) || cols == 0 {
            return Err(EmtError::InvalidModel(format!(
                "{format:?} matrix with {cols} columns (not a positive multiple of {QK})"
            )));
        }
        let bb = format.block_bytes();
        let nb = cols / QK;
        let want = rows * nb * bb;
        if data.len() != want {
            return Err(EmtError::InvalidModel(format!(
                "{format:?} matrix [{rows}, {cols}] has {} bytes, expected {want}",
                data.len()
            )));
        }
        let groups = rows.div_ceil(G);
        let gbb = group_block_bytes(format);
        let qo = quants_offset(format);
        let mut out = vec![0u8; groups * nb * gbb];
        for r in 0..rows {
            let (g, i) = (r / G, r % G);
            for b in 0..nb {
                let src = &data[(r * nb + b) * bb..(r * nb + b + 1) * bb];
                let dst = &mut out[(g * nb + b) * gbb..(g * nb + b + 1) * gbb];
                dst[2 * i..2 * i + 2].copy_from_slice(&src[0..2]);
                let qs = match format {
                    BlockFormat::Q4_1 => {
                        dst[2 * G + 2 * i..2 * G + 2 * i + 2].copy_from_slice(&src[2..4]);
                        &src[4..20]
                    }
                    BlockFormat::Q8_0 => &src[2..34],
                };
                for (v, four) in qs.chunks_exact(4).enumerate() {
                    let o = qo + 4 * G * v + 4 * i;
                    dst[o..o + 4].copy_from_slice(four);
                }
            }
        }
        Ok(Self {
            format,
            rows,
            cols,
            data: out,
        })
    }

    /// Quantize an f32 matrix (row-major) to `format` (as GGML does), for tests and
    /// benchmarks.
    pub fn quantize(format: BlockFormat, rows: usize, cols: usize, w: &[f32]) -> Result<Self> {
        let dtype = match format {
            BlockFormat::Q4_1 => GgmlDType::Q4_1,
            BlockFormat::Q8_0 => GgmlDType::Q8_0,
        };
        let t = candle_core::Tensor::from_slice(w, (rows, cols), &candle_core::Device::Cpu)?;
        let q = QTensor::quantize(&t, dtype)?;
        Self::from_qtensor(&q)?.ok_or_else(|| EmtError::InvalidModel("unsupported".into()))
    }

    /// Rows (outputs).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns (inputs).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The block format.
    pub fn format(&self) -> BlockFormat {
        self.format
    }

    /// Bytes of weights read per product with one vector.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Row `r`'s block `b`: `(d, m, the 32 integer quants)` (`m = 0` for Q8_0).
    fn block(&self, r: usize, b: usize) -> (f32, f32, [i32; QK]) {
        let nb = self.cols / QK;
        let (g, i) = (r / G, r % G);
        let gbb = group_block_bytes(self.format);
        let blk = &self.data[(g * nb + b) * gbb..(g * nb + b + 1) * gbb];
        let d = f16::from_le_bytes([blk[2 * i], blk[2 * i + 1]]).to_f32();
        let qo = quants_offset(self.format);
        let mut q = [0i32; QK];
        match self.format {
            BlockFormat::Q4_1 => {
                let m = f16::from_le_bytes([blk[2 * G + 2 * i], blk[2 * G + 2 * i + 1]]).to_f32();
                for v in 0..4 {
                    for c in 0..4 {
                        let byte = blk[qo + 4 * G * v + 4 * i + c];
                        q[4 * v + c] = (byte & 15) as i32;
                        q[16 + 4 * v + c] = (byte >> 4) as i32;
                    }
                }
                (d, m, q)
            }
            BlockFormat::Q8_0 => {
                for v in 0..8 {
                    for c in 0..4 {
                        q[4 * v + c] = (blk[qo + 4 * G * v + 4 * i + c] as i8) as i32;
                    }
                }
                (d, 0.0, q)
            }
        }
    }

    /// The weights as f32 (row-major).
    pub fn dequantize(&self) -> Vec<f32> {
        let nb = self.cols / QK;
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for r in 0..self.rows {
            for b in 0..nb {
                let (d, m, q) = self.block(r, b);
                out.extend(q.iter().map(|&v| d * v as f32 + m));
            }
        }
        out
    }

    /// `y[t * rows + r] = Σ_i W[r, i] x[t * cols + i]` for every row `t` of the
    /// quantized activations, with the best instruction set and the global thread pool.
    pub fn matmul(&self, a: &QuantizedActs) -> Result<Vec<f32>> {
        self.matmul_with(a, Isa::detect(), rayon::current_num_threads())
    }

    /// [`QMatrix::matmul`] with a given instruction set and thread count (1 = no rayon).
    pub fn matmul_with(&self, a: &QuantizedActs, isa: Isa, threads: usize) -> Result<Vec<f32>> {
        if a.cols != self.cols {
            return Err(EmtError::DimensionMismatch {
                expected: format!("{} inputs", self.cols),
                got: format!("{}", a.cols),
            });
        }
        if !Isa::available().contains(&isa) {
            return Err(EmtError::InvalidConfig {
                field: "isa",
                reason: format!("{isa:?} is not available on this CPU"),
            });
        }
        let n_t = a.rows();
        let nb = self.cols / QK;
        let groups = self.rows.div_ceil(G);
        let group_bytes = nb * group_block_bytes(self.format);
        // Output by group: [groups][T][8], so that each thread writes one contiguous piece;
        // reordered to [T][rows] at the end.
        let mut out = vec![0f32; groups * n_t * G];
        let work = |g0: usize, chunk: &mut [f32]| {
            let ng = chunk.len() / (n_t * G);
            for gi in 0..ng {
                let g = g0 + gi;
                let w = &self.data[g * group_bytes..(g + 1) * group_bytes];
                for t in 0..n_t {
                    let y = group_dot(self, isa, g, w, a.row(t));
                    chunk[(gi * n_t + t) * G..(gi * n_t + t + 1) * G].copy_from_slice(&y);
                }
            }
        };
        // A few pieces per thread for balance, at least 4 groups each.
        let piece = groups.div_ceil(threads.max(1) * 4).max(4);
        if threads <= 1 || piece >= groups {
            work(0, &mut out);
        } else {
            out.par_chunks_mut(piece * n_t * G)
                .enumerate()
                .for_each(|(i, chunk)| work(i * piece, chunk));
        }
        if n_t == 1 {
            // [groups][1][8] is already row order.
            out.truncate(self.rows);
            return Ok(out);
        }
        let mut y = vec![0f32; self.rows * n_t];
        for g in 0..groups {
            for t in 0..n_t {
                for i in 0..G.min(self.rows - g * G) {
                    y[t * self.rows + g * G + i] = out[(g * n_t + t) * G + i];
                }
            }
        }
        Ok(y)
    }
}

/// The eight dot products of group `g` (weights `w`) with one activation row.
#[inline]
fn group_dot(m: &QMatrix, isa: Isa, g: usize, w: &[u8], a: ActRow<'_>) -> [f32; G] {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa` is only ever a value `Isa::available()` returned on this CPU
        // (checked in `matmul_with`), so the target features are present; `w` is one
        // whole group (`nb` group-blocks) and `a` has `nb` blocks (checked below).
        Isa::Avx2 | Isa::Avx512Vnni => unsafe {
            let nb = a.d.len();
            assert!(w.len() == nb * group_block_bytes(m.format) && a.q.len() == nb * QK);
            match (m.format, isa) {
                (BlockFormat::Q4_1, Isa::Avx512Vnni) => x86::q4_1_vnni(w, a),
                (BlockFormat::Q4_1, _) => x86::q4_1_avx2(w, a),
                (BlockFormat::Q8_0, Isa::Avx512Vnni) => x86::q8_0_vnni(w, a),
                (BlockFormat::Q8_0, _) => x86::q8_0_avx2(w, a),
            }
        },
        _ => {
            let _ = w;
            std::array::from_fn(|i| {
                let r = g * G + i;
                if r < m.rows {
                    scalar_dot(m, r, a)
                } else {
                    0.0
                }
            })
        }
    }
}

/// The reference: `Σ_b d_w d_x Σ q_w q_x + m_w s_x` in plain Rust.
fn scalar_dot(m: &QMatrix, r: usize, a: ActRow<'_>) -> f32 {
    let mut sum = 0f32;
    for b in 0..a.d.len() {
        let (d, mw, q) = m.block(r, b);
        let si: i32 = q
            .iter()
            .zip(&a.q[b * QK..(b + 1) * QK])
            .map(|(&w, &x)| w * x as i32)
            .sum();
        sum += d * a.d[b] * si as f32 + mw * a.s[b];
    }
    sum
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{ActRow, G, QK};
    use std::arch::x86_64::*;

    #[inline(always)]
    unsafe fn bcast4(p: *const i8) -> __m256i {
        _mm256_set1_epi32((p as *const i32).read_unaligned())
    }

    /// Ask for `lines` cache lines of weights `PREFETCH` bytes ahead (the next
    /// group-blocks): one core's sequential stream alone does not keep enough reads in
    /// flight.
    #[inline(always)]
    unsafe fn prefetch(p: *const u8, lines: usize) {
        const PREFETCH: usize = 2048;
        for i in 0..lines {
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH + 64 * i) as *const i8);
        }
    }

    #[inline(always)]
    unsafe fn store2(lo: __m256, hi: __m256) -> [f32; G] {
        let mut y = [0f32; G];
        _mm256_storeu_ps(y.as_mut_ptr(), lo);
        _mm256_storeu_ps(y.as_mut_ptr().add(8), hi);
        y
    }

    const Q4_1_GB: usize = 20 * G;
    const Q8_0_GB: usize = 34 * G;

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c,fma")]
    pub(super) unsafe fn q4_1_vnni(w: &[u8], a: ActRow<'_>) -> [f32; G] {
        let mask = _mm512_set1_epi8(15);
        let (mut acc, mut accm) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let mut p = w.as_ptr();
        let aq = a.q.as_ptr();
        for b in 0..a.d.len() {
            prefetch(p, 6);
            let dv = _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i));
            let mv = _mm512_cvtph_ps(_mm256_loadu_si256(p.add(32) as *const __m256i));
            let ab = aq.add(b * QK);
            let mut sumi = _mm512_setzero_si512();
            for v in 0..4 {
                let wv = _mm512_loadu_si512(p.add(64 + 64 * v) as *const _);
                let lo = _mm512_and_si512(wv, mask);
                let hi = _mm512_and_si512(_mm512_srli_epi16(wv, 4), mask);
                let a_lo = _mm512_set1_epi32((ab.add(4 * v) as *const i32).read_unaligned());
                let a_hi = _mm512_set1_epi32((ab.add(16 + 4 * v) as *const i32).read_unaligned());
                sumi = _mm512_dpbusd_epi32(sumi, lo, a_lo);
                sumi = _mm512_dpbusd_epi32(sumi, hi, a_hi);
            }
            let scale = _mm512_mul_ps(dv, _mm512_set1_ps(*a.d.get_unchecked(b)));
            acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi), scale, acc);
            accm = _mm512_fmadd_ps(mv, _mm512_set1_ps(*a.s.get_unchecked(b)), accm);
            p = p.add(Q4_1_GB);
        }
        let mut y = [0f32; G];
        _mm512_storeu_ps(y.as_mut_ptr(), _mm512_add_ps(acc, accm));
        y
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q4_1_avx2(w: &[u8], a: ActRow<'_>) -> [f32; G] {
        let mask = _mm256_set1_epi8(15);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); 2];
        let mut accm = [_mm256_setzero_ps(); 2];
        let mut p = w.as_ptr();
        let aq = a.q.as_ptr();
        for b in 0..a.d.len() {
            prefetch(p, 6);
            let ab = aq.add(b * QK);
            let (da, sa) = (*a.d.get_unchecked(b), *a.s.get_unchecked(b));
            for half in 0..2 {
                let dv = _mm256_cvtph_ps(_mm_loadu_si128(p.add(16 * half) as *const __m128i));
                let mv = _mm256_cvtph_ps(_mm_loadu_si128(p.add(32 + 16 * half) as *const __m128i));
                // Eight pair sums of at most 2·15·127 each: their i16 total stays below 2^15.
                let mut s16 = _mm256_setzero_si256();
                for v in 0..4 {
                    let wv = _mm256_loadu_si256(p.add(64 + 64 * v + 32 * half) as *const __m256i);
                    let lo = _mm256_and_si256(wv, mask);
                    let hi = _mm256_and_si256(_mm256_srli_epi16(wv, 4), mask);
                    s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(lo, bcast4(ab.add(4 * v))));
                    s16 =
                        _mm256_add_epi16(s16, _mm256_maddubs_epi16(hi, bcast4(ab.add(16 + 4 * v))));
                }
                let sumi = _mm256_madd_epi16(s16, ones);
                let scale = _mm256_mul_ps(dv, _mm256_set1_ps(da));
                acc[half] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), scale, acc[half]);
                accm[half] = _mm256_fmadd_ps(mv, _mm256_set1_ps(sa), accm[half]);
            }
            p = p.add(Q4_1_GB);
        }
        store2(
            _mm256_add_ps(acc[0], accm[0]),
            _mm256_add_ps(acc[1], accm[1]),
        )
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c,fma")]
    pub(super) unsafe fn q8_0_vnni(w: &[u8], a: ActRow<'_>) -> [f32; G] {
        // (w + 128) as u8 times x, minus 128 Σx: vpdpbusd needs an unsigned operand.
        let flip = _mm512_set1_epi8(-128);
        let mut acc = _mm512_setzero_ps();
        let mut p = w.as_ptr();
        let aq = a.q.as_ptr();
        for b in 0..a.d.len() {
            prefetch(p, 8);
            let dv = _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i));
            let ab = aq.add(b * QK);
            let mut sumi = _mm512_set1_epi32(-128 * *a.isum.get_unchecked(b));
            for v in 0..8 {
                let wv = _mm512_loadu_si512(p.add(32 + 64 * v) as *const _);
                let av = _mm512_set1_epi32((ab.add(4 * v) as *const i32).read_unaligned());
                sumi = _mm512_dpbusd_epi32(sumi, _mm512_xor_si512(wv, flip), av);
            }
            let scale = _mm512_mul_ps(dv, _mm512_set1_ps(*a.d.get_unchecked(b)));
            acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi), scale, acc);
            p = p.add(Q8_0_GB);
        }
        let mut y = [0f32; G];
        _mm512_storeu_ps(y.as_mut_ptr(), acc);
        y
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q8_0_avx2(w: &[u8], a: ActRow<'_>) -> [f32; G] {
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); 2];
        let mut p = w.as_ptr();
        let aq = a.q.as_ptr();
        for b in 0..a.d.len() {
            prefetch(p, 8);
            let ab = aq.add(b * QK);
            let da = *a.d.get_unchecked(b);
            for (half, acc) in acc.iter_mut().enumerate() {
                let dv = _mm256_cvtph_ps(_mm_loadu_si128(p.add(16 * half) as *const __m128i));
                let mut sumi = _mm256_setzero_si256();
                for v in 0..8 {
                    let wv = _mm256_loadu_si256(p.add(32 + 64 * v + 32 * half) as *const __m256i);
                    // |w| times x with w's sign; a pair sum is at most 2·127·127 < 2^15.
                    let u = _mm256_sign_epi8(wv, wv);
                    let s = _mm256_sign_epi8(bcast4(ab.add(4 * v)), wv);
                    sumi =
                        _mm256_add_epi32(sumi, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), ones));
                }
                let scale = _mm256_mul_ps(dv, _mm256_set1_ps(da));
                *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), scale, *acc);
            }
            p = p.add(Q8_0_GB);
        }
        store2(acc[0], acc[1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    /// Every instruction set gives the scalar reference's result up to f32 rounding of
    /// the per-block sums (the integer block dot products are exact in all of them), for
    /// 1 and 3 activation rows, row counts that are and are not multiples of 4, 1 and 2
    /// threads.
    #[test]
    fn simd_kernels_equal_the_scalar_reference() {
        for format in [BlockFormat::Q4_1, BlockFormat::Q8_0] {
            for (rows, cols, n_t) in [(37, 64, 1), (64, 576, 3), (130, 1536, 1)] {
                let w = QMatrix::quantize(format, rows, cols, &random(rows * cols, 1)).unwrap();
                let a = QuantizedActs::new(&random(n_t * cols, 2), cols);
                let reference = w.matmul_with(&a, Isa::Scalar, 1).unwrap();
                for isa in Isa::available() {
                    for threads in [1, 2] {
                        let y = w.matmul_with(&a, isa, threads).unwrap();
                        for (i, (u, v)) in y.iter().zip(&reference).enumerate() {
                            let tol = 1e-5 * (1.0 + v.abs()) * (cols as f32 / 32.0).sqrt();
                            assert!(
                                (u - v).abs() <= tol,
                                "{format:?} {isa:?} {threads} threads [{rows}x{cols}] t={n_t} \
                                 entry {i}: {u} vs {v}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Against the exact product with the dequantized weights and f32 activations: the
    /// only error is the 8-bit activation rounding, |δx| ≤ d/2 = max|x|/254 per entry, so
    /// |δy| ≤ Σ|w| max|x_block|/254; the test allows that bound.
    #[test]
    fn products_match_dequantized_weights_within_the_activation_rounding_bound() {
        for format in [BlockFormat::Q4_1, BlockFormat::Q8_0] {
            let (rows, cols) = (48, 256);
            let w = QMatrix::quantize(format, rows, cols, &random(rows * cols, 3)).unwrap();
            let wf = w.dequantize();
            let x = random(2 * cols, 4);
            let y = w.matmul(&QuantizedActs::new(&x, cols)).unwrap();
            for t in 0..2 {
                let xt = &x[t * cols..(t + 1) * cols];
                for r in 0..rows {
                    let wr = &wf[r * cols..(r + 1) * cols];
                    let exact: f32 = wr.iter().zip(xt).map(|(a, b)| a * b).sum();
                    let bound: f32 = wr
                        .chunks(QK)
                        .zip(xt.chunks(QK))
                        .map(|(wb, xb)| {
                            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
                            wb.iter().map(|v| v.abs()).sum::<f32>() * amax / 254.0
                        })
                        .sum();
                    let got = y[t * rows + r];
                    assert!(
                        (got - exact).abs() <= bound + 1e-5,
                        "{format:?} t={t} r={r}: {got} vs {exact} (bound {bound})"
                    );
                }
            }
        }
    }

    #[test]
    fn q4_1_dequantization_follows_the_ggml_layout() {
        // One block: d = 0.5, m = -1, nibbles j (low) and 15 - j (high).
        let mut blk = Vec::new();
        blk.extend_from_slice(&f16::from_f32(0.5).to_le_bytes());
        blk.extend_from_slice(&f16::from_f32(-1.0).to_le_bytes());
        blk.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let w = QMatrix::from_blocks(BlockFormat::Q4_1, 1, 32, &blk).unwrap();
        let v = w.dequantize();
        for j in 0..16 {
            assert_eq!(v[j], 0.5 * j as f32 - 1.0);
            assert_eq!(v[j + 16], 0.5 * (15 - j) as f32 - 1.0);
        }
    }

    #[test]
    fn malformed_blocks_and_shapes_are_errors() {
        assert!(QMatrix::from_blocks(BlockFormat::Q4_1, 2, 40, &[0; 50]).is_err());
        assert!(QMatrix::from_blocks(BlockFormat::Q8_0, 2, 32, &[0; 67]).is_err());
        let w = QMatrix::quantize(BlockFormat::Q8_0, 4, 64, &random(256, 5)).unwrap();
        assert!(w.matmul(&QuantizedActs::new(&random(32, 6), 32)).is_err());
    }
}
