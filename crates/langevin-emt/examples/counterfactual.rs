//! The counterfactual long-document benchmark (issue 18): Extended Mind attention against
//! retrieval-augmented generation, the document in context, and no memory, with
//! SmolLM2-135M-Instruct, on documents of about 1k, 8k and 32k tokens.
//!
//! ```text
//! scripts/fetch-smollm2.sh
//! cargo build --release -p langevin-emt --example counterfactual
//! nice -n 5 target/release/examples/counterfactual [--questions 30] [--lengths 1000,7900,32000] ...
//! ```
//!
//! Flags (defaults in brackets):
//! * `--lengths` [1000,7900,32000]: document lengths in tokens (each document has at most
//!   this many); `--labels` [1k,8k,32k];
//! * `--questions` [30]: questions per length; `--facts-per-doc` [5,10,15] (per length, or
//!   one value for all): documents per length = questions / facts per document, rounded up;
//! * `--seed` [0];
//! * `--emt-k` [2,4,8]: Extended Mind attention in all layers with these k;
//!   `--subset-k` [4]: k of the layer-subset ablation; `--subsets` [upper,lower,even];
//! * `--rag-k` [2,4]: chunks placed in the prompt; `--chunk-tokens` [64];
//!   `--rag-embeddings` [maxsim,mean]: MaxSim on the values of layer `--rag-layer` [5],
//!   and/or centered mean hidden states (`--no-center`: not centered), see `rag.rs`;
//! * `--conditions` [none,emt,subset,rag,context]: which conditions run;
//! * `--max-tokens` [24]: greedy answer length limit;
//! * `--bank-max-len` [3072], `--bank-stride` [512]: memory bank windows (the reference's);
//! * `--prefill-chunk` [1024]: tokens per forward pass when prefilling a document;
//! * `--threads` [1]; `--out` [bench/emt/counterfactual]; `--candidates` [0 = all]: use
//!   only the first N candidate facts (for a quick check); `--save-documents`: also write
//!   the documents' texts to `documents.json` (they are reproducible from the seed);
//!   `--replot`: only redraw the plots from `--out`'s `results.json`.
//!
//! Writes `prior_check.json` (every candidate's no-memory answer), `results.json` (every
//! answer, the preparation times, the summary, the run's settings; rewritten after each
//! document), `RESULTS.md` (the table) and `accuracy.png`, `seconds.png` into `--out`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use langevin_emt::counterfactual::{
    ask, candidates, check_prior, make_documents, summarize, Document, DocumentSpec, ItemRecord,
    SharedPrefix, Summary,
};
use langevin_emt::rag::{
    chat_prompt, Embedding, RagIndex, RagOptions, SYSTEM_DOCUMENT, SYSTEM_MEMORY, SYSTEM_PLAIN,
};
use langevin_emt::{EmtConfig, Llama, Memory, MemoryBank, MemoryOptions};
use langevin_plot::{ErrorBarChart, ErrorSeries};
use serde::Serialize;

struct Args {
    lengths: Vec<usize>,
    labels: Vec<String>,
    questions: usize,
    facts_per_doc: Vec<usize>,
    seed: u64,
    emt_k: Vec<usize>,
    subset_k: usize,
    subsets: Vec<String>,
    rag_k: Vec<usize>,
    chunk_tokens: usize,
    center: bool,
    rag_embeddings: Vec<String>,
    rag_layer: usize,
    conditions: Vec<String>,
    max_tokens: usize,
    bank_max_len: usize,
    bank_stride: usize,
    prefill_chunk: usize,
    threads: usize,
    out: PathBuf,
    candidates: usize,
    save_documents: bool,
    replot: bool,
}

fn list<T: std::str::FromStr>(s: &str, flag: &str) -> anyhow::Result<Vec<T>>
where
    T::Err: std::fmt::Display,
{
    s.split(',')
        .filter(|x| !x.trim().is_empty())
        .map(|x| {
            x.trim()
                .parse::<T>()
                .map_err(|e| anyhow::anyhow!("{flag} {x:?}: {e}"))
        })
        .collect()
}

fn label_of(n: usize) -> String {
    format!("{}k", (n as f64 / 1000.0).round() as usize)
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        lengths: vec![1000, 7900, 32000],
        labels: Vec::new(),
        questions: 30,
        facts_per_doc: vec![5, 10, 15],
        seed: 0,
        emt_k: vec![2, 4, 8],
        subset_k: 4,
        subsets: vec!["upper".into(), "lower".into(), "even".into()],
        rag_k: vec![2, 4],
        chunk_tokens: 64,
        center: true,
        rag_embeddings: vec!["maxsim".into(), "mean".into()],
        rag_layer: 5,
        conditions: ["none", "emt", "subset", "rag", "context"]
            .map(String::from)
            .to_vec(),
        max_tokens: 24,
        bank_max_len: 3072,
        bank_stride: 512,
        prefill_chunk: 1024,
        threads: 1,
        out: PathBuf::from("bench/emt/counterfactual"),
        candidates: 0,
        save_documents: false,
        replot: false,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let flag = argv[i].as_str();
        if ["--no-center", "--save-documents", "--replot"].contains(&flag) {
            match flag {
                "--no-center" => a.center = false,
                "--save-documents" => a.save_documents = true,
                _ => a.replot = true,
            }
            i += 1;
            continue;
        }
        let v = argv
            .get(i + 1)
            .with_context(|| format!("{flag} needs a value"))?
            .as_str();
        match flag {
            "--lengths" => a.lengths = list(v, flag)?,
            "--labels" => a.labels = list(v, flag)?,
            "--questions" => a.questions = v.parse().context("--questions")?,
            "--facts-per-doc" => a.facts_per_doc = list(v, flag)?,
            "--seed" => a.seed = v.parse().context("--seed")?,
            "--emt-k" => a.emt_k = list(v, flag)?,
            "--subset-k" => a.subset_k = v.parse().context("--subset-k")?,
            "--subsets" => a.subsets = list(v, flag)?,
            "--rag-k" => a.rag_k = list(v, flag)?,
            "--chunk-tokens" => a.chunk_tokens = v.parse().context("--chunk-tokens")?,
            "--rag-embeddings" => a.rag_embeddings = list(v, flag)?,
            "--rag-layer" => a.rag_layer = v.parse().context("--rag-layer")?,
            "--conditions" => a.conditions = list(v, flag)?,
            "--max-tokens" => a.max_tokens = v.parse().context("--max-tokens")?,
            "--bank-max-len" => a.bank_max_len = v.parse().context("--bank-max-len")?,
            "--bank-stride" => a.bank_stride = v.parse().context("--bank-stride")?,
            "--prefill-chunk" => a.prefill_chunk = v.parse().context("--prefill-chunk")?,
            "--threads" => a.threads = v.parse().context("--threads")?,
            "--out" => a.out = PathBuf::from(v),
            "--candidates" => a.candidates = v.parse().context("--candidates")?,
            other => bail!("unknown flag {other} (see the top of examples/counterfactual.rs)"),
        }
        i += 2;
    }
    if a.lengths.is_empty() || a.questions == 0 || a.max_tokens == 0 {
        bail!("--lengths, --questions and --max-tokens must not be empty or 0");
    }
    if a.labels.is_empty() {
        a.labels = a.lengths.iter().map(|&n| label_of(n)).collect();
    }
    if a.labels.len() != a.lengths.len() {
        bail!("--labels needs one label per length");
    }
    if a.facts_per_doc.len() == 1 {
        a.facts_per_doc = vec![a.facts_per_doc[0]; a.lengths.len()];
    }
    if a.facts_per_doc.len() != a.lengths.len() || a.facts_per_doc.contains(&0) {
        bail!("--facts-per-doc needs one positive value, or one per length");
    }
    for c in &a.conditions {
        if !["none", "emt", "subset", "rag", "context"].contains(&c.as_str()) {
            bail!("--conditions: unknown {c:?} (none, emt, subset, rag, context)");
        }
    }
    for e in &a.rag_embeddings {
        if !["maxsim", "mean"].contains(&e.as_str()) {
            bail!("--rag-embeddings: unknown {e:?} (maxsim, mean)");
        }
    }
    for s in &a.subsets {
        if !["upper", "lower", "even", "odd"].contains(&s.as_str()) {
            bail!("--subsets: unknown {s:?} (upper, lower, even, odd)");
        }
    }
    Ok(a)
}

/// Layers of a subset of `n` layers, and its label.
fn subset(name: &str, n: usize) -> (Vec<usize>, String) {
    match name {
        "upper" => (
            (n / 2..n).collect(),
            format!("layers {}-{} (upper half)", n / 2, n - 1),
        ),
        "lower" => (
            (0..n / 2).collect(),
            format!("layers 0-{} (lower half)", n / 2 - 1),
        ),
        "even" => ((0..n).step_by(2).collect(), "even layers".into()),
        _ => ((1..n).step_by(2).collect(), "odd layers".into()),
    }
}

#[derive(Serialize)]
struct Prep {
    length: String,
    doc: usize,
    what: String,
    seconds: f64,
    doc_tokens: usize,
    detail: String,
}

#[derive(Serialize)]
struct DocInfo {
    length: String,
    doc: usize,
    n_tokens: usize,
    target_tokens: usize,
    facts: Vec<FactInfo>,
}

#[derive(Serialize)]
struct FactInfo {
    statement: String,
    question: String,
    prior: String,
    depth: f64,
}

#[derive(Serialize)]
struct Output<'a> {
    settings: serde_json::Value,
    prior_check: serde_json::Value,
    documents: &'a [DocInfo],
    preparation: &'a [Prep],
    summary: Vec<Summary>,
    items: &'a [ItemRecord],
}

fn git(args: &[&str]) -> String {
    std::process::Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|x| x.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

#[allow(clippy::too_many_arguments)]
fn record(
    records: &mut Vec<ItemRecord>,
    condition: &str,
    label: &str,
    doc_i: usize,
    doc: &Document,
    f: usize,
    answer: &langevin_emt::counterfactual::Answer,
    seconds: f64,
    fact_retrieved: Option<bool>,
) {
    let p = &doc.facts[f];
    let r = ItemRecord {
        condition: condition.to_string(),
        length: label.to_string(),
        target_tokens: doc.target_tokens,
        doc_tokens: doc.n_tokens,
        doc: doc_i,
        relation: p.fact.relation,
        question: p.fact.question(),
        prior: p.fact.prior.clone(),
        value: p.fact.value.clone(),
        depth: p.depth,
        answer: answer.text.clone(),
        correct: p.fact.is_correct(&answer.text),
        prior_answer_given: p.fact.gives_prior(&answer.text),
        seconds,
        prompt_tokens: answer.prompt_tokens,
        generated_tokens: answer.tokens.len(),
        fact_retrieved,
    };
    eprintln!(
        "  [{label} doc {doc_i}] {condition}: {} -> {:?} ({}{}, {:.2} s)",
        r.question,
        r.answer,
        if r.correct { "right" } else { "wrong" },
        if r.prior_answer_given { ", prior" } else { "" },
        seconds
    );
    records.push(r);
}

fn markdown(summary: &[Summary], preps: &[Prep], labels: &[String]) -> String {
    let mut conds: Vec<String> = Vec::new();
    for s in summary {
        if !conds.contains(&s.condition) {
            conds.push(s.condition.clone());
        }
    }
    let mut out = String::from(
        "Accuracy = share of answers giving the document's value (± binomial standard error \
         sqrt(p(1-p)/n)); prior = share giving the true value the document changed; s/answer = \
         mean wall seconds per answer (its own prompt, retrieval and decoding; the per-document \
         preparation is listed below).\n\n| condition |",
    );
    for l in labels {
        out.push_str(&format!(" {l}: accuracy | prior | s/answer |"));
    }
    out.push_str("\n|---|");
    for _ in labels {
        out.push_str("---|---|---|");
    }
    out.push('\n');
    for c in &conds {
        out.push_str(&format!("| {c} |"));
        for l in labels {
            match summary.iter().find(|s| &s.condition == c && &s.length == l) {
                Some(s) => out.push_str(&format!(
                    " {:.0}% ± {:.0} ({}/{}) | {:.0}% | {:.2} |",
                    100.0 * s.accuracy,
                    100.0 * s.se,
                    s.correct,
                    s.n,
                    100.0 * s.prior_rate,
                    s.mean_seconds
                )),
                None => out.push_str(" – | – | – |"),
            }
        }
        out.push('\n');
    }
    let rag: Vec<&Summary> = summary
        .iter()
        .filter(|s| s.retrieval_hit_rate.is_some())
        .collect();
    if !rag.is_empty() {
        out.push_str(
            "\nRAG retrieval: share of questions whose fact's chunk was placed in the prompt:",
        );
        for s in rag {
            out.push_str(&format!(
                " {} {}: {:.0}%;",
                s.condition,
                s.length,
                100.0 * s.retrieval_hit_rate.unwrap_or(0.0)
            ));
        }
        out.pop();
        out.push_str(".\n");
    }
    // Preparation per document, averaged per (what, length).
    let mut prep: BTreeMap<(String, String), (f64, usize, usize)> = BTreeMap::new();
    for p in preps {
        let e = prep
            .entry((p.what.clone(), p.length.clone()))
            .or_insert((0.0, 0, 0));
        e.0 += p.seconds;
        e.1 += 1;
        e.2 += p.doc_tokens;
    }
    if !prep.is_empty() {
        out.push_str("\n| preparation per document | length | documents | mean tokens | mean seconds |\n|---|---|---|---|---|\n");
        for l in labels {
            for ((what, len), (secs, n, toks)) in &prep {
                if len == l {
                    out.push_str(&format!(
                        "| {what} | {len} | {n} | {:.0} | {:.1} |\n",
                        *toks as f64 / *n as f64,
                        secs / *n as f64
                    ));
                }
            }
        }
    }
    out
}

fn plots(summary: &[Summary], out: &Path) -> anyhow::Result<()> {
    let mut conds: Vec<String> = Vec::new();
    for s in summary {
        if !conds.contains(&s.condition) {
            conds.push(s.condition.clone());
        }
    }
    let n = conds.len() as f64;
    let mut acc = ErrorBarChart::new(
        "Counterfactual retrieval, SmolLM2-135M-Instruct: accuracy (± binomial SE)",
        "document length (tokens, log scale; points spread sideways to stay apart)",
        "share of answers with the document's value",
    )
    .log_x(true)
    .y_range(-0.02, 1.02);
    let mut secs = ErrorBarChart::new(
        "Seconds per answer (1 thread; document preparation not included)",
        "document length (tokens, log scale)",
        "mean wall seconds per answer",
    )
    .log_x(true);
    for (i, c) in conds.iter().enumerate() {
        let rows: Vec<&Summary> = summary.iter().filter(|s| &s.condition == c).collect();
        // Spread the conditions a little sideways so that their bars do not overlap.
        let shift = 1.04f64.powf(i as f64 - (n - 1.0) / 2.0);
        let x: Vec<f64> = rows.iter().map(|s| s.mean_doc_tokens * shift).collect();
        acc = acc.series(ErrorSeries::new(
            c.as_str(),
            x,
            rows.iter().map(|s| s.accuracy).collect::<Vec<_>>(),
            rows.iter().map(|s| s.se).collect::<Vec<_>>(),
        ));
        secs = secs.series(ErrorSeries::new(
            c.as_str(),
            rows.iter().map(|s| s.mean_doc_tokens).collect::<Vec<_>>(),
            rows.iter().map(|s| s.mean_seconds).collect::<Vec<_>>(),
            vec![f64::NAN; rows.len()],
        ));
    }
    acc.save_png(out.join("accuracy.png"))?;
    secs.save_png(out.join("seconds.png"))?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    if args.replot {
        let path = args.out.join("results.json");
        let v: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?,
        )?;
        let summary: Vec<Summary> = serde_json::from_value(v["summary"].clone())?;
        return plots(&summary, &args.out);
    }
    langevin_emt::set_threads(args.threads)?;
    let started = Instant::now();
    let model_path = langevin_emt::find_model(None)?;
    let (model, tok) = Llama::load(&model_path)?;
    let n_layers = model.config().n_layers;
    let context = model.config().max_position;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let on = |c: &str| args.conditions.iter().any(|x| x == c);

    // 1. Which candidate facts does the model know?
    let mut all = candidates();
    if args.candidates > 0 {
        all.truncate(args.candidates);
    }
    eprintln!("prior check: {} candidate facts", all.len());
    let mut checks = Vec::with_capacity(all.len());
    for (i, c) in all.iter().enumerate() {
        let pc = check_prior(&model, &tok, c, args.max_tokens)?;
        eprintln!(
            "  {}/{} {} -> {:?} ({})",
            i + 1,
            all.len(),
            c.question(),
            pc.answer,
            if pc.known { "known" } else { "not known" }
        );
        checks.push(pc);
    }
    let known: Vec<_> = checks
        .iter()
        .filter(|c| c.known)
        .map(|c| c.candidate.clone())
        .collect();
    let mut by_relation: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for c in &checks {
        let e = by_relation
            .entry(format!("{:?}", c.candidate.relation))
            .or_default();
        e.0 += 1;
        e.1 += usize::from(c.known);
    }
    let prior_secs: f64 = checks.iter().map(|c| c.seconds).sum();
    let prior_summary = serde_json::json!({
        "candidates": checks.len(),
        "known": known.len(),
        "by_relation": by_relation.iter().map(|(r, (n, k))| (r.clone(), serde_json::json!({"candidates": n, "known": k}))).collect::<serde_json::Map<_, _>>(),
        "mean_seconds": prior_secs / checks.len().max(1) as f64,
    });
    std::fs::write(
        args.out.join("prior_check.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "summary": prior_summary,
            "system_prompt": SYSTEM_PLAIN,
            "checks": checks,
        }))?,
    )?;
    eprintln!(
        "prior check: the model knows {} of {} candidates ({:.0} s)",
        known.len(),
        checks.len(),
        prior_secs
    );

    let settings = serde_json::json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "commit": git(&["rev-parse", "HEAD"]),
        "uncommitted_changes": git(&["status", "--porcelain", "--untracked-files=no"]).lines().map(str::to_string).collect::<Vec<_>>(),
        "threads": langevin_emt::threads(),
        "cpu": cpu_name(),
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "model": model_path.display().to_string(),
        "weights": "WeightFormat::Quantized (Llama::load default)",
        "lengths": args.lengths, "labels": args.labels, "questions": args.questions,
        "facts_per_doc": args.facts_per_doc, "seed": args.seed, "emt_k": args.emt_k,
        "subset_k": args.subset_k, "subsets": args.subsets, "rag_k": args.rag_k,
        "rag": {"chunk_tokens": args.chunk_tokens, "embeddings": args.rag_embeddings, "value_layer": args.rag_layer, "center_mean": args.center},
        "memory_options": MemoryOptions { max_len: args.bank_max_len, stride: args.bank_stride, ..MemoryOptions::default() },
        "max_tokens": args.max_tokens, "conditions": args.conditions,
        "system_prompts": {"no memory": SYSTEM_PLAIN, "emt": SYSTEM_MEMORY, "rag and in context": SYSTEM_DOCUMENT},
    });

    let mut records: Vec<ItemRecord> = Vec::new();
    let mut preps: Vec<Prep> = Vec::new();
    let mut doc_infos: Vec<DocInfo> = Vec::new();
    let mut all_docs: Vec<(String, Vec<Document>)> = Vec::new();
    let save = |records: &[ItemRecord], preps: &[Prep], docs: &[DocInfo]| -> anyhow::Result<()> {
        let summary = summarize(records);
        let out = Output {
            settings: settings.clone(),
            prior_check: prior_summary.clone(),
            documents: docs,
            preparation: preps,
            summary: summary.clone(),
            items: records,
        };
        std::fs::write(
            args.out.join("results.json"),
            serde_json::to_string_pretty(&out)?,
        )?;
        Ok(())
    };
    let bank_opts = MemoryOptions {
        max_len: args.bank_max_len,
        stride: args.bank_stride,
        ..MemoryOptions::default()
    };
    let rag_opts: Vec<RagOptions> = args
        .rag_embeddings
        .iter()
        .map(|e| RagOptions {
            chunk_tokens: args.chunk_tokens,
            embedding: if e == "mean" {
                Embedding::HiddenMean
            } else {
                Embedding::ValueMaxSim {
                    layer: args.rag_layer,
                }
            },
            center: args.center,
        })
        .collect();

    for (li, (&target, label)) in args.lengths.iter().zip(&args.labels).enumerate() {
        let fpd = args.facts_per_doc[li];
        let spec = DocumentSpec {
            n_docs: args.questions.div_ceil(fpd),
            facts_per_doc: fpd,
            target_tokens: target,
            seed: args.seed * 1000 + li as u64,
        };
        let docs = make_documents(&known, &spec, |s| Ok(tok.encode(s)?.len()))?;
        if args.save_documents {
            all_docs.push((label.clone(), docs.clone()));
            std::fs::write(
                args.out.join("documents.json"),
                serde_json::to_string_pretty(&all_docs)?,
            )?;
        }
        let mut asked = 0;
        for (di, doc) in docs.iter().enumerate() {
            // The last document may hold more facts than the questions left.
            let n_q = doc.facts.len().min(args.questions - asked);
            asked += n_q;
            eprintln!(
                "{label}: document {}/{} ({} tokens, {} questions)",
                di + 1,
                docs.len(),
                doc.n_tokens,
                n_q
            );
            doc_infos.push(DocInfo {
                length: label.clone(),
                doc: di,
                n_tokens: doc.n_tokens,
                target_tokens: doc.target_tokens,
                facts: doc.facts[..n_q]
                    .iter()
                    .map(|p| FactInfo {
                        statement: p.fact.statement(),
                        question: p.fact.question(),
                        prior: p.fact.prior.clone(),
                        depth: p.depth,
                    })
                    .collect(),
            });
            let questions: Vec<String> =
                doc.facts[..n_q].iter().map(|p| p.fact.question()).collect();
            if on("none") {
                for (f, q) in questions.iter().enumerate() {
                    let a = ask(&model, &tok, SYSTEM_PLAIN, None, q, None, args.max_tokens)?;
                    let s = a.seconds;
                    record(&mut records, "no memory", label, di, doc, f, &a, s, None);
                }
            }
            if on("emt") || on("subset") {
                let t0 = Instant::now();
                let windows = MemoryBank::window_count(doc.n_tokens, context, &bank_opts);
                let bank = MemoryBank::from_text_with_progress(
                    &model,
                    &tok,
                    &doc.text,
                    &bank_opts,
                    |d, t| eprint!("\r  memory bank: window {d}/{t}"),
                )?;
                let secs = t0.elapsed().as_secs_f64();
                eprintln!(
                    "\r  memory bank: {} memories, {windows} windows, {secs:.1} s",
                    bank.len()
                );
                preps.push(Prep {
                    length: label.clone(),
                    doc: di,
                    what: "EMT memory bank".into(),
                    seconds: secs,
                    doc_tokens: doc.n_tokens,
                    detail: format!(
                        "{windows} windows of up to {} tokens, stride {}",
                        args.bank_max_len, args.bank_stride
                    ),
                });
                let mut configs: Vec<(String, EmtConfig)> = Vec::new();
                if on("emt") {
                    for &k in &args.emt_k {
                        configs.push((format!("EMT k={k}, all layers"), EmtConfig::with_top_k(k)));
                    }
                }
                if on("subset") {
                    for s in &args.subsets {
                        let (layers, name) = subset(s, n_layers);
                        configs.push((
                            format!("EMT k={}, {name}", args.subset_k),
                            EmtConfig {
                                layers: Some(layers),
                                ..EmtConfig::with_top_k(args.subset_k)
                            },
                        ));
                    }
                }
                for (name, ec) in &configs {
                    let mem = Memory {
                        bank: &bank,
                        config: ec,
                    };
                    for (f, q) in questions.iter().enumerate() {
                        let a = ask(
                            &model,
                            &tok,
                            SYSTEM_MEMORY,
                            None,
                            q,
                            Some(mem),
                            args.max_tokens,
                        )?;
                        let s = a.seconds;
                        record(&mut records, name, label, di, doc, f, &a, s, None);
                    }
                }
            }
            if on("rag") {
                for opts in &rag_opts {
                    let short = match opts.embedding {
                        Embedding::HiddenMean => "mean hidden".to_string(),
                        Embedding::ValueMaxSim { layer } => format!("MaxSim v{layer}"),
                    };
                    let t0 = Instant::now();
                    let index = RagIndex::build(&model, &tok, &doc.text, opts)?;
                    let secs = t0.elapsed().as_secs_f64();
                    eprintln!(
                        "  RAG index ({}): {} chunks, {secs:.1} s",
                        opts.embedding,
                        index.len()
                    );
                    preps.push(Prep {
                        length: label.clone(),
                        doc: di,
                        what: format!("RAG chunk embeddings ({})", opts.embedding),
                        seconds: secs,
                        doc_tokens: doc.n_tokens,
                        detail: format!(
                            "{} chunks of about {} tokens",
                            index.len(),
                            args.chunk_tokens
                        ),
                    });
                    for &k in &args.rag_k {
                        let name = format!("RAG k={k} chunks ({short})");
                        for (f, q) in questions.iter().enumerate() {
                            let t0 = Instant::now();
                            let top = index.retrieve(&model, &tok, q, k)?;
                            let chosen: Vec<usize> = top.iter().map(|t| t.0).collect();
                            let hit = index
                                .chunk_at(doc.facts[f].byte_start)
                                .is_some_and(|c| chosen.contains(&c));
                            let context = index.context(&chosen);
                            let a = ask(
                                &model,
                                &tok,
                                SYSTEM_DOCUMENT,
                                Some(&context),
                                q,
                                None,
                                args.max_tokens,
                            )?;
                            let s = t0.elapsed().as_secs_f64();
                            record(&mut records, &name, label, di, doc, f, &a, s, Some(hit));
                        }
                    }
                }
            }
            if on("context") {
                let mut prompts = Vec::with_capacity(questions.len());
                let mut chat = false;
                for q in &questions {
                    let (p, c) = chat_prompt(&tok, SYSTEM_DOCUMENT, Some(&doc.text), q)?;
                    chat = c;
                    prompts.push(tok.encode(&p)?);
                }
                let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
                if longest + args.max_tokens > context {
                    eprintln!(
                        "  document in context: skipped ({longest} prompt tokens + {} answer tokens > the model's {context})",
                        args.max_tokens
                    );
                } else {
                    let eos = langevin_emt::rag::answer_eos(&tok, chat);
                    let sp = SharedPrefix::from_ids(&model, prompts, eos, args.prefill_chunk)?;
                    eprintln!(
                        "  in context: {} shared tokens prefilled in {:.1} s (longest prompt {longest})",
                        sp.shared_len(),
                        sp.prefill_seconds
                    );
                    preps.push(Prep {
                        length: label.clone(),
                        doc: di,
                        what: "in-context document prefill".into(),
                        seconds: sp.prefill_seconds,
                        doc_tokens: doc.n_tokens,
                        detail: format!(
                            "{} shared prompt tokens, longest prompt {longest}",
                            sp.shared_len()
                        ),
                    });
                    for f in 0..questions.len() {
                        let a = sp.answer(&model, &tok, f, args.max_tokens)?;
                        let s = a.seconds;
                        record(
                            &mut records,
                            "document in context",
                            label,
                            di,
                            doc,
                            f,
                            &a,
                            s,
                            None,
                        );
                    }
                }
            }
            save(&records, &preps, &doc_infos)?;
            eprintln!("  ({:.0} s elapsed)", started.elapsed().as_secs_f64());
        }
    }

    let summary = summarize(&records);
    save(&records, &preps, &doc_infos)?;
    let mut md =
        format!(
        "# Counterfactual long-document benchmark (generated by examples/counterfactual.rs)\n\n\
         Command: `{}`\n\nCommit {} ({} tracked files changed), {} thread(s), {} ({} cores), \
         {:.0} minutes in all. Prior check: the model answered {} of {} candidate facts \
         correctly with no document; only those are used.\n\n",
        settings["command"].as_str().unwrap_or(""),
        settings["commit"].as_str().unwrap_or("?"),
        settings["uncommitted_changes"].as_array().map_or(0, Vec::len),
        langevin_emt::threads(),
        cpu_name(),
        settings["cores"],
        started.elapsed().as_secs_f64() / 60.0,
        known.len(),
        checks.len(),
    );
    md.push_str(&markdown(&summary, &preps, &args.labels));
    std::fs::write(args.out.join("RESULTS.md"), &md)?;
    plots(&summary, &args.out)?;
    println!("{md}");
    Ok(())
}
