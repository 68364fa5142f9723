//! The `tokenizers`-based [`Tokenizer`] against the hand-written byte-level BPE it
//! replaced (`handwritten/`): same ids, same byte offsets, same decoded text.
//!
//! * `synthetic_*` (default suite): a vocabulary and merges trained here on the corpus
//!   by a small BPE trainer, with control tokens, so they always run;
//! * `smollm2_vocabulary_*`: SmolLM2's real vocabulary from the GGUF. `#[ignore]`d
//!   because the file is fetched separately; it fails (it does not skip) when the file
//!   is absent:
//!   `scripts/fetch-smollm2.sh && cargo test -p langevin-emt --test tokenizer_equivalence -- --ignored`.

mod handwritten;

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file;
use handwritten::{bytes_to_unicode, HandwrittenBpe};
use langevin_emt::{Tokenizer, DEFAULT_MODEL_PATH};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Texts that exercise every branch of the pre-tokenizer and of special-token matching.
fn corpus() -> Vec<String> {
    let mut v: Vec<String> = [
        "",
        "Hello, world!",
        "0123456789",
        "In 2024 the café cost 3.50€ — isn't it?",
        "3.14159265358979323846264338327950288419716939937510",
        "1,000,000 and 1e-9 and 0x1F and 2024-12-04T15:08:21Z",
        "99999999999999999999999999999999999999999999999999999999999999999999999999999",
        "Unicode numerals: ² ³ ½ ① Ⅻ ٣٤٥ ४२ 三百",
        "Emoji: 👋🏽 🎉🎉 👨‍👩‍👧 ❤️ 🇫🇷 😀😃😄",
        "CJK: 你好，世界。日本語のテキストです。한국어 문장입니다.",
        "Accents: café naïve résumé Ångström crème brûlée Dvořák Łódź",
        "Combining: e\u{301} a\u{308} n\u{303}\u{303}",
        "Arabic مرحبا بالعالم, Hebrew שלום, Hindi नमस्ते, Thai สวัสดี",
        "math ∑∫√∞ ≤ ≥ ≠ → ⇒ ∀x∈ℝ",
        "a    b     c\t\td\n\n\ne\r\nf   \n  g",
        "  leading spaces\n\n\ttabs  ",
        "trailing spaces     ",
        "\t\t\t",
        "\n",
        "   ",
        " ",
        "nbsp\u{a0}\u{a0}x ideographic\u{3000}space zw\u{200b}j\u{200d}x bom\u{feff}",
        "control \u{0}\u{1}\u{7f} chars \u{1b}[31mred\u{1b}[0m",
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
        "x<|im_end|>y<|endoftext|><|endoftext|>z",
        "<|im_start <|im_start| |im_start|> <|im_start|<|im_start|>> <|endoftext",
        "  <|im_start|>  \n<|im_end|>\n\n",
        "!!! ... ??? ,;: — – « » “quotes” ‘single’ (parens) [brackets] {braces} #@$%^&*_+=~`|\\/",
        "isn't I'll we've they're she'd you'm 'S 'LL IT'S '' ''' 's's",
        "fn main() {\n    let x: Vec<u32> = (0..10).map(|i| i * 2).collect();\n    println!(\"{:?} {}\", x, x.len());\n}\n",
        "def f(x):\n\tif x > 0:\n\t\treturn x ** 2  # square\n\treturn -x\n",
        "{\"key\": [1, 2.5, -3e10, null, true], \"nested\": {\"a\": \"b\"}}",
        "<div class=\"x\">&amp; &lt;tag&gt;</div>\n<!-- comment -->",
        "SELECT * FROM t WHERE id = 42 AND name LIKE '%foo%';",
        "https://example.com/path?query=1&x=y#frag user@example.org",
        "CamelCaseIdentifiers snake_case_names SCREAMING_CASE kebab-case",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    v.push("a".repeat(300));
    v.push("ab".repeat(200));
    v.push(" ".repeat(100) + "x");
    v.push("7".repeat(120));
    v.push("é".repeat(80));
    v.push("🎉".repeat(50));
    v.push("The quick brown fox jumps over the lazy dog. ".repeat(20));
    v
}

/// Random texts glued from fragments that meet at awkward boundaries.
fn random_texts(n: usize, seed: u64) -> Vec<String> {
    const FRAGMENTS: &[&str] = &[
        "a",
        "the",
        "ing",
        " hello",
        " world",
        "x",
        "Q",
        " ",
        "  ",
        "   ",
        "\t",
        "\n",
        "\r\n",
        "\u{a0}",
        "\u{3000}",
        "0",
        "12",
        "345",
        "²",
        "½",
        "٣",
        "é",
        "e\u{301}",
        "ß",
        "你",
        "好",
        "。",
        "🎉",
        "👨‍👩‍👧",
        "\u{200d}",
        "'s",
        "'S",
        "'ll",
        "'",
        "!",
        ".",
        "...",
        ",",
        "-",
        "(",
        ")",
        "{",
        "}",
        "\"",
        "<",
        "|",
        ">",
        "<|",
        "|>",
        "<|im_",
        "<|im_start|>",
        "<|im_end|>",
        "<|endoftext|>",
        "_",
        "#",
        "\\",
        "€",
        "—",
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let len = rng.random_range(1..30);
            (0..len)
                .map(|_| FRAGMENTS[rng.random_range(0..FRAGMENTS.len())])
                .collect()
        })
        .collect()
}

/// Ids, offsets and both decodings must agree; returns how many texts were compared.
fn compare_encodings(new: &Tokenizer, old: &HandwrittenBpe, texts: &[String]) -> Result<usize> {
    for text in texts {
        let want = old.encode_with_offsets(text)?;
        let got = new.encode_with_offsets(text)?;
        let want_ids: Vec<u32> = want.iter().map(|e| e.0).collect();
        let got_ids = new.encode(text)?;
        assert_eq!(got_ids, want_ids, "ids differ for {text:?}");
        assert_eq!(got, want, "ids or offsets differ for {text:?}");
        for skip in [false, true] {
            assert_eq!(
                new.decode(&got_ids, skip)?,
                old.decode(&want_ids, skip)?,
                "decode(skip_special = {skip}) differs for {text:?}"
            );
        }
        assert_eq!(new.decode(&got_ids, false)?, *text, "round trip {text:?}");
    }
    Ok(texts.len())
}

/// Random id sequences (control tokens included) decode alike, with and without skipping.
fn compare_random_decodes(new: &Tokenizer, old: &HandwrittenBpe, seed: u64) -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let vocab = new.vocab_size() as u32;
    for _ in 0..2000 {
        let len = rng.random_range(1..12);
        let ids: Vec<u32> = (0..len)
            .map(|_| {
                if rng.random_bool(0.15) && !new.special_ids().is_empty() {
                    new.special_ids()[rng.random_range(0..new.special_ids().len())]
                } else {
                    rng.random_range(0..vocab)
                }
            })
            .collect();
        for skip in [false, true] {
            assert_eq!(
                new.decode(&ids, skip)?,
                old.decode(&ids, skip)?,
                "decode({ids:?}, {skip})"
            );
        }
    }
    assert!(new.decode(&[vocab], false).is_err());
    assert!(old.decode(&[vocab], false).is_err());
    Ok(())
}

/// A byte-level BPE trained on `texts` (greedy most-frequent pair, ties by spelling):
/// `(tokens, merges, control ids)`.
fn train_synthetic(texts: &[String], n_merges: usize) -> (Vec<String>, Vec<String>, Vec<u32>) {
    let b2u = bytes_to_unicode();
    let mut tokens: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        .into_iter()
        .map(String::from)
        .collect();
    let specials = vec![0, 1, 2];
    tokens.extend(b2u.iter().map(|c| c.to_string()));
    // Words: GPT-2 regex pieces (digits not isolated, specials not removed, so merges
    // across digits and into control-token spellings exist and must stay unused).
    let re = fancy_regex::Regex::new(
        r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",
    )
    .unwrap();
    let mut words: HashMap<Vec<String>, usize> = HashMap::new();
    for t in texts {
        for m in re.find_iter(t) {
            let w: Vec<String> = m
                .unwrap()
                .as_str()
                .bytes()
                .map(|b| b2u[b as usize].to_string())
                .collect();
            *words.entry(w).or_default() += 1;
        }
    }
    let mut words: Vec<(Vec<String>, usize)> = words.into_iter().collect();
    let mut merges = Vec::new();
    for _ in 0..n_merges {
        let mut counts: HashMap<(&str, &str), usize> = HashMap::new();
        for (w, c) in &words {
            for p in w.windows(2) {
                *counts.entry((&p[0], &p[1])).or_default() += c;
            }
        }
        let Some(((a, b), _)) = counts
            .into_iter()
            .max_by(|x, y| x.1.cmp(&y.1).then_with(|| y.0.cmp(&x.0)))
        else {
            break;
        };
        let (a, b) = (a.to_string(), b.to_string());
        let merged = format!("{a}{b}");
        for (w, _) in &mut words {
            let mut i = 0;
            while i + 1 < w.len() {
                if w[i] == a && w[i + 1] == b {
                    w[i] = merged.clone();
                    w.remove(i + 1);
                }
                i += 1;
            }
        }
        merges.push(format!("{a} {b}"));
        if !tokens.contains(&merged) {
            tokens.push(merged);
        }
    }
    // Rules both implementations must ignore: unknown parts, unknown result, and a
    // repeated pair with a worse rank.
    merges.push("zzz_unknown Ġ".into());
    merges.push("Ġ zzz_unknown".into());
    merges.push("q ~".into());
    if let Some(first) = merges.first().cloned() {
        merges.push(first);
    }
    // A vocabulary entry no merge reaches.
    tokens.push("Ġunreachable".into());
    (tokens, merges, specials)
}

#[test]
fn synthetic_vocabulary_ids_offsets_and_decoding_match_the_handwritten_bpe() -> Result<()> {
    let mut texts = corpus();
    let (tokens, merges, specials) = train_synthetic(&texts, 600);
    assert!(merges.len() > 500, "trainer made {} merges", merges.len());
    let new = Tokenizer::new(tokens.clone(), &merges, &specials, Some(0))?;
    let old = HandwrittenBpe::new(tokens, &merges, &specials, Some(0))?;
    assert_eq!(new.vocab_size(), old.vocab_size());
    assert_eq!(new.token_id("<|im_start|>"), old.token_id("<|im_start|>"));
    texts.extend(random_texts(3000, 1));
    let n = compare_encodings(&new, &old, &texts)?;
    // The merges are used: the corpus is shorter in tokens than in bytes by far.
    let toks: usize = corpus().iter().map(|t| new.encode(t).unwrap().len()).sum();
    let bytes: usize = corpus().iter().map(String::len).sum();
    assert!(toks * 2 < bytes, "{toks} tokens for {bytes} bytes");
    compare_random_decodes(&new, &old, 2)?;
    eprintln!("synthetic vocabulary: {n} texts agree ({toks} tokens for {bytes} bytes)");
    Ok(())
}

/// The one decoding difference, pinned: an ordinary token mixing byte-alphabet and other
/// characters (byte-level vocabularies have none; SmolLM2's has none, see below).
#[test]
fn decoding_difference_on_mixed_spelling_tokens() -> Result<()> {
    let b2u = bytes_to_unicode();
    let mut tokens: Vec<String> = b2u.iter().map(|c| c.to_string()).collect();
    tokens.push("Ġ€".into());
    let id = tokens.len() as u32 - 1;
    let new = Tokenizer::new(tokens.clone(), &[], &[], None)?;
    let old = HandwrittenBpe::new(tokens, &[], &[], None)?;
    assert_eq!(old.decode(&[id], false)?, " €");
    assert_eq!(new.decode(&[id], false)?, "Ġ€");
    Ok(())
}

fn model_path() -> Result<PathBuf> {
    let p = std::env::var("LANGEVIN_EMT_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../..")
                .join(DEFAULT_MODEL_PATH)
        });
    if !p.is_file() {
        bail!(
            "{} not found: run scripts/fetch-smollm2.sh (or set LANGEVIN_EMT_MODEL) \
             before running this test",
            p.display()
        );
    }
    Ok(p)
}

#[test]
#[ignore = "needs the SmolLM2 GGUF (scripts/fetch-smollm2.sh); fails when it is absent"]
fn smollm2_vocabulary_ids_offsets_and_decoding_match_the_handwritten_bpe() -> Result<()> {
    let path = model_path()?;
    let mut f = std::fs::File::open(&path).with_context(|| path.display().to_string())?;
    let ct = gguf_file::Content::read(&mut f)?;
    let new = Tokenizer::from_gguf(&ct)?;
    let old = HandwrittenBpe::from_gguf(&ct)?;
    assert_eq!(new.vocab_size(), 49152);
    assert_eq!(new.vocab_size(), old.vocab_size());
    assert_eq!(new.special_ids(), old.special_ids());
    assert_eq!(new.eos_id(), old.eos_id());
    assert!(new.special_ids().len() >= 3, "{:?}", new.special_ids());

    // Every id, alone, decodes alike; and every token's text encodes alike.
    let mut texts = Vec::new();
    for id in 0..new.vocab_size() as u32 {
        for skip in [false, true] {
            assert_eq!(
                new.decode(&[id], skip)?,
                old.decode(&[id], skip)?,
                "decode([{id}], {skip})"
            );
        }
        texts.push(old.decode(&[id], false)?);
    }
    let spellings = ct
        .metadata
        .get("tokenizer.ggml.tokens")
        .context("no tokens in the GGUF")?
        .to_vec()?;
    for v in spellings {
        let t = v.to_string()?;
        assert_eq!(new.token_id(t), old.token_id(t), "token_id({t:?})");
    }
    let per_token = compare_encodings_lossy_ok(&new, &old, &texts)?;

    let mut texts = corpus();
    texts.extend(random_texts(3000, 3));
    let items = langevin_emt::needle::make_items(30, 20, 0)?;
    texts.extend(items.iter().map(|it| it.document.clone()));
    let n = compare_encodings(&new, &old, &texts)?;
    compare_random_decodes(&new, &old, 4)?;

    // The reference ids of real_model.rs (Hugging Face `tokenizers` 0.22, Python).
    assert_eq!(new.encode("Hello, world!")?, [19556, 28, 905, 17]);
    eprintln!("SmolLM2 vocabulary: {per_token} token texts and {n} texts agree");
    Ok(())
}

/// Like [`compare_encodings`] for texts that may hold U+FFFD (tokens that are parts of
/// a character decode lossily), so no round trip is required.
fn compare_encodings_lossy_ok(
    new: &Tokenizer,
    old: &HandwrittenBpe,
    texts: &[String],
) -> Result<usize> {
    for text in texts {
        let want = old.encode_with_offsets(text)?;
        assert_eq!(new.encode_with_offsets(text)?, want, "{text:?}");
        let ids: Vec<u32> = want.iter().map(|e| e.0).collect();
        assert_eq!(new.encode(text)?, ids, "{text:?}");
    }
    Ok(texts.len())
}
