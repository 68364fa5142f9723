//! The Extended Mind attention kernel for one layer (batch size 1).
//!
//! For query head `h` at local position `t` (rotated query `q`), with local keys
//! `k_0..k_S` (rotated, causal: key `j` visible iff `j <= offset + t`) and a bank of
//! memories `(m_j, u_j)` (keys never rotated, so they behave as position 0):
//!
//! 1. retrieval: `R(h, t)` = the `top_k` memories with the largest cosine similarity
//!    `cos(q, m_j)` (exact top-k; memory K/V of kv-head `h / (H / H_kv)`, as in GQA);
//!    with a threshold τ, retrieved memories with `cos <= τ` are masked out;
//! 2. scores: `s_j = q·m_j / √d` for `j ∈ R(h, t)` and `q·k_j / √d` for the visible local keys;
//! 3. one joint softmax over `[R(h, t) ⊕ local]`, output `Σ p_j u_j + Σ p_j v_j`.
//!
//! Each query attends only to its own memories. With no memories this is exactly
//! causal scaled dot-product attention. Reference: Klett & Ahle, "Extended Mind
//! Transformers" (2024), normal-computing/extended-mind-transformers.

use candle_core::{DType, Device, Tensor};

use crate::error::{EmtError, Result};

/// The memories of one layer, as the kernel needs them.
#[derive(Debug, Clone)]
pub struct LayerMemory<'a> {
    /// `[H_kv, M, d]` memory keys (unrotated).
    pub keys: &'a Tensor,
    /// `[H_kv, M, d]` memory keys scaled to unit norm (for cosine similarity).
    pub keys_unit: &'a Tensor,
    /// `[H_kv, M, d]` memory values.
    pub values: &'a Tensor,
    /// Memories per query and head.
    pub top_k: usize,
    /// Optional cosine similarity threshold.
    pub sim_threshold: Option<f32>,
}

/// Which memories each (head, query) retrieved.
#[derive(Debug, Clone, PartialEq)]
pub struct Retrieved {
    pub n_heads: usize,
    pub n_queries: usize,
    /// Effective k (`min(top_k, M)`).
    pub k: usize,
    /// `[H, T, k]` memory indices, best first.
    pub indices: Vec<u32>,
    /// `[H, T, k]` cosine similarities.
    pub sims: Vec<f32>,
    /// `[H, T, k]`: false where the threshold masked the memory out.
    pub used: Vec<bool>,
}

fn unit_rows(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(candle_core::D::Minus1)?.sqrt()?;
    // Guard against zero vectors: they get similarity 0.
    let norm = norm.maximum(1e-12f64)?;
    Ok(x.broadcast_div(&norm)?)
}

/// Scale rows of `[.., d]` to unit L2 norm.
pub fn unit_norm(x: &Tensor) -> Result<Tensor> {
    unit_rows(x)
}

/// Causal mask `[T, S]`: 0 where key `j <= offset + t`, -inf elsewhere.
/// Stacked query rows at most this many per KV head (`rep · T`) take the direct loops of
/// [`small_scores`] and [`small_weighted_values`] (a decoding step: 3 rows for SmolLM2),
/// where gemm's set-up costs more than the arithmetic.
const SMALL_ROWS: usize = 16;

/// A CPU f32 tensor's data and strides (or `None`: another device or dtype).
fn cpu_f32(
    t: &Tensor,
    f: impl FnOnce(&[f32], &[usize]) -> Result<Tensor>,
) -> Result<Option<Tensor>> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        candle_core::Storage::Cpu(candle_core::CpuStorage::F32(data)) => {
            f(&data[layout.start_offset()..], layout.stride()).map(Some)
        }
        _ => Ok(None),
    }
}

/// `q [G, R, d]` times the transpose of `k [G, S, d]` (any strides, unit stride within a
/// row), `[G, R, S]`, by direct loops; `None` if not on the CPU in f32.
fn small_scores(q: &Tensor, k: &Tensor) -> Result<Option<Tensor>> {
    let (g, r, d) = q.dims3()?;
    let s = k.dim(1)?;
    let q = q.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    cpu_f32(k, |kd, ks| {
        if ks[2] != 1 {
            return Err(EmtError::InvalidModel("key rows must be contiguous".into()));
        }
        let mut out = vec![0f32; g * r * s];
        for gi in 0..g {
            for j in 0..s {
                let kr = &kd[gi * ks[0] + j * ks[1]..][..d];
                for ri in 0..r {
                    out[(gi * r + ri) * s + j] = dot(&q[(gi * r + ri) * d..][..d], kr);
                }
            }
        }
        Ok(Tensor::from_vec(out, (g, r, s), &Device::Cpu)?)
    })
}

/// `w [G, R, S]` times `v [G, S, d]` (any strides, unit stride within a row), `[G, R, d]`,
/// by direct loops; `None` if not on the CPU in f32.
fn small_weighted_values(w: &Tensor, v: &Tensor) -> Result<Option<Tensor>> {
    let (g, r, s) = w.dims3()?;
    let d = v.dim(2)?;
    let w = w.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    cpu_f32(v, |vd, vs| {
        if vs[2] != 1 {
            return Err(EmtError::InvalidModel(
                "value rows must be contiguous".into(),
            ));
        }
        let mut out = vec![0f32; g * r * d];
        for gi in 0..g {
            for j in 0..s {
                let vr = &vd[gi * vs[0] + j * vs[1]..][..d];
                for ri in 0..r {
                    let wj = w[(gi * r + ri) * s + j];
                    let o = &mut out[(gi * r + ri) * d..][..d];
                    for (o, &x) in o.iter_mut().zip(vr) {
                        *o += wj * x;
                    }
                }
            }
        }
        Ok(Tensor::from_vec(out, (g, r, d), &Device::Cpu)?)
    })
}

/// Dot product in sixteen interleaved partial sums: vectorizes to one 512-bit or two
/// 256-bit registers where the caller is compiled for them (the order of the sums, hence
/// the result, is the same on every instruction set: Rust never reassociates floats).
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..16 {
            acc[l] += x[l] * y[l];
        }
    }
    fold_lanes(&acc, ta, tb)
}

/// [`dot`] on 512-bit registers: the same products and sums in the same order (separate
/// multiply and add, no FMA), so the same result bit for bit.
///
/// # Safety
/// The CPU must have AVX-512F; `a` and `b` have the same length.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) unsafe fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    debug_assert_eq!(a.len(), b.len());
    let n = a.len() / 16 * 16;
    let mut acc = _mm512_setzero_ps();
    let mut i = 0;
    while i < n {
        // SAFETY: i + 16 <= n <= len of both.
        let (x, y) = unsafe {
            (
                _mm512_loadu_ps(a.as_ptr().add(i)),
                _mm512_loadu_ps(b.as_ptr().add(i)),
            )
        };
        acc = _mm512_add_ps(acc, _mm512_mul_ps(x, y));
        i += 16;
    }
    let mut lanes = [0f32; 16];
    // SAFETY: `lanes` holds 16 f32.
    unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), acc) };
    fold_lanes(&lanes, &a[n..], &b[n..])
}

/// [`dot`] on 256-bit registers (lanes 0..8 and 8..16 in two), same result bit for bit.
///
/// # Safety
/// The CPU must have AVX2; `a` and `b` have the same length.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
pub(crate) unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    debug_assert_eq!(a.len(), b.len());
    let n = a.len() / 16 * 16;
    let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    while i < n {
        // SAFETY: i + 16 <= n <= len of both.
        unsafe {
            let (pa, pb) = (a.as_ptr().add(i), b.as_ptr().add(i));
            lo = _mm256_add_ps(lo, _mm256_mul_ps(_mm256_loadu_ps(pa), _mm256_loadu_ps(pb)));
            hi = _mm256_add_ps(
                hi,
                _mm256_mul_ps(_mm256_loadu_ps(pa.add(8)), _mm256_loadu_ps(pb.add(8))),
            );
        }
        i += 16;
    }
    let mut lanes = [0f32; 16];
    // SAFETY: `lanes` holds 16 f32.
    unsafe {
        _mm256_storeu_ps(lanes.as_mut_ptr(), lo);
        _mm256_storeu_ps(lanes.as_mut_ptr().add(8), hi);
    }
    fold_lanes(&lanes, &a[n..], &b[n..])
}

/// The end of [`dot`]: sixteen partial sums and the tail, in its order.
#[inline(always)]
fn fold_lanes(acc: &[f32; 16], ta: &[f32], tb: &[f32]) -> f32 {
    let tail: f32 = ta.iter().zip(tb).map(|(x, y)| x * y).sum();
    let mut h = [0f32; 8];
    for l in 0..8 {
        h[l] = acc[l] + acc[l + 8];
    }
    h.iter().sum::<f32>() + tail
}

/// `[G, R, S] × k^T` and `[G, R, S] × v` for the local attention: direct loops for small
/// `R`, candle's matmul otherwise.
fn local_scores(qg: &Tensor, k: &Tensor) -> Result<Tensor> {
    if qg.dim(1)? <= SMALL_ROWS {
        if let Some(t) = small_scores(qg, k)? {
            return Ok(t);
        }
    }
    Ok(qg.matmul(&k.t()?)?)
}

fn local_values(w: &Tensor, v: &Tensor) -> Result<Tensor> {
    if w.dim(1)? <= SMALL_ROWS {
        if let Some(t) = small_weighted_values(w, v)? {
            return Ok(t);
        }
    }
    Ok(w.matmul(v)?)
}

fn causal_mask(t: usize, s: usize, offset: usize, device: &Device) -> Result<Tensor> {
    let mut m = vec![0f32; t * s];
    for i in 0..t {
        for j in (offset + i + 1)..s {
            m[i * s + j] = f32::NEG_INFINITY;
        }
    }
    Ok(Tensor::from_vec(m, (t, s), device)?)
}

/// The key of `x` in IEEE 754 total order (as [`f32::total_cmp`]): `a.total_cmp(&b)`
/// equals `order_key(a).cmp(&order_key(b))`.
#[inline(always)]
fn order_key(x: f32) -> i32 {
    let b = x.to_bits() as i32;
    b ^ (((b >> 31) as u32) >> 1) as i32
}

static PLAIN_RETRIEVAL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Retrieve as this kernel did before the SIMD similarity kernel and the scanning top-k
/// (candle's matrix product, then an index vector, `select_nth_unstable_by` and a sort):
/// the same memories (ties aside, similarities agree to rounding), slower. For
/// measurements (`examples/bank_scaling.rs`) and as a cross-check; process-wide.
pub fn set_plain_retrieval(on: bool) {
    PLAIN_RETRIEVAL.store(on, std::sync::atomic::Ordering::Relaxed);
}

fn plain_retrieval() -> bool {
    PLAIN_RETRIEVAL.load(std::sync::atomic::Ordering::Relaxed)
}

/// Largest k for which [`top_k_rows`] scans with a small sorted buffer.
const SCAN_MAX_K: usize = 64;

/// Exact top-k of one row, best first, ties by lower index, into `out` (appended), for
/// small k: one pass keeping the k best in a sorted buffer, skipping whole blocks whose
/// largest key does not beat the current k-th (a vectorised max), so that a row of M
/// costs about one vector compare per element and ~k log(M/k) insertions.
fn top_k_scan(row: &[f32], k: usize, best: &mut Vec<(i32, u32)>, out: &mut Vec<u32>) {
    const BLOCK: usize = 64;
    best.clear();
    let mut thresh = i32::MIN;
    let mut full = false;
    for (b, block) in row.chunks(BLOCK).enumerate() {
        if full
            && block
                .iter()
                .map(|&x| order_key(x))
                .max()
                .unwrap_or(i32::MIN)
                <= thresh
        {
            continue;
        }
        for (i, &x) in block.iter().enumerate() {
            let key = order_key(x);
            if full && key <= thresh {
                continue;
            }
            // After the equal keys already held (they have lower indices).
            let pos = best
                .iter()
                .position(|&(bk, _)| bk < key)
                .unwrap_or(best.len());
            best.insert(pos, (key, (b * BLOCK + i) as u32));
            if best.len() > k {
                best.pop();
            }
            if best.len() == k {
                full = true;
                thresh = best[k - 1].0;
            }
        }
    }
    out.extend(best.iter().map(|&(_, j)| j));
}

/// Exact top-k of each row of `sims` (`rows x m`), best first; ties by lower index.
/// Rows run in parallel (rayon) when there is enough work.
pub fn top_k_rows(sims: &[f32], m: usize, k: usize) -> Vec<u32> {
    use rayon::prelude::*;
    let rows = sims.len().checked_div(m).unwrap_or(0);
    let k = k.min(m);
    let mut out = vec![0u32; rows * k];
    if k == 0 {
        return out;
    }
    let one = |row: &[f32], dst: &mut [u32]| {
        let mut v = Vec::with_capacity(k);
        if k <= SCAN_MAX_K && !plain_retrieval() {
            let mut best = Vec::with_capacity(k + 1);
            top_k_scan(row, k, &mut best, &mut v);
        } else {
            let mut idx: Vec<u32> = (0..m as u32).collect();
            let cmp =
                |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b));
            if k < m {
                idx.select_nth_unstable_by(k - 1, cmp);
                idx.truncate(k);
            }
            idx.sort_by(cmp);
            v.extend_from_slice(&idx[..k]);
        }
        dst.copy_from_slice(&v);
    };
    if rows * m >= 1 << 15 && rows > 1 && rayon::current_num_threads() > 1 {
        out.par_chunks_mut(k)
            .zip(sims.par_chunks(m))
            .for_each(|(dst, row)| one(row, dst));
    } else {
        for (dst, row) in out.chunks_mut(k).zip(sims.chunks(m)) {
            one(row, dst);
        }
    }
    out
}

/// Cosine similarities of unit queries `qn` `[H_kv, R, d]` with unit memory keys
/// `[H_kv, M, d]`: `[H_kv, R, M]`, flattened.
///
/// A generated token has R = 3 queries per kv head against the whole bank, so this is a
/// stream over the bank's unit keys (23 KB per memory per token for SmolLM2-135M): on
/// x86 with AVX-512 or AVX2+FMA a hand-written kernel reads them at 2-4x the rate of
/// candle's matrix product for these shapes (`examples/bank_scaling.rs`); elsewhere, or
/// for other dtypes and head sizes, the matrix product.
pub fn similarities(qn: &Tensor, keys_unit: &Tensor) -> Result<Vec<f32>> {
    #[cfg(target_arch = "x86_64")]
    if !plain_retrieval() {
        if let Some(v) = simd::similarities(qn, keys_unit)? {
            return Ok(v);
        }
    }
    Ok(qn
        .matmul(&keys_unit.contiguous()?.t()?)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?)
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use candle_core::{DType, Storage, Tensor};
    use rayon::prelude::*;

    use crate::error::Result;

    #[derive(Clone, Copy)]
    enum Isa {
        Avx512,
        Avx2,
    }

    fn isa(d: usize) -> Option<Isa> {
        if d.is_multiple_of(16) && is_x86_feature_detected!("avx512f") {
            Some(Isa::Avx512)
        } else if d.is_multiple_of(8)
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
        {
            Some(Isa::Avx2)
        } else {
            None
        }
    }

    /// `None` when the kernel does not apply (no SIMD, another dtype or device, a head
    /// size that is not a multiple of the vector width).
    pub(super) fn similarities(qn: &Tensor, keys_unit: &Tensor) -> Result<Option<Vec<f32>>> {
        let (h_kv, rows, d) = qn.dims3()?;
        let (_, m, _) = keys_unit.dims3()?;
        let Some(isa) = isa(d) else { return Ok(None) };
        if qn.dtype() != DType::F32
            || keys_unit.dtype() != DType::F32
            || !keys_unit.device().is_cpu()
        {
            return Ok(None);
        }
        let q = qn.flatten_all()?.to_vec1::<f32>()?;
        let keys = keys_unit.contiguous()?;
        let (storage, layout) = keys.storage_and_layout();
        let (Storage::Cpu(cpu), Some((start, end))) = (&*storage, layout.contiguous_offsets())
        else {
            return Ok(None);
        };
        let u = &cpu.as_slice::<f32>()?[start..end];
        let mut out = vec![0f32; h_kv * rows * m];
        if m == 0 || rows == 0 {
            return Ok(Some(out));
        }
        let head = |(h, o): (usize, &mut [f32])| {
            let (qh, uh) = (
                &q[h * rows * d..(h + 1) * rows * d],
                &u[h * m * d..(h + 1) * m * d],
            );
            // SAFETY: `isa` checked the CPU features the kernels are compiled for; the
            // slices have the lengths the kernels index (rows x d, m x d, rows x m).
            unsafe {
                match isa {
                    Isa::Avx512 => dots_avx512(qh, rows, uh, d, o),
                    Isa::Avx2 => dots_avx2(qh, rows, uh, d, o),
                }
            }
        };
        if h_kv > 1 && m * rows >= 1 << 15 && rayon::current_num_threads() > 1 {
            out.par_chunks_mut(rows * m).enumerate().for_each(head);
        } else {
            out.chunks_mut(rows * m).enumerate().for_each(head);
        }
        Ok(Some(out))
    }

    /// `out[r * m + j] = q[r] · u[j]` (rows of `d`, `d` a multiple of 16).
    #[target_feature(enable = "avx512f")]
    unsafe fn dots_avx512(q: &[f32], rows: usize, u: &[f32], d: usize, out: &mut [f32]) {
        use std::arch::x86_64::*;
        let m = u.len() / d;
        debug_assert!(q.len() == rows * d && out.len() == rows * m && d.is_multiple_of(16));
        let (qp, up, op) = (q.as_ptr(), u.as_ptr(), out.as_mut_ptr());
        for j in 0..m {
            let p = up.add(j * d);
            for r in 0..rows {
                let qr = qp.add(r * d);
                let mut acc = _mm512_mul_ps(_mm512_loadu_ps(p), _mm512_loadu_ps(qr));
                for c in (16..d).step_by(16) {
                    acc =
                        _mm512_fmadd_ps(_mm512_loadu_ps(p.add(c)), _mm512_loadu_ps(qr.add(c)), acc);
                }
                *op.add(r * m + j) = _mm512_reduce_add_ps(acc);
            }
        }
    }

    /// As [`dots_avx512`] with 8-wide AVX2 vectors (`d` a multiple of 8).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dots_avx2(q: &[f32], rows: usize, u: &[f32], d: usize, out: &mut [f32]) {
        use std::arch::x86_64::*;
        let m = u.len() / d;
        debug_assert!(q.len() == rows * d && out.len() == rows * m && d.is_multiple_of(8));
        let (qp, up, op) = (q.as_ptr(), u.as_ptr(), out.as_mut_ptr());
        for j in 0..m {
            let p = up.add(j * d);
            for r in 0..rows {
                let qr = qp.add(r * d);
                let mut acc = _mm256_mul_ps(_mm256_loadu_ps(p), _mm256_loadu_ps(qr));
                for c in (8..d).step_by(8) {
                    acc =
                        _mm256_fmadd_ps(_mm256_loadu_ps(p.add(c)), _mm256_loadu_ps(qr.add(c)), acc);
                }
                let s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
                let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
                let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
                *op.add(r * m + j) = _mm_cvtss_f32(s);
            }
        }
    }
}

/// Where the memory part of [`emt_attention`] spends its time, for profiling: off by
/// default (then it costs one relaxed atomic load per call). Counters are global and
/// summed over calls and threads.
pub mod profile {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::Instant;

    static ON: AtomicBool = AtomicBool::new(false);
    static SIMS: AtomicU64 = AtomicU64::new(0);
    static TOP_K: AtomicU64 = AtomicU64::new(0);
    static REST: AtomicU64 = AtomicU64::new(0);
    static CALLS: AtomicU64 = AtomicU64::new(0);

    /// Time spent since the last [`take`], in nanoseconds.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct Profile {
        /// Cosine similarities of every query with every memory (one matrix product
        /// per kv head) and their copy out of the tensor.
        pub similarity_ns: u64,
        /// Exact top-k selection.
        pub top_k_ns: u64,
        /// Gathering the retrieved keys/values, their scores, the joint softmax and the
        /// weighted sum of memory and local values.
        pub rest_ns: u64,
        /// Kernel calls with memories.
        pub calls: u64,
    }

    /// Turn the counters on or off.
    pub fn enable(on: bool) {
        ON.store(on, Ordering::Relaxed);
    }

    /// The counters since the last call, which resets them.
    pub fn take() -> Profile {
        Profile {
            similarity_ns: SIMS.swap(0, Ordering::Relaxed),
            top_k_ns: TOP_K.swap(0, Ordering::Relaxed),
            rest_ns: REST.swap(0, Ordering::Relaxed),
            calls: CALLS.swap(0, Ordering::Relaxed),
        }
    }

    pub(super) fn now() -> Option<Instant> {
        ON.load(Ordering::Relaxed).then(Instant::now)
    }

    pub(super) enum Part {
        Similarity,
        TopK,
        Rest,
    }

    /// Add the time since `*t` to `part` and restart `*t`.
    pub(super) fn lap(t: &mut Option<Instant>, part: Part) {
        if let Some(t0) = t {
            let now = Instant::now();
            let ns = now.duration_since(*t0).as_nanos() as u64;
            let c = match part {
                Part::Similarity => &SIMS,
                Part::TopK => &TOP_K,
                Part::Rest => {
                    CALLS.fetch_add(1, Ordering::Relaxed);
                    &REST
                }
            };
            c.fetch_add(ns, Ordering::Relaxed);
            *t = Some(now);
        }
    }
}

/// Query rows per block of [`blocked_causal`].
const QUERY_BLOCK: usize = 256;

/// Plain causal attention for many new positions (a memory-bank window of 3072 tokens,
/// a long prompt): the queries `qg` `[H_kv, rep·T, d]` in blocks of [`QUERY_BLOCK`]
/// positions, each block against only the keys it can see. The `[H, T, S]` scores are
/// never held at once (340 MB per layer for a 3072-token window, allocated, masked and
/// soft-maxed in several copies) and the masked upper triangle is not computed (half
/// the products). Row for row the same arithmetic as the one-block path, except that
/// the softmax and the weighted sum stop at the last visible key instead of running on
/// over masked entries (exact zeros). Returns `[H, T, d]`.
fn blocked_causal(
    qg: &Tensor,
    k: &Tensor,
    v: &Tensor,
    rep: usize,
    offset: usize,
    scale: f64,
) -> Result<Tensor> {
    let (h_kv, rows, d) = qg.dims3()?;
    let t = rows / rep;
    let h = h_kv * rep;
    let q4 = qg.reshape((h_kv, rep, t, d))?;
    let mut outs = Vec::with_capacity(t.div_ceil(QUERY_BLOCK));
    for a in (0..t).step_by(QUERY_BLOCK) {
        let tb = QUERY_BLOCK.min(t - a);
        let n_keys = offset + a + tb;
        let qb = q4
            .narrow(2, a, tb)?
            .contiguous()?
            .reshape((h_kv, rep * tb, d))?;
        let kb = k.narrow(1, 0, n_keys)?.contiguous()?;
        let vb = v.narrow(1, 0, n_keys)?.contiguous()?;
        let scores = (qb.matmul(&kb.t()?)? * scale)?
            .reshape((h, tb, n_keys))?
            .broadcast_add(&causal_mask(tb, n_keys, offset + a, qg.device())?)?;
        let w = candle_nn::ops::softmax_last_dim(&scores)?.reshape((h_kv, rep * tb, n_keys))?;
        outs.push(w.matmul(&vb)?.reshape((h, tb, d))?);
    }
    Ok(Tensor::cat(&outs, 1)?)
}

/// Extended Mind attention for one layer.
///
/// * `q`: `[H, T, d]` rotated queries of the `T` new positions;
/// * `k`, `v`: `[H_kv, S, d]` local keys (rotated) and values, cache included, `S >= T`;
///   the new positions are the last `T` of them;
/// * `memory`: the layer's memory bank, or `None` for plain causal attention.
///
/// Returns the attention output `[H, T, d]` and, with memories, what was retrieved.
pub fn emt_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    memory: Option<&LayerMemory<'_>>,
) -> Result<(Tensor, Option<Retrieved>)> {
    let (h, t, d) = q.dims3()?;
    let (h_kv, s, d_k) = k.dims3()?;
    if d_k != d || h_kv == 0 || h % h_kv != 0 || s < t || v.dims3()? != (h_kv, s, d) {
        return Err(EmtError::DimensionMismatch {
            expected: format!("q [H, T, {d}], k and v [H_kv | H, S >= T, {d}]"),
            got: format!("q {:?}, k {:?}, v {:?}", q.dims(), k.dims(), v.dims()),
        });
    }
    let rep = h / h_kv;
    let offset = s - t;
    let scale = 1.0 / (d as f64).sqrt();
    let device = q.device();
    let q = q.contiguous()?;
    // Local scores per KV head with its `rep` query heads stacked, [H_kv, rep·T, S]: the
    // products candle's quantized llama computes after repeating the KV heads, without
    // copying the cache `rep` times per step (`k` and `v` may be views of the cache's
    // buffers). Query head `h` reads KV head `h / rep`, as `repeat_kv` orders them.
    let qg = q.reshape((h_kv, rep * t, d))?;
    let no_memory = match memory {
        Some(m) => m.keys.dims3()?.1 == 0,
        None => true,
    };
    if no_memory && t > QUERY_BLOCK {
        return Ok((blocked_causal(&qg, k, v, rep, offset, scale)?, None));
    }
    let mut local = (local_scores(&qg, k)? * scale)?.reshape((h, t, s))?;
    if t > 1 {
        local = local.broadcast_add(&causal_mask(t, s, offset, device)?)?;
    }

    let mem = match memory {
        Some(m) if m.keys.dims3()?.1 > 0 => m,
        _ => {
            let w = candle_nn::ops::softmax_last_dim(&local)?.reshape((h_kv, rep * t, s))?;
            let out = local_values(&w, v)?.reshape((h, t, d))?;
            return Ok((out, None));
        }
    };
    let (mh, n_mem, md) = mem.keys.dims3()?;
    if mh != h_kv
        || md != d
        || mem.values.dims3()? != (h_kv, n_mem, d)
        || mem.keys_unit.dims3()? != (h_kv, n_mem, d)
    {
        return Err(EmtError::DimensionMismatch {
            expected: format!("memory keys/values [{h_kv}, M, {d}]"),
            got: format!(
                "keys {:?}, unit keys {:?}, values {:?}",
                mem.keys.dims(),
                mem.keys_unit.dims(),
                mem.values.dims()
            ),
        });
    }
    if mem.top_k == 0 {
        return Err(EmtError::InvalidConfig {
            field: "top_k",
            reason: "must be at least 1".into(),
        });
    }
    let kk = mem.top_k.min(n_mem);

    // 1. Retrieval by cosine similarity (exact top-k).
    let mut clock = profile::now();
    let qn = unit_rows(&q)?.reshape((h_kv, rep * t, d))?;
    let sims = similarities(&qn, mem.keys_unit)?;
    profile::lap(&mut clock, profile::Part::Similarity);
    let top = top_k_rows(&sims, n_mem, kk);
    profile::lap(&mut clock, profile::Part::TopK);
    let mut flat = Vec::with_capacity(top.len());
    let mut top_sims = Vec::with_capacity(top.len());
    let mut used = Vec::with_capacity(top.len());
    let mut mask = Vec::with_capacity(top.len());
    for (row, chunk) in top.chunks(kk).enumerate() {
        let head = row / t;
        let kv = head / rep;
        for &j in chunk {
            let sim = sims[row * n_mem + j as usize];
            flat.push((kv * n_mem) as u32 + j);
            top_sims.push(sim);
            let ok = mem.sim_threshold.is_none_or(|tau| sim > tau);
            used.push(ok);
            mask.push(if ok { 0f32 } else { f32::NEG_INFINITY });
        }
    }
    let flat_t = Tensor::from_vec(flat, h * t * kk, device)?;
    let sel_k = mem
        .keys
        .contiguous()?
        .reshape((h_kv * n_mem, d))?
        .index_select(&flat_t, 0)?
        .reshape((h * t, kk, d))?;
    let sel_v = mem
        .values
        .contiguous()?
        .reshape((h_kv * n_mem, d))?
        .index_select(&flat_t, 0)?
        .reshape((h * t, kk, d))?;

    // 2. Raw scaled dot-product scores of the retrieved memories.
    let mem_scores =
        (q.reshape((h * t, 1, d))?.matmul(&sel_k.t()?)? * scale)?.reshape((h, t, kk))?;
    let mem_scores = if mem.sim_threshold.is_some() {
        mem_scores.broadcast_add(&Tensor::from_vec(mask, (h, t, kk), device)?)?
    } else {
        mem_scores
    };

    // 3. One joint softmax over [memories ⊕ local].
    let joint = Tensor::cat(&[&mem_scores, &local], 2)?;
    let w = candle_nn::ops::softmax_last_dim(&joint)?;
    let w_mem = w.narrow(2, 0, kk)?.contiguous()?.reshape((h * t, 1, kk))?;
    let w_loc = w
        .narrow(2, kk, s)?
        .contiguous()?
        .reshape((h_kv, rep * t, s))?;
    let out_mem = w_mem.matmul(&sel_v)?.reshape((h, t, d))?;
    let out_loc = local_values(&w_loc, v)?.reshape((h, t, d))?;
    let out = (out_mem + out_loc)?;
    profile::lap(&mut clock, profile::Part::Rest);
    Ok((
        out,
        Some(Retrieved {
            n_heads: h,
            n_queries: t,
            k: kk,
            indices: top,
            sims: top_sims,
            used,
        }),
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    pub(crate) fn rand_vec(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    /// Largest absolute entry difference of two tensors of one shape.
    pub(crate) fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
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

    /// Local attention on views of longer cache buffers equals it on contiguous copies,
    /// for a prompt (rows past the direct-loop size) and a single step.
    /// The SIMD dots are the portable dot bit for bit (the step path and the general
    /// path then agree whatever the CPU), at lengths with and without a tail.
    #[test]
    fn simd_dots_equal_the_portable_dot_bit_for_bit() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for n in [1, 15, 16, 17, 64, 100, 128] {
            let a = rand_vec(&mut rng, n);
            let b = rand_vec(&mut rng, n);
            let want = dot(&a, &b);
            #[cfg(target_arch = "x86_64")]
            {
                if is_x86_feature_detected!("avx2") {
                    // SAFETY: AVX2 is present.
                    assert_eq!(
                        unsafe { dot_avx2(&a, &b) }.to_bits(),
                        want.to_bits(),
                        "n {n}"
                    );
                }
                if is_x86_feature_detected!("avx512f") {
                    // SAFETY: AVX-512F is present.
                    assert_eq!(
                        unsafe { dot_avx512(&a, &b) }.to_bits(),
                        want.to_bits(),
                        "n {n}"
                    );
                }
            }
            let exact: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            assert!((want as f64 - exact).abs() < 1e-5 * n as f64);
        }
    }

    #[test]
    fn local_attention_on_cache_views_equals_contiguous() {
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        let (h, h_kv, cap, d) = (9, 3, 64, 64);
        for (t, s) in [(12, 12), (1, 13), (5, 40)] {
            let q = t3(rand_vec(&mut rng, h * t * d), (h, t, d));
            let kbuf = t3(rand_vec(&mut rng, h_kv * cap * d), (h_kv, cap, d));
            let vbuf = t3(rand_vec(&mut rng, h_kv * cap * d), (h_kv, cap, d));
            let (k, v) = (kbuf.narrow(1, 0, s).unwrap(), vbuf.narrow(1, 0, s).unwrap());
            let (kc, vc) = (k.contiguous().unwrap(), v.contiguous().unwrap());
            let a = emt_attention(&q, &k, &v, None).unwrap().0;
            let b = emt_attention(&q, &kc, &vc, None).unwrap().0;
            let diff = max_diff(&a, &b);
            assert!(diff < 1e-5, "t={t} s={s}: {diff}");
        }
    }

    /// Grouped local attention equals candle's repeat-the-KV-heads formulation.
    #[test]
    fn grouped_local_attention_equals_repeat_kv() {
        let mut rng = ChaCha8Rng::seed_from_u64(13);
        let (h, h_kv, d) = (9, 3, 64);
        for (t, s) in [(12, 12), (1, 13), (5, 40)] {
            let q = t3(rand_vec(&mut rng, h * t * d), (h, t, d));
            let k = t3(rand_vec(&mut rng, h_kv * s * d), (h_kv, s, d));
            let v = t3(rand_vec(&mut rng, h_kv * s * d), (h_kv, s, d));
            let a = emt_attention(&q, &k, &v, None).unwrap().0;
            let kr = candle_transformers::utils::repeat_kv(k.unsqueeze(0).unwrap(), 3).unwrap();
            let vr = candle_transformers::utils::repeat_kv(v.unsqueeze(0).unwrap(), 3)
                .unwrap()
                .contiguous()
                .unwrap();
            let mut sc =
                (q.unsqueeze(0).unwrap().matmul(&kr.t().unwrap()).unwrap() * (1.0 / 8.0)).unwrap();
            if t > 1 {
                sc = sc
                    .broadcast_add(&causal_mask(t, s, s - t, &Device::Cpu).unwrap())
                    .unwrap();
            }
            let w = candle_nn::ops::softmax_last_dim(&sc).unwrap();
            let b = w.matmul(&vr).unwrap().squeeze(0).unwrap();
            let diff = max_diff(&a, &b);
            assert!(diff < 1e-5, "t={t} s={s}: {diff}");
        }
    }

    /// The direct loops of a decoding step equal candle's matmul, also on a strided view
    /// of a longer cache buffer (as the KV cache hands them over).
    #[test]
    fn small_products_equal_matmul_on_strided_views() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let (g, r, s, cap, d) = (3, 3, 37, 64, 64);
        let q = t3(rand_vec(&mut rng, g * r * d), (g, r, d));
        let kbuf = t3(rand_vec(&mut rng, g * cap * d), (g, cap, d));
        let vbuf = t3(rand_vec(&mut rng, g * cap * d), (g, cap, d));
        let (k, v) = (kbuf.narrow(1, 0, s).unwrap(), vbuf.narrow(1, 0, s).unwrap());
        let w = t3(rand_vec(&mut rng, g * r * s), (g, r, s));
        let want = q.matmul(&k.contiguous().unwrap().t().unwrap()).unwrap();
        assert!(max_diff(&small_scores(&q, &k).unwrap().unwrap(), &want) < 1e-5);
        let want = w.matmul(&v.contiguous().unwrap()).unwrap();
        assert!(max_diff(&small_weighted_values(&w, &v).unwrap().unwrap(), &want) < 1e-5);
    }

    fn t3(v: Vec<f32>, d: (usize, usize, usize)) -> Tensor {
        Tensor::from_vec(v, d, &Device::Cpu).unwrap()
    }

    /// Naive reference: loops, f64, for each (head, query) its own top-k by cosine,
    /// one softmax over [its memories ⊕ its visible causal keys].
    #[allow(clippy::too_many_arguments)]
    fn naive(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        mk: &[f32],
        mv: &[f32],
        (h, t, d, h_kv, s, m): (usize, usize, usize, usize, usize, usize),
        top_k: usize,
        tau: Option<f32>,
    ) -> Vec<f32> {
        let rep = h / h_kv;
        let offset = s - t;
        let dot = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| *x as f64 * *y as f64)
                .sum::<f64>()
        };
        let mut out = vec![0f32; h * t * d];
        for hh in 0..h {
            let kv = hh / rep;
            for tt in 0..t {
                let qv = &q[(hh * t + tt) * d..(hh * t + tt + 1) * d];
                let mut cand: Vec<(f64, usize)> = (0..m)
                    .map(|j| {
                        let key = &mk[(kv * m + j) * d..(kv * m + j + 1) * d];
                        (
                            dot(qv, key) / (dot(qv, qv).sqrt() * dot(key, key).sqrt()),
                            j,
                        )
                    })
                    .collect();
                cand.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                let mut scores: Vec<(f64, &[f32])> = Vec::new();
                for &(sim, j) in cand.iter().take(top_k.min(m)) {
                    if tau.is_some_and(|tau| sim <= tau as f64) {
                        continue;
                    }
                    let key = &mk[(kv * m + j) * d..(kv * m + j + 1) * d];
                    scores.push((
                        dot(qv, key) / (d as f64).sqrt(),
                        &mv[(kv * m + j) * d..(kv * m + j + 1) * d],
                    ));
                }
                for j in 0..=(offset + tt) {
                    let key = &k[(kv * s + j) * d..(kv * s + j + 1) * d];
                    scores.push((
                        dot(qv, key) / (d as f64).sqrt(),
                        &v[(kv * s + j) * d..(kv * s + j + 1) * d],
                    ));
                }
                let mx = scores.iter().map(|x| x.0).fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = scores.iter().map(|x| (x.0 - mx).exp()).sum();
                for (sc, val) in &scores {
                    let p = (sc - mx).exp() / z;
                    for i in 0..d {
                        out[(hh * t + tt) * d + i] += (p * val[i] as f64) as f32;
                    }
                }
            }
        }
        out
    }

    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn kernel_matches_naive_reference() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for &(h, h_kv, t, offset, m, d, top_k, tau) in &[
            (
                4usize, 2usize, 5usize, 3usize, 11usize, 8usize, 3usize, None,
            ),
            (6, 3, 1, 9, 20, 16, 10, None),
            (2, 2, 4, 0, 2, 4, 10, None), // k > M
            (4, 1, 3, 2, 9, 8, 4, Some(0.1f32)),
        ] {
            let s = offset + t;
            let q = rand_vec(&mut rng, h * t * d);
            let k = rand_vec(&mut rng, h_kv * s * d);
            let v = rand_vec(&mut rng, h_kv * s * d);
            let mk = rand_vec(&mut rng, h_kv * m * d);
            let mv = rand_vec(&mut rng, h_kv * m * d);
            let keys = t3(mk.clone(), (h_kv, m, d));
            let unit = unit_norm(&keys).unwrap();
            let values = t3(mv.clone(), (h_kv, m, d));
            let lm = LayerMemory {
                keys: &keys,
                keys_unit: &unit,
                values: &values,
                top_k,
                sim_threshold: tau,
            };
            let (out, ret) = emt_attention(
                &t3(q.clone(), (h, t, d)),
                &t3(k.clone(), (h_kv, s, d)),
                &t3(v.clone(), (h_kv, s, d)),
                Some(&lm),
            )
            .unwrap();
            let got = out.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let want = naive(&q, &k, &v, &mk, &mv, (h, t, d, h_kv, s, m), top_k, tau);
            assert!(
                max_abs_diff(&got, &want) < 1e-5,
                "case {:?}",
                (h, t, m, top_k)
            );
            let ret = ret.unwrap();
            assert_eq!(ret.k, top_k.min(m));
            if tau.is_some() {
                assert!(
                    ret.used.iter().any(|u| !u),
                    "threshold should mask something"
                );
            }
        }
    }

    #[test]
    fn no_memory_is_plain_causal_attention() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (h, h_kv, t, s, d) = (4, 2, 3, 5, 8);
        let q = rand_vec(&mut rng, h * t * d);
        let k = rand_vec(&mut rng, h_kv * s * d);
        let v = rand_vec(&mut rng, h_kv * s * d);
        let (out, ret) = emt_attention(
            &t3(q.clone(), (h, t, d)),
            &t3(k.clone(), (h_kv, s, d)),
            &t3(v.clone(), (h_kv, s, d)),
            None,
        )
        .unwrap();
        assert!(ret.is_none());
        let got = out.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let want = naive(&q, &k, &v, &[], &[], (h, t, d, h_kv, s, 0), 1, None);
        assert!(max_abs_diff(&got, &want) < 1e-5);
    }

    #[test]
    fn selection_is_by_cosine_not_dot_product() {
        // Query along e0. Memory 0: huge norm, orthogonal (dot 0 but... make it slightly
        // negative-free: orthogonal gives cos 0). Memory 1: small, aligned (cos 1).
        let d = 4;
        let q = t3(vec![1.0, 0.0, 0.0, 0.0], (1, 1, d));
        let keys = t3(
            vec![
                0.0, 1000.0, 0.0, 0.0, 0.01, 0.0, 0.0, 0.0, 0.0, 0.0, 1000.0, 0.5,
            ],
            (1, 3, d),
        );
        let unit = unit_norm(&keys).unwrap();
        let values = t3(vec![0.0; 3 * d], (1, 3, d));
        let lm = LayerMemory {
            keys: &keys,
            keys_unit: &unit,
            values: &values,
            top_k: 1,
            sim_threshold: None,
        };
        let k = t3(vec![0.0; d], (1, 1, d));
        let (_, ret) = emt_attention(&q, &k, &k, Some(&lm)).unwrap();
        assert_eq!(ret.unwrap().indices, vec![1]);
        // The huge key does have the largest |dot| among the others: cosine decides.
    }

    #[test]
    fn each_query_reads_only_its_own_memories() {
        // Query 0 points along e0 and query 1 along e1; memories are e0, e1, e2, so with
        // k = 1 query 0 retrieves memory 0 and query 1 memory 1. Changing memory 1's value
        // must change query 1's output and leave query 0's unchanged.
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let (h, h_kv, t, d, m) = (1, 1, 2, 4, 3);
        let mut q = vec![0f32; t * d];
        q[0] = 2.0;
        q[d + 1] = 3.0;
        let k = rand_vec(&mut rng, h_kv * t * d);
        let v = rand_vec(&mut rng, h_kv * t * d);
        let mut mk = vec![0f32; m * d];
        for j in 0..m {
            mk[j * d + j] = 1.0;
        }
        let mv = rand_vec(&mut rng, h_kv * m * d);
        let run = |mv: &[f32]| {
            let keys = t3(mk.clone(), (h_kv, m, d));
            let unit = unit_norm(&keys).unwrap();
            let values = t3(mv.to_vec(), (h_kv, m, d));
            let lm = LayerMemory {
                keys: &keys,
                keys_unit: &unit,
                values: &values,
                top_k: 1,
                sim_threshold: None,
            };
            let (o, r) = emt_attention(
                &t3(q.clone(), (h, t, d)),
                &t3(k.clone(), (h_kv, t, d)),
                &t3(v.clone(), (h_kv, t, d)),
                Some(&lm),
            )
            .unwrap();
            (o.to_vec3::<f32>().unwrap(), r.unwrap())
        };
        let (base, ret) = run(&mv);
        assert_eq!(ret.indices, vec![0, 1]);
        let mut mv2 = mv.clone();
        for x in &mut mv2[d..2 * d] {
            *x += 10.0;
        }
        let (changed, _) = run(&mv2);
        assert_eq!(
            base[0][0], changed[0][0],
            "query 0 must not see query 1's memory"
        );
        assert_ne!(base[0][1], changed[0][1], "query 1 must see its memory");
    }

    #[test]
    fn top_k_rows_is_exact() {
        let sims = [0.1, 0.9, 0.5, 0.9, -1.0, 0.0, 0.3, 0.2];
        assert_eq!(top_k_rows(&sims, 4, 2), vec![1, 3, 2, 3]);
        assert_eq!(top_k_rows(&sims, 4, 4), vec![1, 3, 2, 0, 2, 3, 1, 0]);
    }

    /// The scanning and the parallel paths against a full sort, with ties (values on a
    /// coarse grid), signed zeros, infinities and NaN, for k on both sides of the scan
    /// limit and rows long enough to run in parallel.
    #[test]
    fn top_k_rows_matches_a_full_sort() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let naive = |sims: &[f32], m: usize, k: usize| -> Vec<u32> {
            let mut out = Vec::new();
            for row in sims.chunks(m) {
                let mut idx: Vec<u32> = (0..m as u32).collect();
                idx.sort_by(|a, b| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b)));
                out.extend_from_slice(&idx[..k.min(m)]);
            }
            out
        };
        for &(rows, m, k) in &[
            (1usize, 1usize, 1usize),
            (3, 7, 2),
            (2, 5, 9),
            (9, 1000, 1),
            (9, 1000, 2),
            (4, 300, 64),
            (3, 300, 65),
            (9, 5000, 10),
            (2, 130, 130),
        ] {
            let mut sims: Vec<f32> = (0..rows * m)
                .map(|_| (rng.random_range(-20i32..20) as f32) / 20.0)
                .collect();
            let special = [
                0.0f32,
                -0.0,
                f32::INFINITY,
                f32::NEG_INFINITY,
                f32::NAN,
                1.0,
            ];
            for (i, x) in special.iter().enumerate() {
                if i * 7 < sims.len() {
                    sims[i * 7] = *x;
                }
            }
            assert_eq!(
                top_k_rows(&sims, m, k),
                naive(&sims, m, k),
                "rows {rows}, m {m}, k {k}"
            );
            // Increasing rows: every element enters the buffer.
            let inc: Vec<f32> = (0..rows * m).map(|i| (i % m) as f32).collect();
            assert_eq!(top_k_rows(&inc, m, k), naive(&inc, m, k));
        }
    }

    /// The SIMD similarity kernel against candle's matrix product (the fallback), for
    /// head sizes it takes and does not take, one and many queries, empty and offset
    /// (narrowed) banks.
    #[test]
    fn similarities_match_the_matrix_product() {
        let mut rng = ChaCha8Rng::seed_from_u64(13);
        for &(h_kv, rows, m, d) in &[
            (3usize, 3usize, 1000usize, 64usize),
            (2, 1, 37, 16),
            (1, 90, 300, 64),
            (2, 5, 50, 8),
            (2, 4, 20, 12),
            (3, 3, 0, 64),
            (1, 2, 3, 128),
        ] {
            let q = unit_norm(&t3(rand_vec(&mut rng, h_kv * rows * d), (h_kv, rows, d))).unwrap();
            // A bank that starts inside its storage: one head more, narrowed away.
            let big = t3(rand_vec(&mut rng, (h_kv + 1) * m * d), (h_kv + 1, m, d));
            let u = unit_norm(&big).unwrap().narrow(0, 1, h_kv).unwrap();
            let got = similarities(&q, &u).unwrap();
            let want = q
                .matmul(&u.contiguous().unwrap().t().unwrap())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert_eq!(got.len(), h_kv * rows * m);
            assert!(max_abs_diff(&got, &want) < 1e-5, "{:?}", (h_kv, rows, m, d));
        }
    }

    /// Many new positions without memories take the blocked path: the same as the
    /// naive reference, with and without a cache before them, and with an empty bank.
    #[test]
    fn long_blocks_without_memories_match_the_reference() {
        let mut rng = ChaCha8Rng::seed_from_u64(17);
        for &(h, h_kv, t, offset, d) in &[
            (4usize, 2usize, 600usize, 0usize, 8usize),
            (6, 3, 2 * QUERY_BLOCK + 1, 7, 16),
            (2, 2, QUERY_BLOCK + 1, 0, 4),
        ] {
            let s = offset + t;
            let q = rand_vec(&mut rng, h * t * d);
            let k = rand_vec(&mut rng, h_kv * s * d);
            let v = rand_vec(&mut rng, h_kv * s * d);
            let want = naive(&q, &k, &v, &[], &[], (h, t, d, h_kv, s, 0), 1, None);
            let (qt, kt, vt) = (
                t3(q.clone(), (h, t, d)),
                t3(k.clone(), (h_kv, s, d)),
                t3(v.clone(), (h_kv, s, d)),
            );
            let (out, ret) = emt_attention(&qt, &kt, &vt, None).unwrap();
            assert!(ret.is_none());
            let got = out.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(max_abs_diff(&got, &want) < 1e-5, "{:?}", (h, t, offset));
            let empty = t3(Vec::new(), (h_kv, 0, d));
            let lm = LayerMemory {
                keys: &empty,
                keys_unit: &empty,
                values: &empty,
                top_k: 2,
                sim_threshold: None,
            };
            let (out2, _) = emt_attention(&qt, &kt, &vt, Some(&lm)).unwrap();
            assert_eq!(out2.flatten_all().unwrap().to_vec1::<f32>().unwrap(), got);
        }
    }

    #[test]
    fn profile_counts_memory_calls_when_enabled() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let (h, d, m) = (2, 4, 5);
        let q = t3(rand_vec(&mut rng, h * d), (h, 1, d));
        let k = t3(rand_vec(&mut rng, h * d), (h, 1, d));
        let keys = t3(rand_vec(&mut rng, h * m * d), (h, m, d));
        let unit = unit_norm(&keys).unwrap();
        let lm = LayerMemory {
            keys: &keys,
            keys_unit: &unit,
            values: &keys,
            top_k: 2,
            sim_threshold: None,
        };
        profile::enable(true);
        emt_attention(&q, &k, &k, Some(&lm)).unwrap();
        emt_attention(&q, &k, &k, Some(&lm)).unwrap();
        let p = profile::take();
        profile::enable(false);
        // Other tests may run the kernel at the same time: at least our two calls.
        assert!(p.calls >= 2, "{p:?}");
        assert!(p.similarity_ns + p.top_k_ns + p.rest_ns > 0, "{p:?}");
    }

    #[test]
    fn bad_shapes_are_errors() {
        let q = t3(vec![0.0; 8], (1, 2, 4));
        let k = t3(vec![0.0; 4], (1, 1, 4));
        assert!(emt_attention(&q, &k, &k, None).is_err());
    }
}
