//! `langevin emt` without the downloaded SmolLM2: a toy GGUF file (random llama
//! weights from `Llama::random_gguf`, a byte-level vocabulary of the end token and
//! the 256 byte symbols, and an all-zero output layer so that greedy decoding picks
//! token 0, the end-of-text token, at every step) exercises the CLI's paths that do
//! not depend on what the model says: the empty-answer notice, the memory-bank work
//! estimate, the up-front guards, and saved memory banks (`emt index`, `ask --bank`).
//! The same with the real SmolLM2: `cli_emt_real.rs`.

mod common;

use std::path::Path;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use common::{expect, langevin, path_str, write};
use langevin_emt::{Llama, LlamaConfig};

/// Writes the toy model to `path`. With `eos`, token 0 (`<|endoftext|>`, a control
/// token) is declared the end token; without, the model has no end token and
/// generates token 0 until `--max-tokens`.
fn toy_model(path: &Path, eos: bool) {
    toy_model_seeded(path, eos, 3)
}

/// [`toy_model`] with other random weights for another `seed`.
fn toy_model_seeded(path: &Path, eos: bool, seed: u64) {
    let cfg = LlamaConfig {
        vocab_size: 257,
        ..LlamaConfig::tiny()
    };
    let bytes = Llama::random_gguf(&cfg, seed).unwrap();
    let mut r = std::io::Cursor::new(bytes);
    let ct = gguf_file::Content::read(&mut r).unwrap();
    let dev = Device::Cpu;
    let mut tensors: Vec<(String, QTensor)> = ct
        .tensor_infos
        .keys()
        .map(|name| (name.clone(), ct.tensor(&mut r, name, &dev).unwrap()))
        .collect();
    let zeros = Tensor::zeros(
        (cfg.vocab_size, cfg.hidden_size),
        candle_core::DType::F32,
        &dev,
    )
    .unwrap();
    tensors.push((
        "output.weight".into(),
        QTensor::quantize(&zeros, GgmlDType::F32).unwrap(),
    ));
    // GPT-2's byte-to-symbol map (printable bytes map to themselves).
    let mut symbols: Vec<char> = Vec::with_capacity(256);
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    let mut extra = 0;
    for b in 0..256u32 {
        if printable(b) {
            symbols.push(char::from_u32(b).unwrap());
        } else {
            symbols.push(char::from_u32(256 + extra).unwrap());
            extra += 1;
        }
    }
    use gguf_file::Value;
    let mut tokens = vec![Value::String("<|endoftext|>".into())];
    tokens.extend(symbols.iter().map(|c| Value::String(c.to_string())));
    let mut types = vec![Value::I32(3)];
    types.extend((0..256).map(|_| Value::I32(1)));
    let mut md: Vec<(String, Value)> = ct.metadata.into_iter().collect();
    md.push(("tokenizer.ggml.model".into(), Value::String("gpt2".into())));
    md.push(("tokenizer.ggml.tokens".into(), Value::Array(tokens)));
    md.push(("tokenizer.ggml.merges".into(), Value::Array(Vec::new())));
    md.push(("tokenizer.ggml.token_type".into(), Value::Array(types)));
    if eos {
        md.push(("tokenizer.ggml.eos_token_id".into(), Value::U32(0)));
    }
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut f = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut f, &md_refs, &t_refs).unwrap();
}

fn run(args: &[&str]) -> (i32, String, String) {
    let o = langevin(args);
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn an_empty_answer_is_flagged_with_its_reason() {
    let tmp = common::tempdir();
    let t = tmp.path();
    let with_eos = t.join("eos.gguf");
    let without = t.join("noeos.gguf");
    toy_model(&with_eos, true);
    toy_model(&without, false);
    let q = [
        "emt",
        "ask",
        "--no-memory",
        "--question",
        "Where?",
        "--max-tokens",
        "4",
    ];

    // The end token at once: exit 0, "empty": true, the reason, a notice on stderr.
    let (code, out, err) = run(&[&q[..], &["--json", "--model", path_str(&with_eos)]].concat());
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["answer"], "");
    assert_eq!(v["empty"], true);
    assert!(
        v["empty_reason"]
            .as_str()
            .unwrap()
            .contains("end-of-text token at once"),
        "{v}"
    );
    assert!(
        err.contains("notice: the model produced no answer text"),
        "{err}"
    );

    // Only control tokens (no end token declared): the other reason.
    let (code, out, err) = run(&[&q[..], &["--json", "--model", path_str(&without)]].concat());
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["empty"], true);
    assert!(
        v["empty_reason"]
            .as_str()
            .unwrap()
            .contains("control tokens"),
        "{v}"
    );

    // Plain text output: the notice too (the answer line is empty).
    let (code, _, err) = run(&[&q[..], &["--model", path_str(&with_eos)]].concat());
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("no answer text"), "{err}");

    // An answer prefix is not model text: still empty, but the answer is the prefix.
    let (code, out, _) = run(&[
        &q[..],
        &[
            "--json",
            "--answer-prefix",
            "It is",
            "--model",
            path_str(&with_eos),
        ],
    ]
    .concat());
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["answer"], "It is");
    assert_eq!(v["empty"], true);
}

#[test]
fn a_long_memory_document_announces_its_work_unless_quiet() {
    let tmp = common::tempdir();
    let t = tmp.path();
    let model = t.join("m.gguf");
    toy_model(&model, true);
    // 2000 bytes = 2000 tokens of the byte vocabulary; the toy context is 256, so the
    // bank is built in ceil((2000 - 256) / 256) + 1 = 8 windows.
    let doc = write(t, "doc.txt", "abcdefghij".repeat(200));
    let args = [
        "emt",
        "ask",
        "--memory",
        &doc,
        "--question",
        "What?",
        "--max-tokens",
        "2",
        "--model",
        path_str(&model),
    ];
    let (code, _, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("building the memory bank: 2000 document tokens in 8 model windows"),
        "{err}"
    );
    let (code, _, err) = run(&[&args[..], &["--quiet"]].concat());
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("building the memory bank"), "{err}");
}

#[test]
fn absurd_sizes_and_bad_report_paths_are_refused_up_front() {
    let tmp = common::tempdir();
    let t = tmp.path();
    let model = t.join("m.gguf");
    toy_model(&model, true);
    let m = path_str(&model);
    expect(
        &[
            "emt",
            "ask",
            "--no-memory",
            "--question",
            "q",
            "--max-tokens",
            "100000",
            "--model",
            m,
        ],
        2,
        &["--max-tokens 100000", "context of 256 tokens"],
    );
    for (flag, value) in [
        ("--sim-threshold", "nan"),
        ("--sim-threshold", "2"),
        ("--uncertainty-threshold", "nan"),
        ("--uncertainty-threshold", "-1"),
        ("--uncertainty-top-k", "0"),
    ] {
        expect(
            &[
                "emt",
                "ask",
                "--no-memory",
                "--question",
                "q",
                &format!("{flag}={value}"),
                "--model",
                m,
            ],
            2,
            &[flag],
        );
    }
    // `emt bench` checks its report path and item count before loading any model.
    let dir = t.join("adir");
    std::fs::create_dir(&dir).unwrap();
    expect(
        &["emt", "bench", "--json-out", path_str(&dir), "--model", m],
        2,
        &["is a directory"],
    );
    let missing = t.join("no/such/folder/r.json");
    expect(
        &[
            "emt",
            "bench",
            "--json-out",
            path_str(&missing),
            "--model",
            m,
        ],
        2,
        &["does not exist"],
    );
    expect(
        &["emt", "bench", "--items", "100000000000", "--model", m],
        2,
        &["--items 100000000000", "at most 10000"],
    );
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The answer and citations of `emt ask ... --json` (not the speed).
fn answer_and_citations(args: &[&str]) -> (serde_json::Value, serde_json::Value) {
    let (code, out, err) = run(args);
    assert_eq!(code, 0, "{args:?}: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    (v["answer"].clone(), v["citations"].clone())
}

#[test]
fn a_saved_bank_answers_as_its_document_and_other_models_are_refused() {
    let tmp = common::tempdir();
    let t = tmp.path();
    // No end token: the toy model generates 4 control tokens, each retrieving memories,
    // so there are citations to compare.
    let model_a = t.join("a.gguf");
    let model_b = t.join("b.gguf");
    toy_model_seeded(&model_a, false, 3);
    toy_model_seeded(&model_b, false, 4);
    let (a, b) = (path_str(&model_a), path_str(&model_b));
    let doc = write(
        t,
        "doc.txt",
        "The mill by the river was rebuilt. Marta lives in Oslo. The bakery opens at six.",
    );
    let ask = |source: &[&str], model: &str| -> Vec<String> {
        let mut v: Vec<String> = ["emt", "ask", "--question", "Where does Marta live?"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(source.iter().map(|s| s.to_string()));
        v.extend(
            [
                "--max-tokens",
                "4",
                "--json",
                "--threads",
                "1",
                "--model",
                model,
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        v
    };
    let from_doc = answer_and_citations(&strs(&ask(&["--memory", &doc], a)));
    assert!(
        from_doc.1.as_array().is_some_and(|c| !c.is_empty()),
        "the toy run should cite something: {from_doc:?}"
    );
    for (name, extra) in [("f32.bank", None), ("f16.bank", Some("--f16"))] {
        let bank = t.join(name);
        let bank_s = path_str(&bank);
        let mut args = vec![
            "emt", "index", &doc, "--out", bank_s, "--json", "--model", a,
        ];
        args.extend(extra);
        let (code, out, err) = run(&args);
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        // Byte vocabulary, no special token in the text: one memory per byte.
        assert_eq!(v["memories"], 80, "{v}");
        assert_eq!(v["document_tokens"], 80, "{v}");
        assert_eq!(v["bytes"], std::fs::metadata(&bank).unwrap().len(), "{v}");
        assert_eq!(v["dtype"], if extra.is_some() { "f16" } else { "f32" });
        assert!(v["tokens_per_second"].as_f64().unwrap() > 0.0, "{v}");
        // The same answer and citations as from the document (f16 too, on this toy
        // model: no near-tie in its retrieval).
        let from_bank = answer_and_citations(&strs(&ask(&["--bank", bank_s], a)));
        assert_eq!(from_bank, from_doc, "{name}");
        // Another model's bank: refused, naming the file.
        expect(
            &strs(&ask(&["--bank", bank_s], b)),
            2,
            &[bank_s, "was made with another model", "weights differ"],
        );
    }
    // The text summary line.
    let bank = t.join("text.bank");
    let (code, out, err) = run(&["emt", "index", &doc, "--out", path_str(&bank), "--model", a]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("80 memories from 80 document tokens") && out.contains("tokens/s"),
        "{out}"
    );
    // A truncated bank: refused, naming the file.
    let bytes = std::fs::read(&bank).unwrap();
    let cut = t.join("cut.bank");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    expect(
        &strs(&ask(&["--bank", path_str(&cut)], a)),
        2,
        &[path_str(&cut), "truncated or corrupt"],
    );
    // Not a file; both --bank and --memory; an --out folder that does not exist.
    let missing = t.join("none.bank");
    expect(
        &strs(&ask(&["--bank", path_str(&missing)], a)),
        2,
        &["none.bank", "no such file"],
    );
    expect(
        &strs(&ask(&["--bank", path_str(&bank), "--memory", &doc], a)),
        2,
        &["cannot be used with"],
    );
    let nowhere = t.join("no/such/dir/x.bank");
    expect(
        &[
            "emt",
            "index",
            &doc,
            "--out",
            path_str(&nowhere),
            "--model",
            a,
        ],
        2,
        &["does not exist"],
    );
    expect(
        &["emt", "index", &doc, "--out", path_str(t), "--model", a],
        2,
        &["is a directory"],
    );
}

#[test]
fn weight_format_and_thread_flags() {
    let tmp = common::tempdir();
    let model = tmp.path().join("m.gguf");
    toy_model(&model, true);
    let m = path_str(&model);
    let q = [
        "emt",
        "ask",
        "--no-memory",
        "--question",
        "q",
        "--max-tokens",
        "2",
    ];
    // Quantized is the default; --dequantize and the old --quantized both run.
    for extra in [
        &[][..],
        &["--dequantize"],
        &["--quantized"],
        &["--threads", "2"],
    ] {
        let (code, _, err) = run(&[&q[..], extra, &["--model", m]].concat());
        assert_eq!(code, 0, "{extra:?}: {err}");
    }
    expect(
        &[&q[..], &["--dequantize", "--quantized", "--model", m]].concat(),
        2,
        &["cannot be used with"],
    );
    expect(
        &[&q[..], &["--threads", "0", "--model", m]].concat(),
        2,
        &["--threads must be at least 1"],
    );
    // The hidden alias stays out of the help; the new flag is in it.
    let (_, help, _) = run(&["emt", "ask", "--help"]);
    assert!(
        help.contains("--dequantize") && help.contains("--threads"),
        "{help}"
    );
    assert!(!help.contains("--quantized"), "{help}");
    let (_, help, _) = run(&["emt", "index", "--help"]);
    assert!(help.contains("--out") && help.contains("--f16"), "{help}");
}
