//! Tests on the real SmolLM2-135M-Instruct GGUF (fetched by scripts/fetch-smollm2.sh).
//!
//! All are `#[ignore]`d by default (the README's test command needs no model); `.ci/run`
//! fetches the model and runs the fast ones:
//! `cargo test -p langevin-emt --test real_model -- --ignored --skip needle_benchmark`
//! (the CLI's own real-model tests, `emt index` and `ask --bank`, are in
//! crates/langevin-cli/tests/cli_emt_real.rs).
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
    // candle's own quantized matmul inside our decoder: the same arithmetic as candle's
    // quantized llama, so the logits agree to rounding; the default block kernels are
    // checked against it below.
    let (ours, tok) = Llama::load_with(&path, WeightFormat::CandleQuantized)?;
    let (fast, _) = Llama::load(&path)?;
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
    // Not bit-identical: the decoder computes grouped-query attention without repeating
    // the KV heads (scores equal to ≤ 7e-6 of ~10, measured per layer), and this model
    // amplifies such rounding to ~0.8 on logits of scale 28 (the f32 weights differ by
    // 0.66, the block kernels by 0.73). Same greedy tokens, and within 2.0.
    assert_eq!(
        got.argmax(0)?.to_scalar::<u32>()?,
        want.argmax(0)?.to_scalar::<u32>()?
    );
    assert!(diff < 2.0, "prompt logits differ by {diff}");
    // The default block kernels keep the activation scales in f32 where candle rounds them
    // to f16 (and sum in another order): measured 0.73 on logits of scale 28 (2.6%), the
    // same greedy token. Allowed: the same argmax and 2.0, as for the f32 weights below.
    let fast_logits = fast.forward(&ids, &mut KvCache::new(), None)?;
    let d_fast = (&fast_logits - &want)?.abs()?.max(0)?.to_scalar::<f32>()?;
    eprintln!("block kernels: max |logit diff| = {d_fast:e}");
    assert_eq!(
        fast_logits.argmax(0)?.to_scalar::<u32>()?,
        want.argmax(0)?.to_scalar::<u32>()?
    );
    assert!(d_fast < 2.0, "block kernels' logits differ by {d_fast}");
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
        assert!(diff < 2.0, "step {step} logits differ by {diff}");
        next = got.argmax(0)?.to_scalar::<u32>()?;
        assert_eq!(next, want.argmax(0)?.to_scalar::<u32>()?, "step {step}");
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

/// A memory bank saved to a file (f32, the default) and loaded back gives the logits,
/// generation and citations of the bank it was saved from, bit for bit; an f16 file is
/// half the size (what it changes is printed: near-ties in retrieval flip); a bank made
/// with the quantized weights loads into the dequantized model (same GGUF), and not
/// into a random model of the same dimensions.
#[test]
#[ignore = "needs the model (scripts/fetch-smollm2.sh); .ci/run runs it"]
fn saved_bank_reproduces_generation_and_citations() -> anyhow::Result<()> {
    use langevin_emt::{
        citations, generate, BankDType, EmtConfig, EmtError, GenerateConfig, LlamaConfig, Memory,
        MemoryBank, MemoryOptions, SaveOptions,
    };
    let path = model_path();
    let (model, tok) = Llama::load_with(&path, WeightFormat::Quantized)?;
    let items = make_items(2, 20, 0)?;
    let doc = format!("{} {}", items[0].document, items[1].document);
    let bank = MemoryBank::from_text(&model, &tok, &doc, &MemoryOptions::default())?;
    let dir = std::env::temp_dir().join(format!("langevin-emt-real-bank-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let ec = EmtConfig::with_top_k(2);
    let cfg = GenerateConfig {
        max_tokens: 12,
        eos: tok.eos_id(),
        ..Default::default()
    };
    let prompt = tok.encode(&items[0].question())?;
    let run = |b: &MemoryBank| -> anyhow::Result<_> {
        let mem = Memory {
            bank: b,
            config: &ec,
        };
        let g = generate(&model, &prompt, Some(mem), &cfg)?;
        let logits = model.forward_all(&prompt, Some(mem))?;
        Ok((g.clone(), citations(b, &g, 3), logits))
    };
    let (want, want_cites, want_logits) = run(&bank)?;
    eprintln!(
        "answer {:?}, citations {:?}",
        tok.decode(&want.tokens, true)?,
        want_cites.iter().map(|c| &c.text).collect::<Vec<_>>()
    );
    assert!(!want_cites.is_empty());
    for dtype in [BankDType::F32, BankDType::F16] {
        let file = dir.join(format!("{dtype:?}.safetensors"));
        let bytes = bank.save_with(
            &file,
            &model,
            &SaveOptions {
                dtype,
                model_name: langevin_emt::bank_io::gguf_model_name(&path),
            },
        )?;
        let loaded = MemoryBank::load(&file, &model)?;
        let (got, got_cites, got_logits) = run(&loaded)?;
        let diff = (&got_logits - &want_logits)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        let scale = want_logits
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        eprintln!(
            "{dtype:?}: {} memories, {bytes} bytes, max |logit diff| {diff:e} (max |logit| {scale})",
            loaded.len()
        );
        match dtype {
            BankDType::F32 => {
                assert_eq!(diff, 0.0);
                assert_eq!(got.tokens, want.tokens);
                assert_eq!(got.token_citations, want.token_citations);
                assert_eq!(got_cites, want_cites);
            }
            BankDType::F16 => {
                eprintln!(
                    "F16: same tokens: {}, same per-token citations: {}, same citations: {}",
                    got.tokens == want.tokens,
                    got.token_citations == want.token_citations,
                    got_cites == want_cites
                );
                let kv = 2 * 30 * 3 * 64 * loaded.len() as u64;
                let f32_bytes = std::fs::metadata(dir.join("F32.safetensors"))?.len();
                assert!(f32_bytes - bytes > kv * 2 - 4096, "{bytes} vs {f32_bytes}");
            }
        }
        let (info, opts) = MemoryBank::file_info(&file)?;
        // The GGUF's general.name (this file says "Smollm2 135M 8k Lc100K Mix1 Ep2").
        assert!(
            info.name.as_deref().is_some_and(|n| n.contains("135M")),
            "{info:?}"
        );
        assert_eq!(opts, Some(MemoryOptions::default()));
    }
    // Same GGUF, dequantized weights: accepted.
    let file = dir.join("F16.safetensors");
    let (deq, _) = Llama::load_with(&path, WeightFormat::Dequantized)?;
    assert_eq!(MemoryBank::load(&file, &deq)?.len(), bank.len());
    let near = langevin_emt::bank_io::probe_distance_to(&file, &deq)?;
    eprintln!("probe distance, quantized vs dequantized weights: {near:e}");
    // Measured 5.6e-2 (the tolerance is 0.25).
    assert!(near > 0.0 && near < langevin_emt::bank_io::PROBE_TOLERANCE / 2.0);
    // A random model of SmolLM2's dimensions: refused.
    let random = Llama::random(&LlamaConfig::smollm2_135m(), 1)?;
    match MemoryBank::load(&file, &random) {
        Err(e @ EmtError::BankModelMismatch { .. }) => {
            eprintln!("{e}");
            assert!(e.to_string().contains("weights differ"), "{e}");
        }
        other => panic!("expected a model mismatch, got {other:?}"),
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// The counterfactual benchmark's documents hit their length in real tokens, the "8k"
/// document fits the context with its in-context prompt, and the prior check works
/// (the model knows the capital of France). A few seconds.
#[test]
#[ignore = "needs the model (scripts/fetch-smollm2.sh); .ci/run runs it"]
fn counterfactual_documents_fit_and_the_prior_check_works() -> anyhow::Result<()> {
    use langevin_emt::counterfactual::{candidates, check_prior, make_documents, DocumentSpec};
    use langevin_emt::rag::{chat_prompt, SYSTEM_DOCUMENT};
    let (model, tok) = Llama::load(model_path())?;
    let all = candidates();
    for (target, facts) in [(1000, 5), (7900, 15)] {
        let spec = DocumentSpec {
            n_docs: 1,
            facts_per_doc: facts,
            target_tokens: target,
            seed: 3,
        };
        let docs = make_documents(&all, &spec, |s| Ok(tok.encode(s)?.len()))?;
        let d = &docs[0];
        let n = tok.encode(&d.text)?.len();
        assert_eq!(n, d.n_tokens);
        assert!(n <= target && n + 40 >= target, "{n} tokens for {target}");
        for p in &d.facts {
            let (prompt, chat) =
                chat_prompt(&tok, SYSTEM_DOCUMENT, Some(&d.text), &p.fact.question())?;
            assert!(chat, "SmolLM2's GGUF has a chat template");
            let len = tok.encode(&prompt)?.len();
            assert!(len + 24 <= model.config().max_position, "{len}");
        }
    }
    let france = all
        .iter()
        .find(|c| c.question() == "What is the capital of France?")
        .expect("a candidate");
    let pc = check_prior(&model, &tok, france, 16)?;
    eprintln!("{} -> {:?}", france.question(), pc.answer);
    assert!(pc.known, "{:?}", pc.answer);
    Ok(())
}
