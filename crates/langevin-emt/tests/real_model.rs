//! Tests on the real SmolLM2-135M-Instruct GGUF (fetched by scripts/fetch-smollm2.sh).
//!
//! All are `#[ignore]`d by default (the README's test command needs no model); `.ci/run`
//! fetches the model and runs the fast ones:
//! `cargo test -p langevin-emt --test real_model -- --ignored --skip needle_benchmark`.
//! The behavioural one takes minutes on CPU:
//! `cargo test --release -p langevin-emt --test real_model -- --ignored --nocapture needle`.

use std::path::PathBuf;

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use langevin_emt::needle::{evaluate, make_items, markdown_table, Condition};
use langevin_emt::{KvCache, Llama, Tokenizer, WeightFormat};

/// The model as `langevin emt` finds it ([`langevin_emt::find_model`]). These tests are
/// `#[ignore]`d by default (`cargo test` lists them as ignored); `.ci/run` fetches the
/// model and runs them with `--ignored`, where a missing model fails, naming every
/// place looked.
fn model_path() -> PathBuf {
    langevin_emt::find_model(None).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
#[ignore = "needs the model (scripts/fetch-smollm2.sh); .ci/run runs it"]
fn plain_model_matches_candle_quantized_llama() -> anyhow::Result<()> {
    let path = model_path();
    let (ours, tok) = Llama::load(&path)?;
    let cfg = ours.config();
    assert_eq!(
        (
            cfg.n_layers,
            cfg.hidden_size,
            cfg.n_heads,
            cfg.n_kv_heads,
            cfg.head_dim()
        ),
        (30, 576, 9, 3, 64)
    );
    assert_eq!(cfg.rope_theta, 100_000.0);
    let mut f = std::fs::File::open(&path)?;
    let ct = gguf_file::Content::read(&mut f)?;
    let mut theirs = candle_transformers::models::quantized_llama::ModelWeights::from_gguf(
        ct,
        &mut f,
        &Device::Cpu,
    )?;
    let ids = tok.encode("The capital of France is Paris. The capital of Germany is")?;
    let want = theirs
        .forward(&Tensor::new(ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?, 0)?
        .squeeze(0)?;
    let mut cache = KvCache::new();
    let got = ours.forward(&ids, &mut cache, None)?;
    let scale = want.abs()?.max(0)?.to_scalar::<f32>()?;
    let diff = (&got - &want)?.abs()?.max(0)?.to_scalar::<f32>()?;
    eprintln!("prompt: max |logit diff| = {diff:e} (max |logit| = {scale})");
    assert!(diff < 1e-5, "prompt logits differ by {diff}");
    // Cached single-token steps.
    let mut next = got.argmax(0)?.to_scalar::<u32>()?;
    eprintln!("greedy continuation: {:?}", tok.decode(&[next], false)?);
    for step in 0..3 {
        let pos = ids.len() + step;
        let want = theirs
            .forward(&Tensor::new(&[next], &Device::Cpu)?.unsqueeze(0)?, pos)?
            .squeeze(0)?;
        let got = ours.forward(&[next], &mut cache, None)?;
        let diff = (&got - &want)?.abs()?.max(0)?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "step {step} logits differ by {diff}");
        next = got.argmax(0)?.to_scalar::<u32>()?;
    }
    Ok(())
}

#[test]
#[ignore = "needs the model (scripts/fetch-smollm2.sh); .ci/run runs it"]
fn dequantized_weights_agree_with_quantized() -> anyhow::Result<()> {
    let path = model_path();
    let (q, tok) = Llama::load_with(&path, WeightFormat::Quantized)?;
    let (f, _) = Llama::load_with(&path, WeightFormat::Dequantized)?;
    let ids =
        tok.encode("Question: What is the capital of France?\nAnswer: The capital of France is")?;
    let lq = q.forward(&ids, &mut KvCache::new(), None)?;
    let lf = f.forward(&ids, &mut KvCache::new(), None)?;
    let diff = (&lq - &lf)?.abs()?.max(0)?.to_scalar::<f32>()?;
    eprintln!("quantized vs dequantized: max |logit diff| = {diff}");
    // Same weights; only the 8-bit activation quantization of the quantized path differs.
    assert_eq!(
        lq.argmax(0)?.to_scalar::<u32>()?,
        lf.argmax(0)?.to_scalar::<u32>()?
    );
    assert!(diff < 2.0, "{diff}");
    Ok(())
}

#[test]
#[ignore = "needs the model (scripts/fetch-smollm2.sh); .ci/run runs it"]
fn tokenizer_matches_reference_ids() -> anyhow::Result<()> {
    let path = model_path();
    let mut f = std::fs::File::open(&path)?;
    let ct = gguf_file::Content::read(&mut f)?;
    let tok = Tokenizer::from_gguf(&ct)?;
    // Reference ids: Hugging Face `tokenizers` 0.22 built from this GGUF's vocabulary and
    // merges with SmolLM2's pre-tokenizer, by this script:
    //   tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)},
    //                              merges=[tuple(m.split(' ', 1)) for m in merges]))
    //   tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
    //       pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    //   print(tok.encode(s).ids)
    let cases: &[(&str, &[u32])] = &[
        ("Hello, world!", &[19556, 28, 905, 17]),
        (
            "Question: Where does Alice live?\nAnswer: Alice lives in",
            &[
                17872, 42, 7655, 1072, 8590, 2330, 47, 198, 21350, 42, 8590, 2397, 281,
            ],
        ),
        (
            "In 2024 the caf\u{e9} cost 3.50\u{20ac} \u{2014} isn't it?",
            &[
                788, 216, 34, 32, 34, 36, 260, 37366, 1708, 216, 35, 30, 37, 32, 14195, 1841, 3247,
                982, 357, 47,
            ],
        ),
        (
            "  leading spaces\n\n\ttabs  ",
            &[216, 2899, 5600, 1116, 197, 100, 7366, 256],
        ),
    ];
    for (text, want) in cases {
        let got = tok.encode(text)?;
        assert_eq!(&got, want, "{text:?}");
        assert_eq!(tok.decode(&got, false)?, *text);
    }
    let chat = tok.encode("<|im_start|>user\nHi<|im_end|>")?;
    assert_eq!(chat.first(), tok.token_id("<|im_start|>").as_ref());
    assert_eq!(chat.last(), tok.token_id("<|im_end|>").as_ref());
    Ok(())
}

/// The acceptance criteria of the behavioural benchmark (30 items, 2 greedy tokens).
#[test]
#[ignore = "needs the model file and several minutes of CPU"]
fn needle_benchmark_meets_acceptance() -> anyhow::Result<()> {
    let path = model_path();
    let (model, tok) = Llama::load_with(&path, WeightFormat::Dequantized)?;
    let items = make_items(30, 20, 0)?;
    let conditions = [
        Condition::NoMemory,
        Condition::InContext,
        Condition::Memory { top_k: 2 },
        Condition::OtherMemory { top_k: 2 },
        Condition::RotatedMemory { top_k: 2 },
    ];
    let report = evaluate(&model, &tok, &items, &conditions, 2, |m| eprintln!("{m}"))?;
    eprintln!("{}", markdown_table(&report));
    let acc: Vec<f64> = report.results.iter().map(|r| r.accuracy).collect();
    let (none, ctx, mem, other, rot) = (acc[0], acc[1], acc[2], acc[3], acc[4]);
    assert!(none <= 0.10, "no memory {none}");
    assert!(ctx >= 0.90, "in context {ctx}");
    assert!(mem >= 0.60, "memory {mem}");
    assert!(mem - none >= 0.50, "memory gain {}", mem - none);
    assert!(other <= 0.10, "other memory {other}");
    assert!(rot < mem, "rotated keys should be worse: {rot} vs {mem}");
    Ok(())
}
