//! One generated token on the CPU without candle's per-op cost.
//!
//! A decoding step of SmolLM2-135M is about 25 small tensor operations per layer (norms,
//! RoPE, reshapes, SiLU, residual sums) around the seven matrix-vector products. Each
//! candle op costs microseconds of allocation, dispatch and layout bookkeeping, which for
//! one token is about a third of the step (3 ms of 9 ms, BENCHMARKS.md). Here the hidden
//! state is a `Vec<f32>`, the products are the block kernels of [`crate::quant`] (one
//! activation quantization shared by q/k/v and by gate/up), the new key and value are
//! written straight into the cache's buffers and the local attention of the step runs
//! over the cache in place. With memories the attention itself is [`emt_attention`] on
//! views of the same buffers (the retrieval is the same code as for a prompt).
//!
//! Same arithmetic as [`Llama::run`] up to the order of f32 sums; the tests compare the
//! two on random Q4_1 models with and without memories.

use std::sync::Arc;

use candle_core::{CpuStorage, Layout, Storage, Tensor};

use super::{append_kv, layer_memory, KvCache, Linear, Llama, Memory, RetrievalCounts};
use crate::attention::emt_attention;
use crate::error::{EmtError, Result};
use crate::quant::{QMatrix, QuantizedActs};

/// The weights of one block as the step path reads them.
#[derive(Debug, Clone)]
pub(super) struct StepBlock {
    attn_norm: Vec<f32>,
    ffn_norm: Vec<f32>,
    wq: Arc<QMatrix>,
    wk: Arc<QMatrix>,
    wv: Arc<QMatrix>,
    wo: Arc<QMatrix>,
    w_gate: Arc<QMatrix>,
    w_up: Arc<QMatrix>,
    w_down: Arc<QMatrix>,
}

/// Everything a one-token step reads besides the embeddings and the cache: present when
/// the model is on the CPU and every linear layer has a block kernel.
#[derive(Debug, Clone)]
pub(super) struct StepWeights {
    blocks: Vec<StepBlock>,
    norm: Vec<f32>,
    lm_head: Arc<QMatrix>,
    /// `[max_position, d/2]` RoPE tables.
    cos: Vec<f32>,
    sin: Vec<f32>,
}

fn cpu_vec(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

impl StepWeights {
    /// The step weights of `model`, or `None` when some layer is not a block kernel or the
    /// model is not on the CPU.
    pub(super) fn of(model: &Llama) -> Result<Option<Self>> {
        if !model.device.is_cpu() {
            return Ok(None);
        }
        let m = |l: &Linear| match l {
            Linear::Blocks(m) => Some(m.clone()),
            Linear::Candle(_) => None,
        };
        let mut blocks = Vec::with_capacity(model.blocks.len());
        for b in &model.blocks {
            let (Some(wq), Some(wk), Some(wv), Some(wo), Some(w_gate), Some(w_up), Some(w_down)) = (
                m(&b.wq),
                m(&b.wk),
                m(&b.wv),
                m(&b.wo),
                m(&b.w_gate),
                m(&b.w_up),
                m(&b.w_down),
            ) else {
                return Ok(None);
            };
            blocks.push(StepBlock {
                attn_norm: cpu_vec(&b.attn_norm)?,
                ffn_norm: cpu_vec(&b.ffn_norm)?,
                wq,
                wk,
                wv,
                wo,
                w_gate,
                w_up,
                w_down,
            });
        }
        let Some(lm_head) = m(&model.lm_head) else {
            return Ok(None);
        };
        Ok(Some(Self {
            blocks,
            norm: cpu_vec(&model.norm)?,
            lm_head,
            cos: cpu_vec(&model.cos)?,
            sin: cpu_vec(&model.sin)?,
        }))
    }
}

/// `x / sqrt(mean(x²) + eps) ⊙ w`, as candle's `rms_norm` computes it in f32.
fn rms_norm_into(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let sum2: f32 = x.iter().map(|v| v * v).sum();
    let r = (sum2 / x.len() as f32 + eps).sqrt();
    for ((o, &v), &a) in out.iter_mut().zip(x).zip(w) {
        *o = v / r * a;
    }
}

/// Interleaved RoPE (pairs `2i, 2i+1`) of every head of `x` (`[heads, d]`) in place.
fn rope_in_place(x: &mut [f32], d: usize, cos: &[f32], sin: &[f32]) {
    for head in x.chunks_exact_mut(d) {
        for (i, pair) in head.chunks_exact_mut(2).enumerate() {
            let (a, b) = (pair[0], pair[1]);
            pair[0] = a * cos[i] - b * sin[i];
            pair[1] = a * sin[i] + b * cos[i];
        }
    }
}

/// Writes one position (`[H_kv, d]`) at index `pos` of a `[H_kv, cap, d]` buffer.
struct WritePosition<'a> {
    new: &'a [f32],
    pos: usize,
}

impl candle_core::InplaceOp1 for WritePosition<'_> {
    fn name(&self) -> &'static str {
        "kv-cache-write"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("the KV cache must be f32");
        };
        let (h, cap, d) = layout.shape().dims3()?;
        let st = layout.stride();
        if self.pos >= cap || self.new.len() != h * d || st[2] != 1 {
            candle_core::bail!("KV cache write out of range");
        }
        let off = layout.start_offset();
        for (g, row) in self.new.chunks_exact(d).enumerate() {
            let at = off + g * st[0] + self.pos * st[1];
            data[at..at + d].copy_from_slice(row);
        }
        Ok(())
    }
}

/// The local attention of one query position against the first `s` positions of the
/// cache buffers `k`, `v` (`[H_kv, cap, d]`): query head `h` reads KV head `h / rep`.
/// Writes `[H, d]` into `out`.
fn local_attention(
    q: &[f32],
    k: &Tensor,
    v: &Tensor,
    s: usize,
    d: usize,
    out: &mut [f32],
) -> Result<()> {
    let (kg, kl) = k.storage_and_layout();
    let (vg, vl) = v.storage_and_layout();
    let (Storage::Cpu(CpuStorage::F32(kd)), Storage::Cpu(CpuStorage::F32(vd))) = (&*kg, &*vg)
    else {
        return Err(EmtError::InvalidModel(
            "the KV cache must be f32 on the CPU".into(),
        ));
    };
    let (h_kv, cap, _) = kl.shape().dims3()?;
    let (ks, vs) = (kl.stride(), vl.stride());
    let heads = q.len() / d;
    if s > cap || ks[2] != 1 || vs[2] != 1 || vl.shape().dims3()? != (h_kv, cap, d) {
        return Err(EmtError::InvalidModel("KV cache buffer layout".into()));
    }
    let a = Attend {
        q,
        k: &kd[kl.start_offset()..],
        k_stride: (ks[0], ks[1]),
        v: &vd[vl.start_offset()..],
        v_stride: (vs[0], vs[1]),
        h_kv,
        rep: heads / h_kv,
        s,
        d,
    };
    let mut w = vec![0f32; a.rep * s];
    #[cfg(target_arch = "x86_64")]
    {
        use crate::quant::Isa;
        match Isa::detect() {
            // SAFETY: `Isa::detect` reports only instruction sets this CPU has.
            Isa::Avx512Vnni => unsafe { a.run_avx512(&mut w, out) },
            Isa::Avx2 => unsafe { a.run_avx2(&mut w, out) },
            Isa::Scalar => a.run(crate::attention::dot, &mut w, out),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    a.run(crate::attention::dot, &mut w, out);
    Ok(())
}

/// One query position's local attention over slices of the cache buffers.
struct Attend<'a> {
    /// `[H, d]` rotated queries, head `h` of KV group `h / rep`.
    q: &'a [f32],
    k: &'a [f32],
    /// Strides of a KV head and a position in `k`.
    k_stride: (usize, usize),
    v: &'a [f32],
    v_stride: (usize, usize),
    h_kv: usize,
    rep: usize,
    s: usize,
    d: usize,
}

impl Attend<'_> {
    /// Per KV head: the `rep` query heads' scores against each key row (read once), the
    /// softmax of each, then each value row (read once) into the `rep` outputs. The sums
    /// are in the order of the general path's loops ([`crate::attention`]).
    #[inline(always)]
    fn run(&self, dot: impl Fn(&[f32], &[f32]) -> f32, w: &mut [f32], out: &mut [f32]) {
        let (s, d, rep) = (self.s, self.d, self.rep);
        let scale = 1.0 / (d as f32).sqrt();
        for g in 0..self.h_kv {
            let qg = &self.q[g * rep * d..(g + 1) * rep * d];
            for j in 0..s {
                let kr = &self.k[g * self.k_stride.0 + j * self.k_stride.1..][..d];
                for r in 0..rep {
                    w[r * s + j] = dot(&qg[r * d..(r + 1) * d], kr) * scale;
                }
            }
            for row in w.chunks_exact_mut(s) {
                let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
                let mut sum = 0f32;
                for x in row.iter_mut() {
                    *x = (*x - max).exp();
                    sum += *x;
                }
                for x in row.iter_mut() {
                    *x /= sum;
                }
            }
            let og = &mut out[g * rep * d..(g + 1) * rep * d];
            og.fill(0.0);
            for j in 0..s {
                let vr = &self.v[g * self.v_stride.0 + j * self.v_stride.1..][..d];
                for r in 0..rep {
                    let p = w[r * s + j];
                    for (o, &x) in og[r * d..(r + 1) * d].iter_mut().zip(vr) {
                        *o += p * x;
                    }
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn run_avx512(&self, w: &mut [f32], out: &mut [f32]) {
        // SAFETY: this function runs only where AVX-512F is present.
        self.run(|a, b| unsafe { crate::attention::dot_avx512(a, b) }, w, out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_avx2(&self, w: &mut [f32], out: &mut [f32]) {
        // SAFETY: this function runs only where AVX2 is present.
        self.run(|a, b| unsafe { crate::attention::dot_avx2(a, b) }, w, out)
    }
}

impl Llama {
    /// One new token `id` after what `cache` holds, on the step path: the final-normed
    /// hidden state `[hidden]`. The cache takes the new position only when the step
    /// succeeds.
    pub(super) fn step(
        &self,
        w: &StepWeights,
        id: u32,
        cache: &mut KvCache,
        memory: Option<Memory<'_>>,
        mut counts: Option<&mut RetrievalCounts>,
    ) -> Result<Vec<f32>> {
        let start = cache.len;
        self.check_ids(&[id], start)?;
        if let Some(m) = memory {
            m.config.validate(self.cfg.n_layers)?;
            m.bank.check_compatible(&self.cfg)?;
        }
        let n_layers = self.cfg.n_layers;
        if !(cache.layers.is_empty() && start == 0) && cache.layers.len() != n_layers {
            return Err(EmtError::DimensionMismatch {
                expected: format!("cache for {n_layers} layers"),
                got: format!("{} layers", cache.layers.len()),
            });
        }
        let hidden = self.cfg.hidden_size;
        let (nh, nkv, hd) = (self.cfg.n_heads, self.cfg.n_kv_heads, self.cfg.head_dim());
        let eps = self.cfg.rms_norm_eps as f32;
        let half = hd / 2;
        let (cos, sin) = (
            &w.cos[start * half..(start + 1) * half],
            &w.sin[start * half..(start + 1) * half],
        );
        let mut x = {
            let row = self.embed.get(id as usize)?;
            cpu_vec(&row)?
        };
        let mut h = vec![0f32; hidden];
        let mut att = vec![0f32; nh * hd];
        let mut acts = QuantizedActs::default();
        // Buffers that had to grow this step: taken by the cache only at the end, so a
        // failed step leaves the cache as it was (writes past `len` are invisible).
        let mut grown: Vec<Option<(Tensor, Tensor)>> = vec![None; n_layers];
        let max = self.cfg.max_position;
        for (l, b) in w.blocks.iter().enumerate() {
            rms_norm_into(&x, &b.attn_norm, eps, &mut h);
            acts.fill(&h, hidden);
            let mut q = b.wq.matmul(&acts)?;
            let mut k = b.wk.matmul(&acts)?;
            let v = b.wv.matmul(&acts)?;
            rope_in_place(&mut q, hd, cos, sin);
            rope_in_place(&mut k, hd, cos, sin);
            let old = cache.layers.get(l).and_then(|o| o.as_ref());
            let (kb, vb) = match old {
                Some((kb, vb)) if kb.dim(1)? > start => (kb.clone(), vb.clone()),
                _ => {
                    // First position or a full buffer: the general path grows it.
                    let kt = Tensor::from_vec(k.clone(), (nkv, 1, hd), &self.device)?;
                    let vt = Tensor::from_vec(v.clone(), (nkv, 1, hd), &self.device)?;
                    let (kb, _) = append_kv(old.map(|(k, _)| k), &kt, start, max)?;
                    let (vb, _) = append_kv(old.map(|(_, v)| v), &vt, start, max)?;
                    grown[l] = Some((kb.clone(), vb.clone()));
                    (kb, vb)
                }
            };
            if grown[l].is_none() {
                kb.inplace_op1(&WritePosition {
                    new: &k,
                    pos: start,
                })?;
                vb.inplace_op1(&WritePosition {
                    new: &v,
                    pos: start,
                })?;
            }
            let s = start + 1;
            let lm = layer_memory(memory, l)?;
            match lm {
                None => local_attention(&q, &kb, &vb, s, hd, &mut att)?,
                Some(lm) => {
                    let qt = Tensor::from_vec(q, (nh, 1, hd), &self.device)?;
                    let (a, ret) =
                        emt_attention(&qt, &kb.narrow(1, 0, s)?, &vb.narrow(1, 0, s)?, Some(&lm))?;
                    if let (Some(c), Some(r)) = (counts.as_deref_mut(), ret.as_ref()) {
                        c.add(r);
                    }
                    att.copy_from_slice(&a.flatten_all()?.to_vec1::<f32>()?);
                }
            }
            acts.fill(&att, nh * hd);
            for (xi, o) in x.iter_mut().zip(b.wo.matmul(&acts)?) {
                *xi += o;
            }
            rms_norm_into(&x, &b.ffn_norm, eps, &mut h);
            acts.fill(&h, hidden);
            let mut gate = b.w_gate.matmul(&acts)?;
            let up = b.w_up.matmul(&acts)?;
            for (g, u) in gate.iter_mut().zip(&up) {
                *g = *g / (1.0 + (-*g).exp()) * u;
            }
            acts.fill(&gate, gate.len());
            for (xi, o) in x.iter_mut().zip(b.w_down.matmul(&acts)?) {
                *xi += o;
            }
        }
        if cache.layers.is_empty() {
            cache.layers = vec![None; n_layers];
        }
        for (slot, g) in cache.layers.iter_mut().zip(grown) {
            if let Some(g) = g {
                *slot = Some(g);
            }
        }
        cache.len = start + 1;
        rms_norm_into(&x, &w.norm, eps, &mut h);
        Ok(h)
    }

    /// The output head on one final-normed hidden state: logits `[vocab]`.
    pub(super) fn step_logits(&self, w: &StepWeights, h: &[f32]) -> Result<Tensor> {
        let acts = QuantizedActs::new(h, h.len());
        let logits = w.lm_head.matmul(&acts)?;
        let n = logits.len();
        Ok(Tensor::from_vec(logits, n, &self.device)?)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::quantized::GgmlDType;

    use super::*;
    use crate::config::EmtConfig;
    use crate::memory::{MemoryBank, MemoryOptions};
    use crate::model::WeightFormat;

    fn q4_model(seed: u64) -> Llama {
        let cfg = crate::model::tests::q4_config(160);
        Llama::random_as(&cfg, seed, GgmlDType::Q4_1, WeightFormat::Quantized).unwrap()
    }

    /// The general path's logits for one token (what `forward` did before the step path).
    fn general(
        m: &Llama,
        id: u32,
        cache: &mut KvCache,
        memory: Option<Memory<'_>>,
        counts: Option<&mut RetrievalCounts>,
    ) -> Vec<f32> {
        let h = m.run(&[id], cache, memory, counts, None).unwrap();
        m.lm_head
            .forward(&h)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    /// Largest |difference| relative to the largest |logit|.
    fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        a.iter().zip(b).fold(0f32, |m, (u, v)| m.max((u - v).abs())) / scale
    }

    /// Both paths compute the same products of the same 8-bit activations; they differ
    /// only in the order of a few f32 sums (norms, softmax), about 1e-7 relative, and most
    /// steps agree bit for bit (measured: median 0, 90th percentile 1e-7 over 300 steps).
    /// Rarely that 1e-7 flips the rounding of an activation to its 8-bit grid (one step
    /// is 1/127 of the block's largest value); the two caches then differ by that at one
    /// position, seen as up to 1.4e-3 of the largest logit. The bound is 5e-3: a few
    /// flips, far below any real disagreement (a wrong position or head is O(1)).
    const TOL: f32 = 5e-3;

    #[test]
    fn step_path_equals_general_path_through_cache_growth() {
        for seed in [1, 2, 3] {
            let m = q4_model(seed);
            assert!(m.step.is_some(), "Q4_1 weights take the step path");
            let ids: Vec<u32> = (0..100).map(|i| (i * 37 + seed as u32) % 96).collect();
            let (mut fast, mut slow) = (KvCache::new(), KvCache::new());
            let mut diffs = Vec::new();
            // From an empty cache (the step path creates the buffers), then past the
            // first buffer's 64 positions (it grows them).
            for (i, &id) in ids.iter().enumerate() {
                let a = m
                    .forward(&[id], &mut fast, None)
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                let b = general(&m, id, &mut slow, None, None);
                diffs.push(rel_diff(&a, &b));
                assert!(
                    rel_diff(&a, &b) < TOL,
                    "seed {seed} position {i}: {}",
                    rel_diff(&a, &b)
                );
            }
            assert_eq!(fast.len(), slow.len());
            // Most steps are bit for bit the general path's (a flip is rare).
            diffs.sort_by(f32::total_cmp);
            assert!(
                diffs[diffs.len() / 2] < 1e-6,
                "median {}",
                diffs[diffs.len() / 2]
            );
        }
    }

    #[test]
    fn step_path_after_a_prompt_equals_full_forward() {
        let m = q4_model(5);
        let ids: Vec<u32> = (0..40).map(|i| (i * 11 + 3) % 96).collect();
        let all = m.forward_all(&ids, None).unwrap();
        let mut cache = KvCache::new();
        m.forward(&ids[..30], &mut cache, None).unwrap();
        for (i, &id) in ids.iter().enumerate().skip(30) {
            let a = m
                .forward(&[id], &mut cache, None)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let b = all.get(i).unwrap().to_vec1::<f32>().unwrap();
            assert!(rel_diff(&a, &b) < TOL, "position {i}: {}", rel_diff(&a, &b));
        }
    }

    #[test]
    fn step_path_with_memories_equals_general_path_and_counts() {
        let m = q4_model(7);
        let doc: Vec<u32> = (0..48).map(|i| (i * 13 + 5) % 96).collect();
        let bank = MemoryBank::build(&m, &doc, &[], &MemoryOptions::default()).unwrap();
        for k in [1, 2, 4] {
            let ec = EmtConfig::with_top_k(k);
            let mem = Memory {
                bank: &bank,
                config: &ec,
            };
            let prompt: Vec<u32> = vec![1, 2, 3, 4];
            let (mut fast, mut slow) = (KvCache::new(), KvCache::new());
            m.forward(&prompt, &mut fast, Some(mem)).unwrap();
            m.forward(&prompt, &mut slow, Some(mem)).unwrap();
            for id in [9u32, 50, 77, 12, 31] {
                let (a, ca) = m.forward_traced(&[id], &mut fast, mem).unwrap();
                let mut cb = RetrievalCounts::new(1, bank.len());
                let b = general(&m, id, &mut slow, Some(mem), Some(&mut cb));
                let a = a.to_vec1::<f32>().unwrap();
                assert!(rel_diff(&a, &b) < TOL, "k {k}: {}", rel_diff(&a, &b));
                assert_eq!(ca, cb, "the same memories are retrieved");
                assert!(ca.counts.iter().sum::<u32>() > 0);
            }
        }
    }

    #[test]
    fn a_failed_step_leaves_the_cache_as_it_was() {
        let m = q4_model(9);
        let mut cache = KvCache::new();
        m.forward(&[1, 2, 3], &mut cache, None).unwrap();
        let before = m.forward(&[4], &mut cache.clone(), None).unwrap();
        assert!(
            m.forward(&[96], &mut cache, None).is_err(),
            "token out of range"
        );
        assert_eq!(cache.len(), 3);
        let after = m.forward(&[4], &mut cache, None).unwrap();
        assert_eq!(
            before.to_vec1::<f32>().unwrap(),
            after.to_vec1::<f32>().unwrap()
        );
    }

    #[test]
    fn step_helpers_match_candle() {
        let dev = candle_core::Device::Cpu;
        let x: Vec<f32> = (0..64).map(|i| (i as f32 * 0.37).sin()).collect();
        let w: Vec<f32> = (0..64).map(|i| 1.0 + 0.01 * i as f32).collect();
        let mut ours = vec![0f32; 64];
        rms_norm_into(&x, &w, 1e-5, &mut ours);
        let xt = Tensor::from_vec(x.clone(), (1, 64), &dev).unwrap();
        let wt = Tensor::from_vec(w, 64, &dev).unwrap();
        let theirs = candle_nn::ops::rms_norm(&xt, &wt, 1e-5)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (a, b) in ours.iter().zip(&theirs) {
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0));
        }
        // RoPE of two heads of 8 at one position against candle's `rope_i`.
        let cos: Vec<f32> = (0..4).map(|i| (0.3 * i as f32).cos()).collect();
        let sin: Vec<f32> = (0..4).map(|i| (0.3 * i as f32).sin()).collect();
        let mut ours = x[..16].to_vec();
        rope_in_place(&mut ours, 8, &cos, &sin);
        let xt = Tensor::from_vec(x[..16].to_vec(), (1, 2, 1, 8), &dev).unwrap();
        let ct = Tensor::from_vec(cos, (1, 4), &dev).unwrap();
        let st = Tensor::from_vec(sin, (1, 4), &dev).unwrap();
        let theirs = candle_nn::rotary_emb::rope_i(&xt, &ct, &st)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (a, b) in ours.iter().zip(&theirs) {
            assert!((a - b).abs() <= 1e-6);
        }
    }
}
