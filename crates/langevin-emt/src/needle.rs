//! Behavioural benchmark: one fact hidden in filler text.
//!
//! Each item is a document of `n_filler` filler sentences (seeded choice and order) with
//! one inserted fact "NAME lives in CITY." at a random position. The model is asked
//! `"Question: Where does NAME live?\nAnswer: NAME lives in"`, decodes `max_tokens` tokens
//! greedily, and is correct if CITY appears in them. Conditions:
//!
//! * `no-memory`: the question alone (chance / prior);
//! * `in-context`: the document, a blank line, then the question (the baseline);
//! * `memory k=K`: the question, reading the document's memory bank;
//! * `other-memory k=K`: reading the bank of a different item's document (control);
//! * `rotated-memory k=K`: memory keys rotated by their document positions (ablation).
//!
//! All cities are single tokens of SmolLM2's vocabulary (with a leading space).

use std::time::Instant;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::config::EmtConfig;
use crate::error::{EmtError, Result};
use crate::generate::{generate, GenerateConfig};
use crate::memory::{MemoryBank, MemoryOptions};
use crate::model::{Llama, Memory};
use crate::tokenizer::Tokenizer;

const NAMES: &[&str] = &[
    "Alice",
    "Bernard",
    "Clara",
    "Dmitri",
    "Elena",
    "Farid",
    "Greta",
    "Hugo",
    "Ingrid",
    "Jonas",
    "Kavya",
    "Lorenzo",
    "Mireille",
    "Nikolai",
    "Olga",
    "Pablo",
    "Quentin",
    "Rosa",
    "Stefan",
    "Tamsin",
    "Ulrich",
    "Valentina",
    "Wendell",
    "Ximena",
    "Yusuf",
    "Zofia",
    "Anselm",
    "Beatrix",
    "Cormac",
    "Delphine",
    "Emil",
    "Fiona",
    "Gideon",
    "Hedda",
    "Ivo",
    "Juniper",
];

const CITIES: &[&str] = &[
    "Tokyo",
    "Berlin",
    "Madrid",
    "Vienna",
    "Prague",
    "Lisbon",
    "Dublin",
    "Oslo",
    "Stockholm",
    "Helsinki",
    "Warsaw",
    "Budapest",
    "Athens",
    "Cairo",
    "Nairobi",
    "Lima",
    "Toronto",
    "Chicago",
    "Boston",
    "Seattle",
    "Denver",
    "Sydney",
    "Melbourne",
    "Mumbai",
    "Seoul",
    "Moscow",
    "Istanbul",
    "Amsterdam",
    "Brussels",
    "Zurich",
    "Munich",
    "Hamburg",
    "Milan",
    "Naples",
    "Venice",
    "Edinburgh",
    "Glasgow",
    "Montreal",
    "Vancouver",
    "Houston",
    "Atlanta",
    "Havana",
    "Kyoto",
    "Copenhagen",
    "Lyon",
];

const FILLER: &[&str] = &[
    "The morning fog lifted slowly over the quiet hills.",
    "A committee met on Tuesday to review the annual budget.",
    "Fresh bread is best eaten within a day of baking.",
    "The old clock in the hallway had stopped years ago.",
    "Several birds gathered on the wire above the road.",
    "The library extended its opening hours for the exam season.",
    "Rain is expected to continue through the weekend.",
    "The recipe calls for two cups of flour and a pinch of salt.",
    "A new bridge was proposed to ease traffic across the river.",
    "The museum added a small gallery of modern sculpture.",
    "Most of the garden tools were kept in a wooden shed.",
    "The train was delayed because of a signal problem.",
    "Children played football in the park until sunset.",
    "The company released an update to fix several bugs.",
    "A cup of tea cooled on the desk beside the window.",
    "The hiking trail climbs steeply for the first mile.",
    "Volunteers cleaned the beach after the summer festival.",
    "The orchestra rehearsed the symphony for three hours.",
    "An article about soil health appeared in the newsletter.",
    "The cat slept on the warm stones by the fireplace.",
    "Prices at the market rose slightly during the winter.",
    "The printer on the second floor ran out of paper again.",
    "A gentle breeze carried the smell of cut grass.",
    "The team celebrated the end of a long project.",
    "Snow covered the mountain peaks until late spring.",
    "The bakery on the corner opens at six every morning.",
    "Engineers tested the new pump for several weeks.",
    "The students wrote essays about the history of trade.",
    "A small boat drifted near the edge of the lake.",
    "The meeting notes were shared with everyone afterwards.",
    "Lanterns lit the narrow streets during the evening fair.",
    "The gardener planted tulips along the front path.",
    "A documentary about whales aired late on Sunday.",
    "The farmer checked the fences after the storm.",
    "The conference room smelled faintly of fresh paint.",
    "A stack of unread letters sat on the kitchen table.",
    "The choir practised in the church every Thursday.",
    "Workers repaired the roof before the rainy season.",
    "The river was calm and clear in the early light.",
    "A long queue formed outside the new ice cream shop.",
];

/// One benchmark item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NeedleItem {
    pub name: String,
    pub city: String,
    pub document: String,
    /// Index of the fact among the document's sentences.
    pub fact_index: usize,
}

impl NeedleItem {
    /// The prompt: `"Question: Where does NAME live?\nAnswer: NAME lives in"`.
    pub fn question(&self) -> String {
        format!(
            "Question: Where does {n} live?\nAnswer: {n} lives in",
            n = self.name
        )
    }

    /// The in-context prompt: document, blank line, question.
    pub fn in_context_prompt(&self) -> String {
        format!("{}\n\n{}", self.document, self.question())
    }

    /// Whether a generated answer names the city.
    pub fn is_correct(&self, answer: &str) -> bool {
        answer.contains(&self.city)
    }
}

/// `n` seeded items with `n_filler` filler sentences each. Consecutive items have
/// different names and cities (so item `i + 1`'s document is a valid "other" document).
pub fn make_items(n: usize, n_filler: usize, seed: u64) -> Result<Vec<NeedleItem>> {
    if n_filler > FILLER.len() {
        return Err(EmtError::InvalidConfig {
            field: "n_filler",
            reason: format!("at most {} filler sentences", FILLER.len()),
        });
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut items: Vec<NeedleItem> = Vec::with_capacity(n);
    for i in 0..n {
        let (name, city) = loop {
            let name = NAMES[rng.random_range(0..NAMES.len())];
            let city = CITIES[rng.random_range(0..CITIES.len())];
            let prev_ok = i == 0 || (items[i - 1].name != name && items[i - 1].city != city);
            let first_ok = i + 1 != n || n < 2 || (items[0].name != name && items[0].city != city);
            if prev_ok && first_ok {
                break (name, city);
            }
        };
        let mut sents: Vec<&str> = FILLER.to_vec();
        sents.shuffle(&mut rng);
        sents.truncate(n_filler);
        let fact = format!("{name} lives in {city}.");
        let pos = rng.random_range(0..=sents.len());
        let mut all: Vec<String> = sents.iter().map(|s| s.to_string()).collect();
        all.insert(pos, fact);
        items.push(NeedleItem {
            name: name.to_string(),
            city: city.to_string(),
            document: all.join(" "),
            fact_index: pos,
        });
    }
    Ok(items)
}

/// A benchmark condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Condition {
    NoMemory,
    InContext,
    Memory { top_k: usize },
    OtherMemory { top_k: usize },
    RotatedMemory { top_k: usize },
}

impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoMemory => write!(f, "no memory"),
            Self::InContext => write!(f, "document in context"),
            Self::Memory { top_k } => write!(f, "memory, k = {top_k}"),
            Self::OtherMemory { top_k } => write!(f, "other document's memory, k = {top_k}"),
            Self::RotatedMemory { top_k } => {
                write!(f, "memory with rotated keys (ablation), k = {top_k}")
            }
        }
    }
}

/// Results of one condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConditionResult {
    pub condition: Condition,
    pub label: String,
    pub correct: usize,
    pub total: usize,
    pub accuracy: f64,
    /// Mean prompt length (tokens).
    pub mean_prompt_tokens: f64,
    /// Generated tokens per second, prompt processing included.
    pub tokens_per_second: f64,
    /// Example answers (first three items).
    pub examples: Vec<String>,
    /// Every wrong answer: `(item index, answer, truth)`.
    pub failures: Vec<(usize, String, String)>,
}

/// Everything one benchmark run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NeedleReport {
    pub n_items: usize,
    pub n_filler: usize,
    pub seed: u64,
    pub max_tokens: usize,
    pub mean_document_tokens: f64,
    /// Seconds to build one memory bank, averaged.
    pub mean_memory_build_secs: f64,
    pub results: Vec<ConditionResult>,
}

/// Run the benchmark.
pub fn evaluate(
    model: &Llama,
    tok: &Tokenizer,
    items: &[NeedleItem],
    conditions: &[Condition],
    max_tokens: usize,
    mut progress: impl FnMut(&str),
) -> Result<NeedleReport> {
    if items.len() < 2 {
        return Err(EmtError::InvalidConfig {
            field: "n_items",
            reason: "need at least 2 items".into(),
        });
    }
    let need_plain = conditions
        .iter()
        .any(|c| matches!(c, Condition::Memory { .. } | Condition::OtherMemory { .. }));
    let need_rot = conditions
        .iter()
        .any(|c| matches!(c, Condition::RotatedMemory { .. }));
    let mut banks = Vec::new();
    let mut rot_banks = Vec::new();
    let mut build_secs = 0.0;
    let mut doc_tokens = 0usize;
    for (i, it) in items.iter().enumerate() {
        doc_tokens += tok.encode(&it.document)?.len();
        if need_plain || need_rot {
            let t0 = Instant::now();
            let bank = MemoryBank::from_text(model, tok, &it.document, &MemoryOptions::default())?;
            build_secs += t0.elapsed().as_secs_f64();
            if need_rot {
                rot_banks.push(bank.with_rotated_keys(model)?);
            }
            banks.push(bank);
        }
        progress(&format!("memory banks {}/{}", i + 1, items.len()));
    }
    let gen_cfg = GenerateConfig {
        max_tokens,
        ..GenerateConfig::default()
    };
    let mut results = Vec::new();
    for &cond in conditions {
        let mut correct = 0;
        let mut prompt_tokens = 0usize;
        let mut gen_tokens = 0usize;
        let mut secs = 0.0;
        let mut examples = Vec::new();
        let mut failures = Vec::new();
        for (i, it) in items.iter().enumerate() {
            let prompt = match cond {
                Condition::InContext => it.in_context_prompt(),
                _ => it.question(),
            };
            let ids = tok.encode(&prompt)?;
            let ec;
            let memory = match cond {
                Condition::NoMemory | Condition::InContext => None,
                Condition::Memory { top_k } => {
                    ec = EmtConfig::with_top_k(top_k);
                    Some(Memory {
                        bank: &banks[i],
                        config: &ec,
                    })
                }
                Condition::OtherMemory { top_k } => {
                    ec = EmtConfig::with_top_k(top_k);
                    Some(Memory {
                        bank: &banks[(i + 1) % items.len()],
                        config: &ec,
                    })
                }
                Condition::RotatedMemory { top_k } => {
                    ec = EmtConfig::with_top_k(top_k);
                    Some(Memory {
                        bank: &rot_banks[i],
                        config: &ec,
                    })
                }
            };
            let g = generate(model, &ids, memory, &gen_cfg)?;
            let answer = tok.decode(&g.tokens, true)?;
            if it.is_correct(&answer) {
                correct += 1;
            } else {
                failures.push((i, answer.clone(), it.city.clone()));
            }
            if examples.len() < 3 {
                examples.push(format!("{} -> {:?} (truth {})", it.name, answer, it.city));
            }
            prompt_tokens += ids.len();
            gen_tokens += g.tokens.len();
            secs += g.prefill_secs + g.decode_secs;
        }
        let n = items.len();
        let r = ConditionResult {
            condition: cond,
            label: cond.to_string(),
            correct,
            total: n,
            accuracy: correct as f64 / n as f64,
            mean_prompt_tokens: prompt_tokens as f64 / n as f64,
            tokens_per_second: if secs > 0.0 {
                gen_tokens as f64 / secs
            } else {
                0.0
            },
            examples,
            failures,
        };
        progress(&format!("{}: {}/{}", r.label, r.correct, r.total));
        results.push(r);
    }
    Ok(NeedleReport {
        n_items: items.len(),
        // Sentences are joined by ". ": boundaries = sentences - 1 = filler sentences.
        n_filler: items[0].document.matches(". ").count(),
        seed: 0,
        max_tokens,
        mean_document_tokens: doc_tokens as f64 / items.len() as f64,
        mean_memory_build_secs: if banks.is_empty() {
            0.0
        } else {
            build_secs / banks.len() as f64
        },
        results,
    })
}

/// Markdown table of a report.
pub fn markdown_table(report: &NeedleReport) -> String {
    let mut s = String::from(
        "| condition | correct | accuracy | mean prompt tokens | tokens/s (prompt included) |\n|---|---|---|---|---|\n",
    );
    for r in &report.results {
        s.push_str(&format!(
            "| {} | {}/{} | {:.0}% | {:.0} | {:.1} |\n",
            r.label,
            r.correct,
            r.total,
            100.0 * r.accuracy,
            r.mean_prompt_tokens,
            r.tokens_per_second
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_seeded_and_well_formed() {
        let a = make_items(30, 20, 1).unwrap();
        let b = make_items(30, 20, 1).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, make_items(30, 20, 2).unwrap());
        for (i, it) in a.iter().enumerate() {
            let fact = format!("{} lives in {}.", it.name, it.city);
            assert_eq!(it.document.matches(&fact).count(), 1);
            assert_eq!(it.document.matches(" lives in ").count(), 1);
            let next = &a[(i + 1) % a.len()];
            assert_ne!(next.name, it.name);
            assert_ne!(next.city, it.city);
            assert!(it.is_correct(&format!(" {}.", it.city)));
            assert!(!it.is_correct(" the city"));
            assert!(it.question().ends_with(&format!("{} lives in", it.name)));
        }
        assert!(make_items(3, 1000, 1).is_err());
    }
}
