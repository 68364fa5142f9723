//! Encode speed of the `tokenizers`-based tokenizer against the hand-written BPE it
//! replaced, on ~50 KB of mixed text with SmolLM2's vocabulary.
//!
//! `scripts/fetch-smollm2.sh && cargo run -p langevin-emt --example tokenizer_speed`
//! (or set LANGEVIN_EMT_MODEL). Both must be built alike to compare: in the dev profile
//! the dependencies (`tokenizers`) are at opt-level 3 and this example at 1, so run it
//! with `CARGO_PROFILE_DEV_OPT_LEVEL=3` (or `--release`).

#[path = "../tests/handwritten/mod.rs"]
mod handwritten;

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use candle_core::quantized::gguf_file;
use langevin_emt::Tokenizer;

/// ~`target` bytes: needle-benchmark documents (English prose with numbers) interleaved
/// with code, chat markup and non-Latin text.
fn text(target: usize) -> Result<String> {
    let extras = [
        "fn main() {\n    let x: Vec<u32> = (0..10).map(|i| i * 2).collect();\n    println!(\"{:?}\", x);\n}\n",
        "<|im_start|>user\nWhat is 1234 + 5678?<|im_end|>\n<|im_start|>assistant\n6912<|im_end|>\n",
        "你好，世界。日本語のテキストです。Ångström café naïve 👋🏽 🎉 ∑∫√∞\n",
        "{\"key\": [1, 2.5, -3e10, null], \"nested\": {\"a\": \"b\"}}\n\t\tindented    spaces\n",
    ];
    let items = langevin_emt::needle::make_items(40, 20, 7)?;
    let mut s = String::new();
    'outer: loop {
        for (i, it) in items.iter().enumerate() {
            s.push_str(&it.document);
            s.push('\n');
            s.push_str(extras[i % extras.len()]);
            if s.len() >= target {
                break 'outer;
            }
        }
    }
    let mut cut = target;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    Ok(s)
}

fn time<T>(reps: usize, mut f: impl FnMut() -> Result<T>) -> Result<(Duration, Duration)> {
    for _ in 0..3 {
        f()?;
    }
    let mut t: Vec<Duration> = (0..reps)
        .map(|_| {
            let start = Instant::now();
            f().map(|_| start.elapsed())
        })
        .collect::<Result<_>>()?;
    t.sort();
    Ok((t[0], t[reps / 2]))
}

fn main() -> Result<()> {
    let path = langevin_emt::find_model(None)?;
    let mut f = std::fs::File::open(&path)?;
    let ct = gguf_file::Content::read(&mut f)?;

    let (new_build, _) = time(5, || Ok(Tokenizer::from_gguf(&ct)?))?;
    let (old_build, _) = time(5, || handwritten::HandwrittenBpe::from_gguf(&ct))?;
    let new = Tokenizer::from_gguf(&ct)?;
    let old = handwritten::HandwrittenBpe::from_gguf(&ct)?;

    let s = text(50_000)?;
    let ids = new.encode(&s)?;
    if ids != old.encode(&s)? {
        bail!("the two tokenizers disagree on the benchmark text");
    }
    let mb = s.len() as f64 / 1e6;
    println!(
        "text: {} bytes, {} chars, {} tokens; build from GGUF (min of 5): tokenizers {:.1} ms, hand-written {:.1} ms",
        s.len(),
        s.chars().count(),
        ids.len(),
        new_build.as_secs_f64() * 1e3,
        old_build.as_secs_f64() * 1e3
    );
    let reps = 30;
    let rows: [(&str, (Duration, Duration)); 4] = [
        (
            "tokenizers encode (ids)",
            time(reps, || Ok(new.encode(&s)?))?,
        ),
        (
            "tokenizers encode_with_offsets",
            time(reps, || Ok(new.encode_with_offsets(&s)?))?,
        ),
        ("hand-written encode (ids)", time(reps, || old.encode(&s))?),
        (
            "hand-written encode_with_offsets",
            time(reps, || old.encode_with_offsets(&s))?,
        ),
    ];
    // `tokenizers`' BPE caches words (10 000 entries): the rows above are warm. The first
    // encode of a freshly built tokenizer:
    let mut cold = Vec::new();
    for _ in 0..5 {
        let fresh = Tokenizer::from_gguf(&ct)?;
        let start = Instant::now();
        fresh.encode(&s)?;
        cold.push(start.elapsed());
    }
    cold.sort();
    println!(
        "tokenizers first encode on a fresh tokenizer (cold word cache): min {:.2} ms, median {:.2} ms",
        cold[0].as_secs_f64() * 1e3,
        cold[2].as_secs_f64() * 1e3
    );
    println!("| encoder | min ms | median ms | MB/s (median) |");
    println!("|---|---:|---:|---:|");
    for (name, (min, med)) in rows {
        println!(
            "| {name} | {:.2} | {:.2} | {:.1} |",
            min.as_secs_f64() * 1e3,
            med.as_secs_f64() * 1e3,
            mb / med.as_secs_f64()
        );
    }
    Ok(())
}
