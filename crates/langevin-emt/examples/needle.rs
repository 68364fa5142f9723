//! Behavioural benchmark of Extended Mind attention on SmolLM2-135M-Instruct.
//!
//! ```text
//! scripts/fetch-smollm2.sh
//! cargo run --release -p langevin-emt --example needle -- [N_ITEMS] [SEED] [OUT.json] [quantized]
//! ```
//!
//! Weights are dequantized to f32 at load unless the fourth argument is `quantized`
//! (candle 0.11 has no SIMD Q4_1 kernel on x86, so the quantized path is ~10x slower).
//!
//! Prints a markdown table (conditions: no memory, document in context, memories with
//! k = 2, another document's memories, rotated memory keys) and writes the JSON report.

use std::path::PathBuf;

use anyhow::Context;
use langevin_emt::needle::{evaluate, make_items, markdown_table, Condition};
use langevin_emt::{Llama, WeightFormat};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args
        .first()
        .map_or(Ok(30), |s| s.parse())
        .context("N_ITEMS")?;
    let seed: u64 = args.get(1).map_or(Ok(0), |s| s.parse()).context("SEED")?;
    let out = args.get(2).map(PathBuf::from);
    let model_path = langevin_emt::find_model(None)?;
    let format = match args.get(3).map(String::as_str) {
        Some("quantized") => WeightFormat::Quantized,
        None | Some("dequantized") => WeightFormat::Dequantized,
        Some(other) => anyhow::bail!("unknown weight format {other:?}"),
    };
    eprintln!("weights: {format:?}");
    let (model, tok) = Llama::load_with(&model_path, format)?;
    let items = make_items(n, 20, seed)?;
    let conditions = [
        Condition::NoMemory,
        Condition::InContext,
        Condition::Memory { top_k: 2 },
        Condition::OtherMemory { top_k: 2 },
        Condition::RotatedMemory { top_k: 2 },
        Condition::Memory { top_k: 10 },
    ];
    let mut report = evaluate(&model, &tok, &items, &conditions, 2, |m| eprintln!("{m}"))?;
    report.seed = seed;
    println!(
        "{} items, {} filler sentences + 1 fact, mean document {:.0} tokens, memory bank build {:.2} s/document\n",
        report.n_items, 20, report.mean_document_tokens, report.mean_memory_build_secs
    );
    println!("{}", markdown_table(&report));
    for r in &report.results {
        println!("{}: {}", r.label, r.examples.join("; "));
        for (i, answer, truth) in &r.failures {
            println!("    wrong: item {i}: {answer:?} (truth {truth})");
        }
    }
    if let Some(p) = out {
        std::fs::write(&p, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}
