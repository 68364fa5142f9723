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
fn causal_mask(t: usize, s: usize, offset: usize, device: &Device) -> Result<Tensor> {
    let mut m = vec![0f32; t * s];
    for i in 0..t {
        for j in (offset + i + 1)..s {
            m[i * s + j] = f32::NEG_INFINITY;
        }
    }
    Ok(Tensor::from_vec(m, (t, s), device)?)
}

/// Exact top-k of each row of `sims` (`rows x m`), best first; ties by lower index.
fn top_k_rows(sims: &[f32], m: usize, k: usize) -> Vec<u32> {
    let rows = sims.len().checked_div(m).unwrap_or(0);
    let mut out = Vec::with_capacity(rows * k);
    let mut idx: Vec<u32> = Vec::with_capacity(m);
    for r in 0..rows {
        let row = &sims[r * m..(r + 1) * m];
        idx.clear();
        idx.extend(0..m as u32);
        let cmp = |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b));
        if k < m {
            idx.select_nth_unstable_by(k - 1, cmp);
            idx.truncate(k);
        }
        idx.sort_by(cmp);
        out.extend_from_slice(&idx[..k]);
    }
    out
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
    // Local scores laid out exactly as candle's quantized llama computes them (repeat the
    // KV heads, one [1, H, T, S] matmul), so that without memories the logits agree with
    // it to rounding.
    let k_rep = candle_transformers::utils::repeat_kv(k.unsqueeze(0)?, rep)?;
    let v_rep = candle_transformers::utils::repeat_kv(v.unsqueeze(0)?, rep)?.contiguous()?;
    let mut local = (q.unsqueeze(0)?.matmul(&k_rep.t()?)? * scale)?;
    if t > 1 {
        local = local.broadcast_add(&causal_mask(t, s, offset, device)?)?;
    }
    let local = local.squeeze(0)?; // [H, T, S]

    let mem = match memory {
        Some(m) if m.keys.dims3()?.1 > 0 => m,
        _ => {
            let w = candle_nn::ops::softmax_last_dim(&local)?;
            let out = w.unsqueeze(0)?.matmul(&v_rep)?.squeeze(0)?;
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
    let qn = unit_rows(&q)?.reshape((h_kv, rep * t, d))?;
    let sims = qn
        .matmul(&mem.keys_unit.contiguous()?.t()?)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let top = top_k_rows(&sims, n_mem, kk);
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
    let out_loc = w_loc.matmul(&v.contiguous()?)?.reshape((h, t, d))?;
    let out = (out_mem + out_loc)?;
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

    #[test]
    fn bad_shapes_are_errors() {
        let q = t3(vec![0.0; 8], (1, 2, 4));
        let k = t3(vec![0.0; 4], (1, 1, 4));
        assert!(emt_attention(&q, &k, &k, None).is_err());
    }
}
