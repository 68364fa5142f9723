//! Generation with a KV cache: greedy or temperature sampling, citations, and optional
//! uncertainty-triggered extra retrieval.
//!
//! * Citations: for every generated token, the memories retrieved by the position that
//!   produced it (counted over layers and heads), scored by their share of its retrievals
//!   minus their mean share over the prompt's other positions. Memories that every query
//!   pulls in (above all the document's first tokens, which act as attention sinks) cancel
//!   out; what remains is what this token specifically retrieved. [`citations`] maps them
//!   to sentences of the document.
//! * Uncertainty: if the entropy (nats) of a generated token's distribution exceeds
//!   `entropy_threshold`, that step is recomputed with `top_k` memories instead of the
//!   configured number (only when that is larger), and the token is drawn from the new
//!   distribution.

use std::time::Instant;

use candle_core::{DType, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::config::EmtConfig;
use crate::error::{EmtError, Result};
use crate::memory::MemoryBank;
use crate::model::{KvCache, Llama, Memory, RetrievalCounts};

/// Uncertainty-triggered extra retrieval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Uncertainty {
    /// Entropy (nats) above which a step is recomputed.
    pub entropy_threshold: f32,
    /// The larger k used for the recomputation.
    pub top_k: usize,
}

/// Generation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateConfig {
    /// Maximum number of new tokens.
    pub max_tokens: usize,
    /// 0 = greedy; otherwise sample from `softmax(logits / temperature)`.
    pub temperature: f64,
    /// Seed of the sampler.
    pub seed: u64,
    /// Stop at this token (not included in the output).
    pub eos: Option<u32>,
    /// Optional extra retrieval on uncertain tokens.
    pub uncertainty: Option<Uncertainty>,
    /// Memories kept per generated token for citations.
    pub citations_per_token: usize,
    /// Stop when the text falls into a loop (see [`repetition`]) and cut the repeats,
    /// keeping the first occurrence. Small models greedy-decoded do this ("A: A: A: ..."),
    /// and the repeats only waste time up to `max_tokens`.
    pub stop_on_repetition: bool,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        Self {
            max_tokens: 32,
            temperature: 0.0,
            seed: 0,
            eos: None,
            uncertainty: None,
            citations_per_token: 5,
            stop_on_repetition: true,
        }
    }
}

/// Why [`generate`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum StopReason {
    /// `max_tokens` were generated.
    #[default]
    MaxTokens,
    /// The model produced the end-of-sequence token.
    EndOfSequence,
    /// The text ended in a loop of `period` tokens repeated `repeats` times; the repeats
    /// after the first occurrence were cut.
    Repetition { period: usize, repeats: usize },
}

/// Repeats at least this many times...
const MIN_REPEATS: usize = 3;
/// ...spanning at least this many tokens count as a loop: a number's digits ("0000") or
/// a short list are not cut, "A: A: A: A: A: A: A: A:" (period 2, 8 repeats) is.
const MIN_LOOP_TOKENS: usize = 16;
/// The longest period looked for.
const MAX_PERIOD: usize = 32;

/// The loop `tokens` ends in, if any: the shortest period `p` such that the last
/// `r * p` tokens are one block of `p` tokens repeated `r >= 3` times, with
/// `r * p >= 16`. Returns `(p, r)`.
pub fn repetition(tokens: &[u32]) -> Option<(usize, usize)> {
    let n = tokens.len();
    (1..=MAX_PERIOD.min(n / MIN_REPEATS)).find_map(|p| {
        // Length of the periodic tail: positions i with tokens[i] == tokens[i + p].
        let mut len = p;
        while len < n && tokens[n - 1 - len] == tokens[n - 1 - len + p] {
            len += 1;
        }
        let r = len / p;
        (r >= MIN_REPEATS && r * p >= MIN_LOOP_TOKENS).then_some((p, r))
    })
}

/// The result of [`generate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// New token ids.
    pub tokens: Vec<u32>,
    /// Per new token: `(memory index, score)`, best first; score = the memory's share of
    /// this token's retrievals minus its mean share over the prompt (positive only).
    pub token_citations: Vec<Vec<(usize, f32)>>,
    /// Per new token: entropy (nats) of the distribution it was drawn from.
    pub entropies: Vec<f32>,
    /// Steps recomputed with the larger k.
    pub extra_retrievals: usize,
    pub prompt_tokens: usize,
    /// Why generation stopped.
    #[serde(default)]
    pub stop: StopReason,
    /// Seconds for the prompt (first token included).
    pub prefill_secs: f64,
    /// Seconds for the remaining tokens.
    pub decode_secs: f64,
}

impl Generation {
    /// New tokens per second of wall time, prompt processing included.
    pub fn tokens_per_second(&self) -> f64 {
        let t = self.prefill_secs + self.decode_secs;
        if t > 0.0 {
            self.tokens.len() as f64 / t
        } else {
            0.0
        }
    }
}

/// Entropy (nats) of `softmax(logits)`.
pub fn entropy(logits: &[f32]) -> f32 {
    // H = -Σ p ln p with p = e / Z, e = exp(l - max): H = ln Z - Σ e (l - max) / Z, one
    // exponential per entry (this runs for every generated token over the vocabulary).
    let mx = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let (mut z, mut s) = (0f64, 0f64);
    for &l in logits {
        let x = l - mx;
        let e = x.exp();
        z += e as f64;
        s += (e * x) as f64;
    }
    (z.ln() - s / z) as f32
}

fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}

fn sample(logits: &[f32], temperature: f64, rng: &mut ChaCha8Rng) -> usize {
    if temperature <= 0.0 {
        return argmax(logits);
    }
    let mx = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let w: Vec<f64> = logits
        .iter()
        .map(|&l| (((l - mx) as f64) / temperature).exp())
        .collect();
    let total: f64 = w.iter().sum();
    let mut u = rng.random::<f64>() * total;
    for (i, x) in w.iter().enumerate() {
        u -= x;
        if u <= 0.0 {
            return i;
        }
    }
    argmax(logits)
}

fn shares(row: &[u32]) -> Vec<f32> {
    let total: u64 = row.iter().map(|&c| c as u64).sum();
    if total == 0 {
        return vec![0.0; row.len()];
    }
    row.iter().map(|&c| c as f32 / total as f32).collect()
}

/// Mean retrieval share of each memory over the prompt rows before the last.
fn background(counts: &RetrievalCounts) -> Vec<f32> {
    let mut bg = vec![0f32; counts.n_memories];
    let rows = counts.n_queries.saturating_sub(1);
    for t in 0..rows {
        for (b, s) in bg.iter_mut().zip(shares(counts.row(t))) {
            *b += s / rows as f32;
        }
    }
    bg
}

fn top_memories(
    counts: &RetrievalCounts,
    t: usize,
    n: usize,
    background: &[f32],
) -> Vec<(usize, f32)> {
    let sh = shares(counts.row(t));
    let mut scored: Vec<(usize, f32)> = sh
        .iter()
        .enumerate()
        .map(|(j, &s)| (j, s - background.get(j).copied().unwrap_or(0.0)))
        .filter(|&(_, s)| s > 0.0)
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.truncate(n);
    scored
}

fn step(
    model: &Llama,
    ids: &[u32],
    cache: &mut KvCache,
    memory: Option<Memory<'_>>,
) -> Result<(Vec<f32>, Option<RetrievalCounts>)> {
    let (logits, counts) = match memory {
        Some(m) if !m.bank.is_empty() => {
            let (l, c) = model.forward_traced(ids, cache, m)?;
            (l, Some(c))
        }
        _ => (model.forward(ids, cache, None)?, None),
    };
    Ok((logits.to_dtype(DType::F32)?.to_vec1::<f32>()?, counts))
}

/// Generate up to `cfg.max_tokens` tokens after `prompt`, reading `memory` if given.
pub fn generate(
    model: &Llama,
    prompt: &[u32],
    memory: Option<Memory<'_>>,
    cfg: &GenerateConfig,
) -> Result<Generation> {
    if prompt.is_empty() {
        return Err(EmtError::EmptyInput("prompt"));
    }
    if !cfg.temperature.is_finite() || cfg.temperature < 0.0 {
        return Err(EmtError::InvalidConfig {
            field: "temperature",
            reason: format!("must be finite and >= 0, got {}", cfg.temperature),
        });
    }
    if let Some(u) = &cfg.uncertainty {
        if !u.entropy_threshold.is_finite() || u.top_k == 0 {
            return Err(EmtError::InvalidConfig {
                field: "uncertainty",
                reason: "threshold must be finite and top_k >= 1".into(),
            });
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let wide_cfg: Option<EmtConfig> = match (&cfg.uncertainty, memory) {
        (Some(u), Some(m)) if u.top_k > m.config.top_k => Some(EmtConfig {
            top_k: u.top_k,
            ..m.config.clone()
        }),
        _ => None,
    };
    let mut out = Generation {
        tokens: Vec::new(),
        token_citations: Vec::new(),
        entropies: Vec::new(),
        extra_retrievals: 0,
        prompt_tokens: prompt.len(),
        stop: StopReason::MaxTokens,
        prefill_secs: 0.0,
        decode_secs: 0.0,
    };
    let mut cache = KvCache::new();
    let t0 = Instant::now();
    let mut input: Vec<u32> = prompt.to_vec();
    let mut bg: Option<Vec<f32>> = None;
    while out.tokens.len() < cfg.max_tokens {
        // A copy of the cache to redo the step with more memories (only when that can
        // happen: the copy costs the whole cache).
        let snapshot = wide_cfg.as_ref().map(|_| cache.clone());
        let (mut logits, mut counts) = step(model, &input, &mut cache, memory)?;
        let mut h = entropy(&logits);
        if let (Some(u), Some(wide), Some(m), Some(snapshot)) =
            (&cfg.uncertainty, &wide_cfg, memory, snapshot)
        {
            if h > u.entropy_threshold {
                cache = snapshot;
                let wm = Memory {
                    bank: m.bank,
                    config: wide,
                };
                (logits, counts) = step(model, &input, &mut cache, Some(wm))?;
                h = entropy(&logits);
                out.extra_retrievals += 1;
            }
        }
        if bg.is_none() {
            bg = counts.as_ref().map(background);
        }
        let tok = sample(&logits, cfg.temperature, &mut rng) as u32;
        if out.tokens.is_empty() {
            out.prefill_secs = t0.elapsed().as_secs_f64();
        }
        if Some(tok) == cfg.eos {
            out.stop = StopReason::EndOfSequence;
            break;
        }
        out.tokens.push(tok);
        out.entropies.push(h);
        out.token_citations.push(match &counts {
            Some(c) => top_memories(
                c,
                input.len() - 1,
                cfg.citations_per_token,
                bg.as_deref().unwrap_or(&[]),
            ),
            None => Vec::new(),
        });
        input = vec![tok];
        if cfg.stop_on_repetition {
            if let Some((period, repeats)) = repetition(&out.tokens) {
                let keep = out.tokens.len() - (repeats - 1) * period;
                out.tokens.truncate(keep);
                out.entropies.truncate(keep);
                out.token_citations.truncate(keep);
                out.stop = StopReason::Repetition { period, repeats };
                break;
            }
        }
    }
    out.decode_secs = (t0.elapsed().as_secs_f64() - out.prefill_secs).max(0.0);
    Ok(out)
}

/// A cited span of the memory document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Citation {
    /// The sentence (trimmed).
    pub text: String,
    /// This sentence's part of the generated tokens' citation scores (scores sum to 1).
    pub score: f32,
    /// Byte range in the document.
    pub start: usize,
    pub end: usize,
}

/// Sentence byte ranges of `text`: split after `.`, `!`, `?` followed by whitespace, and at newlines.
fn sentences(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    let b = text.as_bytes();
    for i in 0..b.len() {
        let end_here = match b[i] {
            b'\n' => true,
            b'.' | b'!' | b'?' => i + 1 == b.len() || b[i + 1].is_ascii_whitespace(),
            _ => false,
        };
        if end_here {
            out.push((start, i + 1));
            start = i + 1;
        }
    }
    if start < b.len() {
        out.push((start, b.len()));
    }
    out
}

/// Aggregate per-token citations into the `top_n` document sentences that received the
/// most retrieval share. Empty if the bank was not built from text.
pub fn citations(bank: &MemoryBank, generation: &Generation, top_n: usize) -> Vec<Citation> {
    let text = bank.text();
    if text.is_empty() {
        return Vec::new();
    }
    let sents = sentences(text);
    let mut score = vec![0f32; sents.len()];
    for tc in &generation.token_citations {
        for &(j, s) in tc {
            let Some((a, _)) = bank.span(j) else { continue };
            // The sentence containing the token's first byte (leading spaces belong to it too).
            if let Some(k) = sents.iter().position(|&(s0, s1)| a >= s0 && a < s1) {
                score[k] += s;
            }
        }
    }
    let total: f32 = score.iter().sum();
    if total <= 0.0 {
        return Vec::new();
    }
    let mut order: Vec<usize> = (0..sents.len()).filter(|&k| score[k] > 0.0).collect();
    order.sort_by(|&a, &b| score[b].total_cmp(&score[a]).then(a.cmp(&b)));
    order
        .into_iter()
        .filter(|&k| !text[sents[k].0..sents[k].1].trim().is_empty())
        .take(top_n)
        .map(|k| Citation {
            text: text[sents[k].0..sents[k].1].trim().to_string(),
            score: score[k] / total,
            start: sents[k].0,
            end: sents[k].1,
        })
        .collect()
}

/// Logits `[vocab]` to a `Vec<f32>` (helper for callers of [`Llama::forward`]).
pub fn logits_vec(logits: &Tensor) -> Result<Vec<f32>> {
    Ok(logits.to_dtype(DType::F32)?.to_vec1::<f32>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LlamaConfig;
    use crate::memory::MemoryOptions;

    #[test]
    fn loops_are_found_and_numbers_and_lists_are_not() {
        // "A: A: ..." as two tokens: 8 repeats (16 tokens) is a loop, 7 is not yet.
        let ab: Vec<u32> = [5, 6].repeat(8);
        assert_eq!(repetition(&ab), Some((2, 8)));
        assert_eq!(repetition(&ab[..14]), None);
        // After other text, the loop is the tail only.
        let mut t = vec![1, 2, 3, 4];
        t.extend([7, 8, 9, 10, 11, 12].repeat(3));
        assert_eq!(repetition(&t), Some((6, 3)));
        // A repeated single token: 16 in a row; "0000" (4) is a number, not a loop.
        assert_eq!(repetition(&[0; 4]), None);
        assert_eq!(repetition(&[3; 16]), Some((1, 16)));
        // Two repeats of a long sentence are not a loop (a model may restate once).
        assert_eq!(
            repetition(&(0..20).chain(0..20).collect::<Vec<u32>>()),
            None
        );
        assert_eq!(repetition(&(0..20).collect::<Vec<u32>>()), None);
        assert_eq!(repetition(&[]), None);
    }

    /// The token after `[a, b]` is the prompt-free continuation of a loop on a model that
    /// always answers the same: a random model greedy-decoded falls into a cycle; with the
    /// guard the output is cut after the first occurrence and says so.
    #[test]
    fn generation_stops_at_a_loop_and_keeps_the_first_occurrence() {
        let m = Llama::random(&LlamaConfig::tiny(), 9).unwrap();
        let long = GenerateConfig {
            max_tokens: 200,
            stop_on_repetition: false,
            ..Default::default()
        };
        let full = generate(&m, &[1, 2, 3], None, &long).unwrap();
        assert_eq!(full.stop, StopReason::MaxTokens);
        // Greedy decoding of a random model with a finite vocabulary cycles.
        let first_loop = (1..=full.tokens.len()).find(|&n| repetition(&full.tokens[..n]).is_some());
        let Some(n) = first_loop else {
            panic!("a random model's greedy output should cycle within 200 tokens");
        };
        let (p, r) = repetition(&full.tokens[..n]).unwrap();
        let guarded = generate(
            &m,
            &[1, 2, 3],
            None,
            &GenerateConfig {
                stop_on_repetition: true,
                ..long
            },
        )
        .unwrap();
        assert_eq!(
            guarded.stop,
            StopReason::Repetition {
                period: p,
                repeats: r
            }
        );
        let keep = n - (r - 1) * p;
        assert_eq!(guarded.tokens, full.tokens[..keep]);
        assert_eq!(guarded.entropies.len(), keep);
        assert_eq!(guarded.token_citations.len(), keep);
    }

    #[test]
    fn greedy_is_deterministic_and_uses_the_cache_correctly() {
        let m = Llama::random(&LlamaConfig::tiny(), 9).unwrap();
        let cfg = GenerateConfig {
            max_tokens: 5,
            ..Default::default()
        };
        let g = generate(&m, &[1, 2, 3], None, &cfg).unwrap();
        assert_eq!(g.tokens.len(), 5);
        // Recompute greedily without the cache.
        let mut ids = vec![1u32, 2, 3];
        for &t in &g.tokens {
            let all = m.forward_all(&ids, None).unwrap();
            let last = logits_vec(&all.get(ids.len() - 1).unwrap()).unwrap();
            assert_eq!(argmax(&last) as u32, t);
            ids.push(t);
        }
    }

    #[test]
    fn sampling_is_seeded_and_uncertainty_retrieval_triggers() {
        let m = Llama::random(&LlamaConfig::tiny(), 9).unwrap();
        let bank = MemoryBank::build(
            &m,
            &[4, 5, 6, 7, 8, 9, 10, 11],
            &[],
            &MemoryOptions::default(),
        )
        .unwrap();
        let ec = EmtConfig::with_top_k(2);
        let mem = Memory {
            bank: &bank,
            config: &ec,
        };
        let cfg = GenerateConfig {
            max_tokens: 4,
            temperature: 1.0,
            seed: 3,
            uncertainty: Some(Uncertainty {
                entropy_threshold: 0.0, // always uncertain
                top_k: 6,
            }),
            ..Default::default()
        };
        let a = generate(&m, &[1, 2], Some(mem), &cfg).unwrap();
        let b = generate(&m, &[1, 2], Some(mem), &cfg).unwrap();
        assert_eq!(a.tokens, b.tokens);
        assert_eq!(a.extra_retrievals, 4);
        // With 6 memories per query/head, each token cites at most 5 (cap) distinct memories.
        assert!(a
            .token_citations
            .iter()
            .all(|c| !c.is_empty() && c.len() <= 5));
        let share: f32 = a.token_citations[0].iter().map(|c| c.1).sum();
        assert!(share > 0.0 && share <= 1.0 + 1e-6);
        let bad = GenerateConfig {
            temperature: f64::NAN,
            ..Default::default()
        };
        assert!(generate(&m, &[1], None, &bad).is_err());
        assert!(generate(&m, &[], None, &GenerateConfig::default()).is_err());
    }

    #[test]
    fn citations_map_retrievals_to_sentences() {
        let tok = crate::tokenizer::tests::toy();
        let cfg = LlamaConfig {
            vocab_size: tok.vocab_size(),
            ..LlamaConfig::tiny()
        };
        let m = Llama::random(&cfg, 1).unwrap();
        let text = "One two. Three four five. Six.";
        let bank = MemoryBank::from_text(&m, &tok, text, &MemoryOptions::default()).unwrap();
        // Memories whose span starts inside "Three four five." (bytes 8..25).
        let in_second: Vec<usize> = (0..bank.len())
            .filter(|&j| bank.span(j).is_some_and(|(a, _)| (8..25).contains(&a)))
            .collect();
        let first = (0..bank.len())
            .find(|&j| bank.span(j).is_some_and(|(a, _)| a < 8))
            .unwrap();
        assert!(in_second.len() >= 2);
        let g = Generation {
            tokens: vec![1, 2],
            token_citations: vec![
                vec![(in_second[0], 0.5), (first, 0.25)],
                vec![(in_second[1], 0.25)],
            ],
            entropies: vec![0.0, 0.0],
            extra_retrievals: 0,
            prompt_tokens: 1,
            stop: StopReason::MaxTokens,
            prefill_secs: 0.0,
            decode_secs: 0.0,
        };
        let c = citations(&bank, &g, 3);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].text, "Three four five.");
        assert!((c[0].score - 0.75).abs() < 1e-6);
        assert_eq!(c[1].text, "One two.");
        assert_eq!(&text[c[1].start..c[1].end], "One two.");
    }

    #[test]
    fn citation_scores_subtract_the_prompt_background() {
        // 2 queries x 3 memories: memory 0 is retrieved by every query (a sink), memory 2
        // only by the last one.
        let c = RetrievalCounts {
            n_queries: 2,
            n_memories: 3,
            counts: vec![8, 2, 0, 4, 0, 4],
        };
        let bg = background(&c);
        assert_eq!(bg, vec![0.8, 0.2, 0.0]);
        let top = top_memories(&c, 1, 5, &bg);
        assert_eq!(top.len(), 1);
        assert_eq!(top[0].0, 2);
        assert!((top[0].1 - 0.5).abs() < 1e-6);
    }

    #[test]
    fn entropy_and_sentences() {
        assert!((entropy(&[0.0, 0.0]) - std::f32::consts::LN_2).abs() < 1e-6);
        assert!(entropy(&[100.0, 0.0]) < 1e-6);
        let s = "A b. C d!\nE f 3.5 g";
        let ss: Vec<&str> = sentences(s).iter().map(|&(a, b)| &s[a..b]).collect();
        assert_eq!(ss, vec!["A b.", " C d!", "\n", "E f 3.5 g"]);
    }
}
