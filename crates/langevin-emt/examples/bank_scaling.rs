//! Cost of Extended Mind generation as the memory bank grows, and a document generator
//! for measuring `langevin emt index`.
//!
//! ```text
//! scripts/fetch-smollm2.sh
//! # a generated document of about N tokens (needle-benchmark sentences, many facts):
//! cargo run --release -p langevin-emt --example bank_scaling -- doc 8192 > doc8k.txt
//! # per-generated-token cost with synthetic banks of M memories (1 thread by default):
//! cargo run --release -p langevin-emt --example bank_scaling -- decode 1000,10000,100000 [TOKENS] [dequantize] [THREADS]
//! ```
//!
//! `decode`: SmolLM2-135M-Instruct (quantized weights unless `dequantize`), a bank of M
//! random memories (keys and values N(0, 1), SmolLM2's shape: 30 layers x 3 kv heads x
//! 64), k = 2 in every layer; a 13-token prompt, then TOKENS (default 16) greedy tokens
//! through `Llama::forward_traced` (as `generate` does), the fastest of 3 runs after a
//! warm-up. Per generated token: the time
//! without memories (the model), with them, and the memory part of the attention kernel
//! split into similarity (one matrix product per kv head), top-k and the rest
//! (`langevin_emt::attention::profile`), with the retrieval before this change
//! (`set_plain_retrieval`: candle's matrix product, then an index vector,
//! `select_nth_unstable_by` and a sort) and now (the SIMD similarity kernel and the
//! scanning top-k). Then both parts alone on one layer's `[3, M, 64]` bank, cache-warm.

use std::time::Instant;

use anyhow::Context;
use candle_core::{Device, Tensor};
use langevin_emt::attention::{profile, set_plain_retrieval, similarities, top_k_rows, unit_norm};
use langevin_emt::needle::make_items;
use langevin_emt::{EmtConfig, KvCache, Llama, Memory, MemoryBank, WeightFormat};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("doc") => doc(&args[1..]),
        Some("decode") => decode(&args[1..]),
        _ => anyhow::bail!(
            "usage: bank_scaling doc N | decode SIZES [TOKENS] [dequantize] [THREADS]"
        ),
    }
}

/// Needle documents (20 filler sentences and one fact each) joined until the text has
/// at least `n` tokens.
fn doc(args: &[String]) -> anyhow::Result<()> {
    let n: usize = args.first().context("N")?.parse().context("N")?;
    let (_, tok) = Llama::load(langevin_emt::find_model(None)?)?;
    let mut text = String::new();
    let mut seed = 0;
    while tok.encode(&text)?.len() < n {
        for item in make_items(20, 20, seed)? {
            if !text.is_empty() {
                text.push_str("\n\n");
            }
            text.push_str(&item.document);
        }
        seed += 1;
    }
    // Drop whole documents from the end while still at least n tokens.
    while let Some(cut) = text.rfind("\n\n") {
        if tok.encode(&text[..cut])?.len() < n {
            break;
        }
        text.truncate(cut);
    }
    println!("{text}");
    eprintln!("{} tokens", tok.encode(&text)?.len());
    Ok(())
}

/// A bank of `m` random memories with the model's shape.
fn synthetic_bank(model: &Llama, m: usize) -> anyhow::Result<MemoryBank> {
    let cfg = model.config();
    let shape = (cfg.n_kv_heads, m, cfg.head_dim());
    let mut keys = Vec::with_capacity(cfg.n_layers);
    let mut values = Vec::with_capacity(cfg.n_layers);
    for _ in 0..cfg.n_layers {
        keys.push(Tensor::randn(0f32, 1f32, shape, &Device::Cpu)?);
        values.push(Tensor::randn(0f32, 1f32, shape, &Device::Cpu)?);
    }
    let ids: Vec<u32> = (0..m).map(|i| (i % 1000) as u32 + 100).collect();
    Ok(MemoryBank::from_tensors(keys, values, ids)?)
}

/// Seconds per generated token over `n` greedy steps after `prompt`.
fn per_token(
    model: &Llama,
    prompt: &[u32],
    memory: Option<Memory<'_>>,
    n: usize,
) -> anyhow::Result<(f64, profile::Profile)> {
    let mut cache = KvCache::new();
    let logits = match memory {
        Some(m) => model.forward_traced(prompt, &mut cache, m)?.0,
        None => model.forward(prompt, &mut cache, None)?,
    };
    let mut next = logits.argmax(0)?.to_scalar::<u32>()?;
    profile::take();
    let t0 = Instant::now();
    for _ in 0..n {
        let logits = match memory {
            Some(m) => model.forward_traced(&[next], &mut cache, m)?.0,
            None => model.forward(&[next], &mut cache, None)?,
        };
        next = logits.argmax(0)?.to_scalar::<u32>()?;
    }
    Ok((t0.elapsed().as_secs_f64() / n as f64, profile::take()))
}

fn decode(args: &[String]) -> anyhow::Result<()> {
    let sizes: Vec<usize> = args
        .first()
        .map_or("1000,10000,100000", String::as_str)
        .split(',')
        .map(|s| s.parse().context("SIZES"))
        .collect::<anyhow::Result<_>>()?;
    let n: usize = args
        .get(1)
        .map_or(Ok(16), |s| s.parse())
        .context("TOKENS")?;
    let format = match args.get(2).map(String::as_str) {
        Some("dequantize") => WeightFormat::Dequantized,
        None | Some("quantized") => WeightFormat::Quantized,
        Some(o) => anyhow::bail!("unknown weight format {o:?}"),
    };
    let threads: usize = args
        .get(3)
        .map_or(Ok(1), |s| s.parse())
        .context("THREADS")?;
    langevin_emt::set_threads(threads)?;
    let (model, tok) = Llama::load_with(langevin_emt::find_model(None)?, format)?;
    let prompt = tok.encode("Question: Where does Marta live?\nAnswer: Marta lives in")?;
    eprintln!(
        "{format:?} weights, {} thread(s), prompt {} tokens, {n} generated tokens per size",
        langevin_emt::threads(),
        prompt.len()
    );
    profile::enable(true);
    // Warm up, then the model alone (the fastest of 3 runs: the machine is shared).
    per_token(&model, &prompt, None, 4)?;
    let mut base = f64::INFINITY;
    for _ in 0..3 {
        base = base.min(per_token(&model, &prompt, None, n)?.0);
    }
    println!("model alone (no memories): {:.2} ms/token", base * 1e3);
    println!();
    println!("| memories | retrieval | ms/token | model alone | memory part | similarity | top-k | rest | bank in RAM |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let ec = EmtConfig::with_top_k(2);
    for &m in &sizes {
        let bank = synthetic_bank(&model, m)?;
        let mem = Memory {
            bank: &bank,
            config: &ec,
        };
        for (plain, label) in [(true, "previous"), (false, "now")] {
            set_plain_retrieval(plain);
            // A warm-up run (the first run with a new bank size pays page faults and the
            // allocator's adjustments), then the fastest of 3.
            per_token(&model, &prompt, Some(mem), 4)?;
            let (mut t, mut p) = (f64::INFINITY, profile::Profile::default());
            for _ in 0..3 {
                let (t1, p1) = per_token(&model, &prompt, Some(mem), n)?;
                if t1 < t {
                    (t, p) = (t1, p1);
                }
            }
            let ms = |ns: u64| ns as f64 / n as f64 / 1e6;
            let cfg = model.config();
            let bytes = 3 * cfg.n_layers * cfg.n_kv_heads * m * cfg.head_dim() * 4;
            println!(
                "| {m} | {label} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {:.1} | {:.2} GB |",
                t * 1e3,
                base * 1e3,
                ms(p.similarity_ns + p.top_k_ns + p.rest_ns),
                ms(p.similarity_ns),
                ms(p.top_k_ns),
                ms(p.rest_ns),
                bytes as f64 / 1e9
            );
        }
    }
    println!();
    println!("One layer call of a generated token: similarities of 3 x 3 unit queries with [3, M, 64] unit keys, and top-k (k = 2) of the [9, M] rows:");
    println!();
    println!("| M | similarity: candle matmul | now (SIMD kernel) | speed-up | top-k: previous (select_nth + sort) | now (scan) | speed-up |");
    println!("|---|---|---|---|---|---|---|");
    for &m in &sizes {
        let cfg = model.config();
        let u = unit_norm(&Tensor::randn(
            0f32,
            1f32,
            (cfg.n_kv_heads, m, cfg.head_dim()),
            &Device::Cpu,
        )?)?;
        let q = unit_norm(&Tensor::randn(
            0f32,
            1f32,
            (cfg.n_kv_heads, 3, cfg.head_dim()),
            &Device::Cpu,
        )?)?;
        let reps_s = (3_000_000 / m).max(3);
        let time_s = |f: &dyn Fn() -> anyhow::Result<Vec<f32>>| -> anyhow::Result<f64> {
            f()?;
            let t0 = Instant::now();
            for _ in 0..reps_s {
                std::hint::black_box(f()?);
            }
            Ok(t0.elapsed().as_secs_f64() / reps_s as f64)
        };
        set_plain_retrieval(true);
        let gemm = time_s(&|| Ok(similarities(&q, &u)?))?;
        set_plain_retrieval(false);
        let simd = time_s(&|| Ok(similarities(&q, &u)?))?;
        let sims = Tensor::randn(0f32, 0.2f32, 9 * m, &Device::Cpu)?.to_vec1::<f32>()?;
        let reps = (2_000_000 / m).max(3);
        let time = |f: &dyn Fn() -> Vec<u32>| {
            let want = f();
            let t0 = Instant::now();
            for _ in 0..reps {
                std::hint::black_box(f());
            }
            (t0.elapsed().as_secs_f64() / reps as f64, want)
        };
        set_plain_retrieval(true);
        let (old, a) = time(&|| top_k_rows(&sims, m, 2));
        set_plain_retrieval(false);
        let (new, b) = time(&|| top_k_rows(&sims, m, 2));
        anyhow::ensure!(a == b, "the two selections differ at M = {m}");
        println!(
            "| {m} | {:.3} ms | {:.3} ms | {:.1}x | {:.3} ms | {:.3} ms | {:.1}x |",
            gemm * 1e3,
            simd * 1e3,
            gemm / simd,
            old * 1e3,
            new * 1e3,
            old / new
        );
    }
    Ok(())
}
