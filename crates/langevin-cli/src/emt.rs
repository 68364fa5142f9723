//! `langevin emt`: Extended Mind attention on SmolLM2-135M-Instruct.
//!
//! * `langevin emt ask --memory doc.txt --question "..."`: answer a question from a memory
//!   bank of the document (or, with `--in-context`, with the document in the prompt; with
//!   `--no-memory`, from the question alone);
//! * `langevin emt index doc.txt --out doc.bank`: build the memory bank once and save it
//!   (safetensors); `langevin emt ask --bank doc.bank --question "..."` then answers
//!   without running the model over the document again;
//! * `langevin emt bench`: the behavioural benchmark (a fact hidden in filler text).
//!
//! Weights stay as the GGUF stores them (Q4_1) unless `--dequantize`; `--threads N` sets
//! the number of CPU threads.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use langevin_emt::bank_io::gguf_model_name;
use langevin_emt::needle::{evaluate, make_items, markdown_table, Condition};
use langevin_emt::rag::{self, ask_prompt};
use langevin_emt::{
    citations, generate, BankDType, EmtConfig, EmtError, GenerateConfig, Llama, Memory, MemoryBank,
    MemoryOptions, SaveOptions, StopReason, Tokenizer, Uncertainty, WeightFormat,
};

#[derive(Subcommand)]
pub enum EmtCommand {
    /// Answer a question about a document held as memories.
    Ask(AskArgs),
    /// Build a document's memory bank once and save it (safetensors), for `ask --bank`.
    Index(IndexArgs),
    /// Behavioural benchmark: a fact hidden in ~20 filler sentences, several conditions.
    Bench(BenchArgs),
}

/// Which model, how its weights are held, how many threads.
#[derive(Args)]
pub struct ModelArgs {
    /// The GGUF model. Default: $LANGEVIN_EMT_MODEL, else the user cache folder
    /// ($XDG_CACHE_HOME/langevin/models or ~/.cache/langevin/models, where
    /// scripts/fetch-smollm2.sh puts it), else the repository's .cache/models.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Dequantize the weights to f32 at load: ~4x the memory. Default: keep the GGUF's
    /// quantized weights (as llama.cpp).
    #[arg(long)]
    dequantize: bool,
    /// The quantized weights (the default now; kept for older scripts).
    #[arg(long, hide = true, conflicts_with = "dequantize")]
    quantized: bool,
    /// CPU threads for the model (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Args)]
pub struct AskArgs {
    /// The document (plain text) to build memories from.
    #[arg(long, conflicts_with = "bank")]
    memory: Option<PathBuf>,
    /// A memory bank saved by `langevin emt index` (instead of --memory: the document
    /// is not run through the model again). Answers and citations are those of
    /// `--memory` with the same document.
    #[arg(long, conflicts_with_all = ["no_memory", "in_context"])]
    bank: Option<PathBuf>,
    /// The question.
    #[arg(long)]
    question: String,
    /// Memories retrieved per query and head (2, as the paper: one-fact recall on generated
    /// documents was 70-77% with k = 2 against 50-55% with k = 10, bench/emt/recall_defaults.py).
    #[arg(long, default_value_t = 2)]
    top_k: usize,
    /// Maximum number of generated tokens.
    #[arg(long, default_value_t = 48)]
    max_tokens: usize,
    /// Ignore the document (the model answers from the question alone).
    #[arg(long, conflicts_with = "in_context")]
    no_memory: bool,
    /// Put the document in the prompt instead of the memory bank (the baseline).
    #[arg(long)]
    in_context: bool,
    /// Print JSON: {"answer", "citations": [{"text", "score"}], "tokens_per_second"}.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    model: ModelArgs,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Sampler seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Mask retrieved memories whose cosine similarity is not above this.
    #[arg(long)]
    sim_threshold: Option<f32>,
    /// Recompute a token with `--uncertainty-top-k` memories when its entropy (nats) exceeds this.
    #[arg(long)]
    uncertainty_threshold: Option<f32>,
    /// The larger k for uncertainty-triggered retrieval.
    #[arg(long, default_value_t = 32)]
    uncertainty_top_k: usize,
    /// The plain completion prompt ("Question: ...\nAnswer:") instead of the model's chat
    /// template (the default for a model whose GGUF has one), with a system prompt that
    /// asks for a short answer from what the model remembers.
    #[arg(long)]
    plain: bool,
    /// The system prompt of the chat format (default: a short answer from what the model
    /// remembers of the document).
    #[arg(long, conflicts_with = "plain")]
    system: Option<String>,
    /// The chat template (the default; kept for older scripts).
    #[arg(long, hide = true, conflicts_with = "plain")]
    chat: bool,
    /// Text the answer starts with (e.g. "Marta lives in"): small models answer far better
    /// when completing a sentence. It is part of the prompt and of the printed answer.
    #[arg(long)]
    answer_prefix: Option<String>,
    /// Keep generating when the text falls into a loop ("A: A: A: ..."). By default
    /// generation stops there and the repeats after the first occurrence are cut.
    #[arg(long)]
    keep_repeats: bool,
    /// No work estimate and no progress bar on stderr (notices and warnings still go there).
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
pub struct IndexArgs {
    /// The document (plain text).
    document: PathBuf,
    /// The bank file to write (safetensors; replaced if it exists).
    #[arg(long)]
    out: PathBuf,
    /// Store keys and values as f16: half the file (23 KB instead of 46 KB per memory
    /// for SmolLM2-135M), but not an exact copy: where two memories are near-tied for
    /// retrieval, the rounding can flip which one a head reads, which changes logits and
    /// citation scores (answers were the same in our tests). Default f32: `ask --bank`
    /// gives exactly the answers and citations of `ask --memory`.
    #[arg(long)]
    f16: bool,
    #[command(flatten)]
    model: ModelArgs,
    /// Print JSON: {"bank", "memories", "document_tokens", "bytes", "dtype",
    /// "build_seconds", "tokens_per_second", "save_seconds"}.
    #[arg(long)]
    json: bool,
    /// No work estimate and no progress bar on stderr.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
pub struct BenchArgs {
    /// Number of items.
    #[arg(long, default_value_t = 30)]
    items: usize,
    /// Item generator seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// k for the memory conditions.
    #[arg(long, default_value_t = 2)]
    top_k: usize,
    #[command(flatten)]
    model: ModelArgs,
    /// Also write the full report as JSON here.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

pub fn run(cmd: EmtCommand) -> anyhow::Result<()> {
    match cmd {
        EmtCommand::Ask(a) => ask(a),
        EmtCommand::Index(a) => index(a),
        EmtCommand::Bench(b) => bench(b),
    }
}

/// Set the thread count (before any model work), find and load the model; returns the
/// model file's path too.
fn load(m: &ModelArgs) -> anyhow::Result<(Llama, Tokenizer, PathBuf)> {
    if let Some(n) = m.threads {
        langevin_emt::set_threads(n).map_err(crate::exit::bad_input)?;
    }
    let path = langevin_emt::find_model(m.model.as_deref()).map_err(crate::exit::bad_input)?;
    let format = if m.dequantize {
        WeightFormat::Dequantized
    } else {
        WeightFormat::Quantized
    };
    match Llama::load_with(&path, format) {
        Ok((model, tok)) => Ok((model, tok, path)),
        Err(
            e @ (EmtError::ModelNotFound { .. }
            | EmtError::Io { .. }
            | EmtError::InvalidModel(_)
            | EmtError::Tokenizer(_)),
        ) => Err(crate::exit::bad_input(e)),
        Err(e) => Err(e.into()),
    }
}

fn ask(a: AskArgs) -> anyhow::Result<()> {
    if a.question.trim().is_empty() {
        bail_input!("--question is empty");
    }
    if a.top_k == 0 || a.max_tokens == 0 {
        bail_input!("--top-k and --max-tokens must be at least 1");
    }
    if !a.temperature.is_finite() || a.temperature < 0.0 {
        bail_input!("--temperature must be finite and >= 0");
    }
    if let Some(t) = a.sim_threshold {
        if !(t.is_finite() && (-1.0..=1.0).contains(&t)) {
            bail_input!("--sim-threshold must be a cosine similarity in [-1, 1], got {t}");
        }
    }
    if let Some(t) = a.uncertainty_threshold {
        if !(t.is_finite() && t >= 0.0) {
            bail_input!("--uncertainty-threshold must be a finite entropy >= 0 (nats), got {t}");
        }
    }
    if a.uncertainty_top_k == 0 {
        bail_input!("--uncertainty-top-k must be at least 1");
    }
    if a.model.threads == Some(0) {
        bail_input!("--threads must be at least 1");
    }
    let doc = match (&a.memory, a.no_memory) {
        (Some(p), _) => Some(read_document(p)?),
        (None, true) => None,
        (None, false) if a.bank.is_some() => None,
        (None, false) => {
            bail_input!("--memory FILE or --bank BANK is required (or pass --no-memory)")
        }
    };
    if doc.as_deref().is_some_and(|d| d.trim().is_empty()) && !a.no_memory {
        bail_input!("the memory document is empty");
    }
    if let Some(b) = &a.bank {
        if !b.is_file() {
            bail_input!("--bank {}: no such file", b.display());
        }
    }
    let (model, tok, _) = load(&a.model)?;
    let context = model.config().max_position;
    if a.max_tokens > context {
        bail_input!(
            "--max-tokens {}: more than the model's context of {context} tokens",
            a.max_tokens
        );
    }
    let use_memory = !a.no_memory && !a.in_context;
    let prefix = a
        .answer_prefix
        .as_deref()
        .map(str::trim)
        .filter(|p| !p.is_empty());
    let (prompt, chat) = ask_prompt(
        &tok,
        &a.question,
        if a.in_context { doc.as_deref() } else { None },
        a.system
            .as_deref()
            .unwrap_or_else(|| rag::system_prompt(use_memory, a.in_context)),
        a.plain,
        prefix,
    )?;
    let ids = tok.encode(&prompt)?;
    let bank = match (use_memory, &doc, &a.bank) {
        (true, _, Some(b)) => Some(load_bank(b, &model)?),
        (true, Some(d), None) => Some(build_bank(&model, &tok, d, a.quiet, "emt ask")?),
        _ => None,
    };
    let ec = EmtConfig {
        top_k: a.top_k,
        layers: None,
        sim_threshold: a.sim_threshold,
    };
    let memory = bank.as_ref().map(|b| Memory {
        bank: b,
        config: &ec,
    });
    let eos = rag::answer_eos(&tok, chat);
    let cfg = GenerateConfig {
        max_tokens: a.max_tokens,
        temperature: a.temperature,
        seed: a.seed,
        eos,
        uncertainty: a.uncertainty_threshold.map(|t| Uncertainty {
            entropy_threshold: t,
            top_k: a.uncertainty_top_k,
        }),
        citations_per_token: 5,
        stop_on_repetition: !a.keep_repeats,
    };
    let g = generate(&model, &ids, memory, &cfg).map_err(|e| match e {
        EmtError::ContextTooLong { .. } => crate::exit::bad_input(e),
        e => e.into(),
    })?;
    let raw = tok.decode(&g.tokens, true)?;
    // The completion format runs on into a next "Question:"; keep the answer line.
    let body = if chat {
        raw.as_str()
    } else if prefix.is_some() {
        raw.split('\n').next().unwrap_or("")
    } else {
        raw.trim_start().split('\n').next().unwrap_or("")
    };
    let answer = match prefix {
        Some(p) => format!("{p}{}", body.trim_end()),
        None => body.trim().to_string(),
    };
    // The model's own text is empty (with --answer-prefix the answer is only the prefix).
    let empty = if prefix.is_some() {
        body.trim().is_empty()
    } else {
        answer.is_empty()
    };
    let empty_reason = empty.then(|| {
        if g.tokens.is_empty() {
            "the model produced its end-of-text token at once".to_string()
        } else if raw.trim().is_empty() {
            format!(
                "the model's {} generated tokens are control tokens or white space only",
                g.tokens.len()
            )
        } else {
            format!(
                "the model's text begins with a line break (the answer is its first line; \
                 {} tokens generated)",
                g.tokens.len()
            )
        }
    });
    if let Some(why) = &empty_reason {
        eprintln!(
            "notice: the model produced no answer text: {why}; try --answer-prefix \
             (e.g. the start of the expected sentence), {}a rephrased --question",
            if chat {
                "--plain, "
            } else if tok.chat_template().is_some() {
                "the chat format (without --plain), "
            } else {
                ""
            }
        );
    }
    let repeated = match g.stop {
        StopReason::Repetition { period, repeats } => Some(format!(
            "the model repeated the same {period} token{} {repeats} times; generation \
             stopped there and the repeats were cut (--keep-repeats keeps them)",
            if period == 1 { "" } else { "s" }
        )),
        _ => None,
    };
    if let (Some(why), false) = (&repeated, a.json) {
        eprintln!("notice: {why}");
    }
    let cites = bank.as_ref().map_or_else(Vec::new, |b| citations(b, &g, 3));
    if a.json {
        let mut out = serde_json::json!({
            "answer": answer,
            "empty": empty,
            "citations": cites.iter().map(|c| serde_json::json!({"text": c.text, "score": c.score})).collect::<Vec<_>>(),
            "tokens_per_second": g.tokens_per_second(),
        });
        if let Some(why) = empty_reason {
            out["empty_reason"] = why.into();
        }
        if let Some(why) = repeated {
            out["stopped"] = why.into();
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{answer}");
        for c in &cites {
            eprintln!("  [{:.2}] {}", c.score, c.text);
        }
        if g.extra_retrievals > 0 {
            eprintln!(
                "  ({} tokens recomputed with k = {})",
                g.extra_retrievals, a.uncertainty_top_k
            );
        }
        eprintln!(
            "  {:.1} tokens/s ({} prompt tokens)",
            g.tokens_per_second(),
            g.prompt_tokens
        );
    }
    Ok(())
}

fn read_document(p: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(p)
        .map_err(|e| crate::exit::bad_input(format!("cannot read {}: {e}", p.display())))
}

/// A saved bank for `model`: a missing, truncated or corrupt file, or one made with
/// another model, is bad input (exit 2) naming the file.
fn load_bank(path: &Path, model: &Llama) -> anyhow::Result<MemoryBank> {
    match MemoryBank::load(path, model) {
        Ok(b) => Ok(b),
        Err(
            e @ (EmtError::BankFormat { .. }
            | EmtError::BankModelMismatch { .. }
            | EmtError::Io { .. }),
        ) => Err(crate::exit::bad_input(e)),
        Err(e) => Err(anyhow::Error::new(e).context(format!("loading {}", path.display()))),
    }
}

/// `langevin emt index DOC --out BANK`.
fn index(a: IndexArgs) -> anyhow::Result<()> {
    if a.model.threads == Some(0) {
        bail_input!("--threads must be at least 1");
    }
    let doc = read_document(&a.document)?;
    if doc.trim().is_empty() {
        bail_input!("{}: the document is empty", a.document.display());
    }
    // The output is checked before the (long) build, not after it.
    if a.out.is_dir() {
        bail_input!(
            "--out {}: is a directory (give a file name)",
            a.out.display()
        );
    }
    let parent = a.out.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(d) = parent.filter(|d| !d.is_dir()) {
        bail_input!(
            "--out {}: the folder {} does not exist",
            a.out.display(),
            d.display()
        );
    }
    let (model, tok, model_path) = load(&a.model)?;
    let n_tokens = tok.encode(&doc)?.len();
    let t0 = Instant::now();
    let bank = build_bank(&model, &tok, &doc, a.quiet || a.json, "emt index")?;
    let build_secs = t0.elapsed().as_secs_f64();
    let dtype = if a.f16 {
        BankDType::F16
    } else {
        BankDType::F32
    };
    let t1 = Instant::now();
    let bytes = bank
        .save_with(
            &a.out,
            &model,
            &SaveOptions {
                dtype,
                model_name: gguf_model_name(&model_path),
            },
        )
        .map_err(|e| match e {
            e @ EmtError::Io { .. } => crate::exit::bad_input(e),
            e => e.into(),
        })?;
    let save_secs = t1.elapsed().as_secs_f64();
    let rate = n_tokens as f64 / build_secs.max(1e-9);
    let dtype_name = if a.f16 { "f16" } else { "f32" };
    if a.json {
        let out = serde_json::json!({
            "bank": a.out.display().to_string(),
            "memories": bank.len(),
            "document_tokens": n_tokens,
            "bytes": bytes,
            "dtype": dtype_name,
            "build_seconds": build_secs,
            "tokens_per_second": rate,
            "save_seconds": save_secs,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{}: {} memories from {} document tokens, {:.1} MB ({dtype_name}); built in {:.1} s \
             ({:.0} tokens/s), written in {:.2} s",
            a.out.display(),
            bank.len(),
            n_tokens,
            bytes as f64 / 1e6,
            build_secs,
            rate,
            save_secs
        );
    }
    Ok(())
}

/// Build the memory bank of `doc`, with the work up front and a progress bar on stderr
/// (unless `quiet`; the bar only draws on a terminal). A 50 KB document is about 13 000
/// tokens, 20 windows of 3072 tokens through the whole model: most of a minute on a CPU.
fn build_bank(
    model: &Llama,
    tok: &Tokenizer,
    doc: &str,
    quiet: bool,
    who: &str,
) -> anyhow::Result<MemoryBank> {
    use indicatif::{ProgressBar, ProgressStyle};
    let opts = MemoryOptions::default();
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        let n_tokens = tok.encode(doc)?.len();
        let max_position = model.config().max_position;
        let windows = MemoryBank::window_count(n_tokens, max_position, &opts);
        if windows > 1 {
            eprintln!(
                "{who}: building the memory bank: {n_tokens} document tokens in {windows} \
                 model windows of up to {} tokens (each is a full forward pass; expect about \
                 {windows} times the time of one)",
                opts.max_len.min(max_position)
            );
        }
        let pb = ProgressBar::new(windows as u64);
        pb.set_style(
            ProgressStyle::with_template(
                "memory bank {bar:30} {pos}/{len} windows, {elapsed} elapsed, eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        pb
    };
    let bank = MemoryBank::from_text_with_progress(model, tok, doc, &opts, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })
    .context("building the memory bank");
    bar.finish_and_clear();
    bank
}

/// Largest `emt bench --items`.
const MAX_BENCH_ITEMS: usize = 10_000;

fn bench(b: BenchArgs) -> anyhow::Result<()> {
    if b.items < 2 || b.top_k == 0 {
        bail_input!("--items must be at least 2 and --top-k at least 1");
    }
    if b.items > MAX_BENCH_ITEMS {
        bail_input!(
            "--items {}: at most {MAX_BENCH_ITEMS} (each item runs the model over a document \
             several times; the default 30 takes minutes)",
            b.items
        );
    }
    // The report path is checked before the (long) benchmark, not after it.
    if let Some(p) = &b.json_out {
        if p.is_dir() {
            bail_input!(
                "--json-out {}: is a directory (give a file name)",
                p.display()
            );
        }
        let parent = p.parent().filter(|d| !d.as_os_str().is_empty());
        if parent.is_some_and(|d| !d.is_dir()) {
            bail_input!(
                "--json-out {}: the folder {} does not exist",
                p.display(),
                parent.map(Path::display).expect("checked above")
            );
        }
    }
    if b.model.threads == Some(0) {
        bail_input!("--threads must be at least 1");
    }
    let (model, tok, _) = load(&b.model)?;
    let items = make_items(b.items, 20, b.seed)?;
    let k = b.top_k;
    let conditions = [
        Condition::NoMemory,
        Condition::InContext,
        Condition::Memory { top_k: k },
        Condition::OtherMemory { top_k: k },
        Condition::RotatedMemory { top_k: k },
    ];
    let mut report = evaluate(&model, &tok, &items, &conditions, 2, |m| eprintln!("{m}"))?;
    report.seed = b.seed;
    println!(
        "{} items, mean document {:.0} tokens, memory bank build {:.2} s/document\n",
        report.n_items, report.mean_document_tokens, report.mean_memory_build_secs
    );
    print!("{}", markdown_table(&report));
    if let Some(p) = &b.json_out {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}
