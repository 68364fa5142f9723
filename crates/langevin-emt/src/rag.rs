//! Retrieval-augmented generation (RAG) with the decoder itself: the baseline that
//! Extended Mind attention is compared with in [`crate::counterfactual`].
//!
//! * the document is split into chunks of whole sentences of about
//!   [`RagOptions::chunk_tokens`] tokens ([`chunk_spans`]);
//! * chunks and the question are embedded with the model's own representations, one of
//!   ([`Embedding`]):
//!   - [`Embedding::HiddenMean`]: the final-normed hidden states of the plain model over
//!     the text alone ([`Llama::hidden_states`]), mean-pooled. With
//!     [`RagOptions::center`] (the default) the document's mean chunk embedding is
//!     subtracted from chunk and question embeddings before they are scaled to unit
//!     length: a decoder's hidden states share a large common direction (they are
//!     anisotropic), so raw cosine similarities of mean-pooled states are all close to 1;
//!     centering on the document removes what every chunk has in common;
//!   - [`Embedding::ValueMaxSim`]: late interaction (ColBERT's MaxSim) on the attention
//!     values of one layer ([`Llama::keys_values`]): every token of chunk and question is
//!     a unit vector (its values, all KV heads concatenated), and a chunk's score is the
//!     mean over the question's tokens of their best cosine similarity with a token of
//!     the chunk. A mean over 64 tokens dilutes the few that name the fact's subject;
//!     token-level matching does not. On a development set (seed 4242, 30 questions on
//!     three ~8k-token documents; not the benchmark's seeds) the chunk holding the fact
//!     was among the top 2 of ~110 for 9/30 questions with centered mean hidden states,
//!     20/30 with MaxSim on hidden states, 29/30 with MaxSim on layer 2's values and
//!     30/30 on layer 5's (the default layer);
//! * the `k` best chunks are placed in the prompt, in document order, as the document of
//!   the chat prompt ([`chat_prompt`]).
//!
//! This module also holds the prompt pieces shared by every condition of the benchmark:
//! the system prompts of `langevin emt ask` and the chat prompt built with the model's
//! own template ([`Tokenizer::apply_chat_template`]).

use candle_core::{DType, D};
use serde::{Deserialize, Serialize};

use crate::error::{EmtError, Result};
use crate::model::Llama;
use crate::tokenizer::Tokenizer;

/// System prompt with the document held as memories (as `langevin emt ask`).
pub const SYSTEM_MEMORY: &str = "You have read a document and remember it. Answer the question \
     in one short sentence with the fact you remember from the document.";

/// System prompt with the document (or retrieved passages) in the prompt.
pub const SYSTEM_DOCUMENT: &str = "Answer the question in one short sentence, from the document.";

/// System prompt with no document.
pub const SYSTEM_PLAIN: &str = "Answer the question in one short sentence.";

/// The system prompt of `langevin emt ask`'s chat format: short answers, from memory
/// when the document is held as memories ([`SYSTEM_MEMORY`]), from the document when it
/// is in the prompt ([`SYSTEM_DOCUMENT`]), else [`SYSTEM_PLAIN`].
pub fn system_prompt(memories: bool, in_context: bool) -> &'static str {
    if memories {
        SYSTEM_MEMORY
    } else if in_context {
        SYSTEM_DOCUMENT
    } else {
        SYSTEM_PLAIN
    }
}

/// A prompt for `question`: the model's chat template with `system` as the system turn and
/// `[document\n\n]question` as the user's turn, ending with the assistant's turn (as
/// `langevin emt ask` builds it by default). A model with no chat template gets the plain
/// completion format `"[document\n\n]Question: ...\nAnswer:"`. Returns the prompt and
/// whether it is the chat format.
pub fn chat_prompt(
    tok: &Tokenizer,
    system: &str,
    document: Option<&str>,
    question: &str,
) -> Result<(String, bool)> {
    ask_prompt(tok, question, document, system, false, None)
}

/// [`chat_prompt`] with the options of `langevin emt ask`: `plain` takes the completion
/// format even when the model has a chat template, and `prefix` (e.g. "Marta lives in")
/// starts the answer (after the assistant's turn, or after `"Answer:"` and a space).
pub fn ask_prompt(
    tok: &Tokenizer,
    question: &str,
    document: Option<&str>,
    system: &str,
    plain: bool,
    prefix: Option<&str>,
) -> Result<(String, bool)> {
    if !plain {
        let user = match document {
            Some(d) => format!("{d}\n\n{question}"),
            None => question.to_string(),
        };
        if let Some(p) = tok.apply_chat_template(&[("system", system), ("user", &user)], true)? {
            return Ok((
                match prefix {
                    Some(x) => format!("{p}{x}"),
                    None => p,
                },
                true,
            ));
        }
    }
    let q = match document {
        Some(d) => format!("{d}\n\nQuestion: {question}\nAnswer:"),
        None => format!("Question: {question}\nAnswer:"),
    };
    Ok((
        match prefix {
            Some(x) => format!("{q} {x}"),
            None => q,
        },
        false,
    ))
}

/// The token that ends an answer: `<|im_end|>` in the chat format (when the vocabulary
/// has it), else the model's end-of-sequence token.
pub fn answer_eos(tok: &Tokenizer, chat: bool) -> Option<u32> {
    if chat {
        tok.token_id("<|im_end|>").or(tok.eos_id())
    } else {
        tok.eos_id()
    }
}

/// How chunks and questions are embedded (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Embedding {
    /// Mean-pooled final hidden states (centered on the document if
    /// [`RagOptions::center`]).
    HiddenMean,
    /// MaxSim late interaction on the attention values of `layer`.
    ValueMaxSim { layer: usize },
}

impl std::fmt::Display for Embedding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::HiddenMean => write!(f, "mean hidden state"),
            Self::ValueMaxSim { layer } => write!(f, "MaxSim on layer-{layer} values"),
        }
    }
}

/// Settings of the RAG baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RagOptions {
    /// Target chunk length in tokens: sentences are added to a chunk until it has at least
    /// this many (a last chunk under half of it joins the previous one).
    pub chunk_tokens: usize,
    /// How chunks and questions are embedded.
    pub embedding: Embedding,
    /// [`Embedding::HiddenMean`]: subtract the document's mean chunk embedding before
    /// normalising.
    pub center: bool,
}

impl Default for RagOptions {
    fn default() -> Self {
        Self {
            chunk_tokens: 64,
            embedding: Embedding::ValueMaxSim { layer: 5 },
            center: true,
        }
    }
}

/// A chunk: byte range `start..end` of the document and its token count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    pub start: usize,
    pub end: usize,
    pub n_tokens: usize,
}

/// Sentence byte ranges of `text`, covering it contiguously: a sentence ends after `.`,
/// `!` or `?` followed by white space (the white space up to the next sentence belongs to
/// it), and at a line break.
pub fn sentence_spans(text: &str) -> Vec<(usize, usize)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        let end_here = match b[i] {
            b'\n' => true,
            b'.' | b'!' | b'?' => i + 1 < b.len() && b[i + 1].is_ascii_whitespace(),
            _ => false,
        };
        i += 1;
        if end_here {
            // Keep the following white space with this sentence.
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            out.push((start, i));
            start = i;
        }
    }
    if start < b.len() {
        out.push((start, b.len()));
    }
    out
}

/// Split `text` into chunks of whole sentences with at least `target_tokens` tokens each
/// (by `count`, applied to each trimmed sentence; the sum is the chunk's count). The
/// chunks cover the text contiguously; a last chunk shorter than half the target is
/// merged into the one before it. Sentences of white space only are counted as 0 tokens.
pub fn chunk_spans(
    text: &str,
    target_tokens: usize,
    mut count: impl FnMut(&str) -> Result<usize>,
) -> Result<Vec<Chunk>> {
    if target_tokens == 0 {
        return Err(EmtError::InvalidConfig {
            field: "chunk_tokens",
            reason: "must be at least 1".into(),
        });
    }
    if text.trim().is_empty() {
        return Err(EmtError::EmptyInput("document"));
    }
    let mut chunks: Vec<Chunk> = Vec::new();
    let mut cur: Option<Chunk> = None;
    for (s, e) in sentence_spans(text) {
        let piece = text[s..e].trim();
        let n = if piece.is_empty() { 0 } else { count(piece)? };
        let c = cur.get_or_insert(Chunk {
            start: s,
            end: s,
            n_tokens: 0,
        });
        c.end = e;
        c.n_tokens += n;
        if c.n_tokens >= target_tokens {
            chunks.extend(cur.take());
        }
    }
    if let Some(c) = cur {
        match chunks.last_mut() {
            Some(last) if 2 * c.n_tokens < target_tokens => {
                last.end = c.end;
                last.n_tokens += c.n_tokens;
            }
            _ => chunks.push(c),
        }
    }
    // A chunk of white space only (a text ending in blank lines) is never kept alone.
    chunks.retain(|c| !text[c.start..c.end].trim().is_empty());
    Ok(chunks)
}

/// The model's embedding of `text`: its final-normed hidden states over the text alone,
/// averaged over tokens (not normalised).
pub fn embed_text(model: &Llama, tok: &Tokenizer, text: &str) -> Result<Vec<f32>> {
    let ids = tok.encode(text.trim())?;
    if ids.is_empty() {
        return Err(EmtError::EmptyInput("text to embed"));
    }
    let h = model.hidden_states(&ids)?; // [T, hidden]
    Ok(h.mean(D::Minus2)?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
}

/// Each token's attention values at `layer` over `text` alone (all KV heads
/// concatenated), scaled to unit length: `[T][H_kv * d]`.
pub fn token_values(
    model: &Llama,
    tok: &Tokenizer,
    text: &str,
    layer: usize,
) -> Result<Vec<Vec<f32>>> {
    let ids = tok.encode(text.trim())?;
    if ids.is_empty() {
        return Err(EmtError::EmptyInput("text to embed"));
    }
    let n_layers = model.config().n_layers;
    if layer >= n_layers {
        return Err(EmtError::InvalidConfig {
            field: "rag layer",
            reason: format!("layer {layer} does not exist (model has {n_layers})"),
        });
    }
    let kv = model.keys_values(&ids)?;
    let v = kv[layer].1.transpose(0, 1)?.contiguous()?; // [T, H_kv, d]
    let t = v.dim(0)?;
    let rows = v.reshape((t, ()))?.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    Ok(rows.into_iter().map(unit).collect())
}

fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    if n > 1e-12 {
        for x in &mut v {
            *x = (*x as f64 / n) as f32;
        }
    }
    v
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// A question embedded for [`RagIndex::rank`].
#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    /// A raw (unnormalised) mean embedding.
    Mean(Vec<f32>),
    /// Unit vectors, one per token.
    Tokens(Vec<Vec<f32>>),
}

#[derive(Debug, Clone)]
enum Store {
    /// Unit-length (centered, if so) chunk embeddings and the mean subtracted.
    Mean { unit: Vec<Vec<f32>>, mean: Vec<f32> },
    /// Per chunk, per token unit vectors.
    Tokens(Vec<Vec<Vec<f32>>>),
}

/// A document's chunks and their embeddings.
#[derive(Debug, Clone)]
pub struct RagIndex {
    text: String,
    chunks: Vec<Chunk>,
    store: Store,
    options: RagOptions,
}

fn check_chunks(text: &str, chunks: &[Chunk], n: usize) -> Result<()> {
    if chunks.is_empty() {
        return Err(EmtError::EmptyInput("chunks"));
    }
    if n != chunks.len() {
        return Err(EmtError::DimensionMismatch {
            expected: format!("{} chunk embeddings", chunks.len()),
            got: format!("{n}"),
        });
    }
    if let Some(c) = chunks.iter().find(|c| {
        c.start > c.end
            || c.end > text.len()
            || !text.is_char_boundary(c.start)
            || !text.is_char_boundary(c.end)
    }) {
        return Err(EmtError::InvalidConfig {
            field: "chunks",
            reason: format!("chunk {}..{} is not inside the text", c.start, c.end),
        });
    }
    Ok(())
}

impl RagIndex {
    /// Chunk and embed `text` with the model.
    pub fn build(model: &Llama, tok: &Tokenizer, text: &str, options: &RagOptions) -> Result<Self> {
        Self::build_with_progress(model, tok, text, options, |_, _| {})
    }

    /// [`RagIndex::build`], calling `progress(done, total)` after each chunk.
    pub fn build_with_progress(
        model: &Llama,
        tok: &Tokenizer,
        text: &str,
        options: &RagOptions,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Self> {
        let chunks = chunk_spans(text, options.chunk_tokens, |s| Ok(tok.encode(s)?.len()))?;
        match options.embedding {
            Embedding::HiddenMean => {
                let mut raw = Vec::with_capacity(chunks.len());
                for (i, c) in chunks.iter().enumerate() {
                    raw.push(embed_text(model, tok, &text[c.start..c.end])?);
                    progress(i + 1, chunks.len());
                }
                Self::from_embeddings(text, chunks, raw, options)
            }
            Embedding::ValueMaxSim { layer } => {
                let mut toks = Vec::with_capacity(chunks.len());
                for (i, c) in chunks.iter().enumerate() {
                    toks.push(token_values(model, tok, &text[c.start..c.end], layer)?);
                    progress(i + 1, chunks.len());
                }
                Self::from_token_embeddings(text, chunks, toks, options)
            }
        }
    }

    /// A mean-embedding index ([`Embedding::HiddenMean`]) from given chunks and raw
    /// (unnormalised) embeddings, one per chunk.
    pub fn from_embeddings(
        text: &str,
        chunks: Vec<Chunk>,
        raw: Vec<Vec<f32>>,
        options: &RagOptions,
    ) -> Result<Self> {
        check_chunks(text, &chunks, raw.len())?;
        let dim = raw[0].len();
        if dim == 0 || raw.iter().any(|r| r.len() != dim) {
            return Err(EmtError::DimensionMismatch {
                expected: format!("embeddings of one positive length ({dim})"),
                got: format!("{:?}", raw.iter().map(Vec::len).collect::<Vec<_>>()),
            });
        }
        // Centering needs at least two chunks (one chunk minus the mean is zero).
        let center = options.center && chunks.len() > 1;
        let mut mean = vec![0f32; dim];
        if center {
            for r in &raw {
                for (m, x) in mean.iter_mut().zip(r) {
                    *m += x / raw.len() as f32;
                }
            }
        }
        let unit_vecs = raw
            .into_iter()
            .map(|r| unit(r.iter().zip(&mean).map(|(x, m)| x - m).collect()))
            .collect();
        Ok(Self {
            text: text.to_string(),
            chunks,
            store: Store::Mean {
                unit: unit_vecs,
                mean,
            },
            options: RagOptions {
                embedding: Embedding::HiddenMean,
                ..options.clone()
            },
        })
    }

    /// A MaxSim index ([`Embedding::ValueMaxSim`]) from given chunks and per-token vectors
    /// (scaled to unit length here), one list per chunk.
    pub fn from_token_embeddings(
        text: &str,
        chunks: Vec<Chunk>,
        tokens: Vec<Vec<Vec<f32>>>,
        options: &RagOptions,
    ) -> Result<Self> {
        check_chunks(text, &chunks, tokens.len())?;
        let dim = tokens.iter().flatten().next().map_or(0, Vec::len);
        if dim == 0
            || tokens
                .iter()
                .any(|c| c.is_empty() || c.iter().any(|t| t.len() != dim))
        {
            return Err(EmtError::DimensionMismatch {
                expected: format!("non-empty token vectors of one positive length ({dim})"),
                got: "empty chunks or mixed lengths".into(),
            });
        }
        let tokens = tokens
            .into_iter()
            .map(|c| c.into_iter().map(unit).collect())
            .collect();
        Ok(Self {
            text: text.to_string(),
            chunks,
            store: Store::Tokens(tokens),
            options: options.clone(),
        })
    }

    /// The chunks.
    pub fn chunks(&self) -> &[Chunk] {
        &self.chunks
    }

    /// Number of chunks.
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    /// Whether the index has no chunk (never, once built).
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// The options it was built with.
    pub fn options(&self) -> &RagOptions {
        &self.options
    }

    /// The (trimmed) text of chunk `i`.
    pub fn chunk_text(&self, i: usize) -> &str {
        let c = self.chunks[i];
        self.text[c.start..c.end].trim()
    }

    /// The index of the chunk holding byte `pos` of the document.
    pub fn chunk_at(&self, pos: usize) -> Option<usize> {
        self.chunks
            .iter()
            .position(|c| (c.start..c.end).contains(&pos))
    }

    /// Embed `question` as this index's chunks are.
    pub fn embed_query(&self, model: &Llama, tok: &Tokenizer, question: &str) -> Result<Query> {
        Ok(match self.options.embedding {
            Embedding::HiddenMean => Query::Mean(embed_text(model, tok, question)?),
            Embedding::ValueMaxSim { layer } => {
                Query::Tokens(token_values(model, tok, question, layer)?)
            }
        })
    }

    /// All chunks ranked by similarity with `query`, best first; ties by document order.
    /// A mean query is centered like the chunks and compared by cosine similarity; a
    /// token query scores each chunk by MaxSim (the mean over query tokens of the best
    /// cosine similarity with a chunk token).
    pub fn rank(&self, query: &Query) -> Result<Vec<(usize, f32)>> {
        let mismatch = |want: String, got: String| EmtError::DimensionMismatch {
            expected: want,
            got,
        };
        let scores: Vec<f32> = match (&self.store, query) {
            (Store::Mean { unit: u, mean }, Query::Mean(q)) => {
                if q.len() != mean.len() {
                    return Err(mismatch(
                        format!("query embedding of length {}", mean.len()),
                        format!("{}", q.len()),
                    ));
                }
                let q = unit(q.iter().zip(mean).map(|(x, m)| x - m).collect());
                u.iter().map(|c| dot(c, &q)).collect()
            }
            (Store::Tokens(chunks), Query::Tokens(q)) => {
                let dim = chunks[0][0].len();
                if q.is_empty() || q.iter().any(|t| t.len() != dim) {
                    return Err(mismatch(
                        format!("query token vectors of length {dim}"),
                        format!("{:?}", q.iter().map(Vec::len).collect::<Vec<_>>()),
                    ));
                }
                let q: Vec<Vec<f32>> = q.iter().map(|t| unit(t.clone())).collect();
                chunks
                    .iter()
                    .map(|c| {
                        q.iter()
                            .map(|qt| c.iter().map(|ct| dot(qt, ct)).fold(f32::MIN, f32::max))
                            .sum::<f32>()
                            / q.len() as f32
                    })
                    .collect()
            }
            _ => {
                return Err(mismatch(
                    format!("a query for {}", self.options.embedding),
                    "the other kind".into(),
                ))
            }
        };
        let mut scored: Vec<(usize, f32)> = scores.into_iter().enumerate().collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(scored)
    }

    /// The `k` chunks most similar to `question` (embedded by the model), best first.
    pub fn retrieve(
        &self,
        model: &Llama,
        tok: &Tokenizer,
        question: &str,
        k: usize,
    ) -> Result<Vec<(usize, f32)>> {
        if k == 0 {
            return Err(EmtError::InvalidConfig {
                field: "rag k",
                reason: "must be at least 1".into(),
            });
        }
        let mut r = self.rank(&self.embed_query(model, tok, question)?)?;
        r.truncate(k);
        Ok(r)
    }

    /// The texts of the chosen chunks in document order, separated by blank lines: the
    /// document placed in the prompt.
    pub fn context(&self, chosen: &[usize]) -> String {
        let mut idx: Vec<usize> = chosen.iter().copied().filter(|&i| i < self.len()).collect();
        idx.sort_unstable();
        idx.dedup();
        idx.iter()
            .map(|&i| self.chunk_text(i))
            .collect::<Vec<_>>()
            .join("\n\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LlamaConfig;

    fn words(s: &str) -> Result<usize> {
        Ok(s.split_whitespace().count())
    }

    #[test]
    fn sentences_cover_the_text() {
        let t = "One two. Three four!  Five?\nSix 3.5 seven.\n\nEight";
        let s = sentence_spans(t);
        let parts: Vec<&str> = s.iter().map(|&(a, b)| &t[a..b]).collect();
        assert_eq!(
            parts,
            vec![
                "One two. ",
                "Three four!  ",
                "Five?\n",
                "Six 3.5 seven.\n\n",
                "Eight"
            ]
        );
        assert_eq!(parts.concat(), t);
    }

    #[test]
    fn chunks_hold_whole_sentences_and_reach_the_target() {
        let text: String = (0..40)
            .map(|i| format!("Sentence number {i} has five words."))
            .collect::<Vec<_>>()
            .join(" ");
        // Each sentence is 6 words: chunks of 3 sentences reach 16 words.
        let chunks = chunk_spans(&text, 16, words).unwrap();
        assert_eq!(chunks.first().unwrap().start, 0);
        assert_eq!(chunks.last().unwrap().end, text.len());
        for w in chunks.windows(2) {
            assert_eq!(w[0].end, w[1].start, "contiguous");
        }
        for c in &chunks {
            let t = text[c.start..c.end].trim();
            assert!(t.ends_with('.'), "{t:?} ends inside a sentence");
            assert_eq!(c.n_tokens, words(t).unwrap());
        }
        // 40 sentences: 13 chunks of 3, and the 40th (6 words, under half of 16) joins the last.
        assert!(chunks[..chunks.len() - 1].iter().all(|c| c.n_tokens >= 16));
        assert_eq!(chunks.len(), 13);
        assert_eq!(chunks.last().unwrap().n_tokens, 24, "the short tail joins");
        // A tail of at least half the target stays on its own.
        let chunks = chunk_spans(&text, 12, words).unwrap();
        assert_eq!(chunks.len(), 20);
        assert!(chunk_spans(&text, 0, words).is_err());
        assert!(chunk_spans("  \n ", 4, words).is_err());
    }

    #[test]
    fn ranking_centers_normalises_and_breaks_ties_by_position() {
        let text = "a. b. c. d.";
        let chunks: Vec<Chunk> = (0..4)
            .map(|i| Chunk {
                start: 3 * i,
                end: (3 * i + 3).min(text.len()),
                n_tokens: 1,
            })
            .collect();
        // A large common direction (first coordinate) plus small distinguishing parts.
        let raw = vec![
            vec![10.0, 1.0, 0.0],
            vec![10.0, 0.0, 1.0],
            vec![10.0, -1.0, 0.0],
            vec![10.0, 0.0, -1.0],
        ];
        let idx =
            RagIndex::from_embeddings(text, chunks.clone(), raw.clone(), &RagOptions::default())
                .unwrap();
        assert_eq!(idx.chunk_text(1), "b.");
        assert_eq!(idx.chunk_at(4), Some(1));
        // The query shares the common direction; centered, it points at chunk 1.
        let r = idx.rank(&Query::Mean(vec![10.0, 0.1, 1.0])).unwrap();
        assert_eq!(r[0].0, 1);
        assert!(r[0].1 > 0.99 && r[0].1 <= 1.0 + 1e-6);
        assert_eq!(r[3].0, 3);
        // Without centering every chunk is nearly parallel to the query.
        let plain = RagIndex::from_embeddings(
            text,
            chunks.clone(),
            raw.clone(),
            &RagOptions {
                center: false,
                ..Default::default()
            },
        )
        .unwrap();
        let rp = plain.rank(&Query::Mean(vec![10.0, 0.1, 1.0])).unwrap();
        assert_eq!(rp[0].0, 1);
        assert!(rp[3].1 > 0.97, "anisotropy: {rp:?}");
        // Ties: chunks 0 and 2 are equally similar to a query along the third axis.
        let r = idx.rank(&Query::Mean(vec![10.0, 0.0, 1.0])).unwrap();
        assert_eq!(r[0].0, 1);
        assert_eq!((r[1].0, r[2].0), (0, 2));
        assert!((r[1].1 - r[2].1).abs() < 1e-6);
        // The context is in document order, deduplicated.
        assert_eq!(idx.context(&[3, 1, 3]), "b.\n\nd.");
        assert!(idx.rank(&Query::Mean(vec![1.0])).is_err());
        assert!(idx.rank(&Query::Tokens(vec![vec![1.0, 0.0, 0.0]])).is_err());
        assert!(
            RagIndex::from_embeddings(text, chunks, raw[..3].to_vec(), &RagOptions::default())
                .is_err()
        );
    }

    #[test]
    fn a_chunk_is_its_own_nearest_neighbour_with_a_random_model() {
        let tok = crate::tokenizer::tests::toy();
        let cfg = LlamaConfig {
            vocab_size: tok.vocab_size(),
            ..LlamaConfig::tiny()
        };
        let m = Llama::random(&cfg, 3).unwrap();
        let text = "The red fox ran. A blue bird sang loudly. Green trees grow tall. \
                    An old man read. The cold river flows north. Five small cats slept.";
        for embedding in [Embedding::HiddenMean, Embedding::ValueMaxSim { layer: 1 }] {
            let opts = RagOptions {
                chunk_tokens: 20,
                embedding,
                center: true,
            };
            let mut calls = 0;
            let idx = RagIndex::build_with_progress(&m, &tok, text, &opts, |d, t| {
                calls += 1;
                assert!(d <= t);
            })
            .unwrap();
            assert_eq!(idx.options().embedding, embedding);
            assert!(idx.len() >= 3, "{} chunks", idx.len());
            assert_eq!(calls, idx.len());
            for i in 0..idx.len() {
                let chunk = idx.chunk_text(i).to_string();
                let got = idx.retrieve(&m, &tok, &chunk, 2).unwrap();
                assert_eq!(got.len(), 2);
                assert_eq!(got[0].0, i, "{embedding}: chunk {i} {chunk:?}: {got:?}");
                assert!((got[0].1 - 1.0).abs() < 1e-4, "{got:?}");
                assert_ne!(got[1].0, i);
            }
            assert!(idx.retrieve(&m, &tok, "fox", 0).is_err());
        }
        // The mean embedding is the mean of the hidden states.
        let e = embed_text(&m, &tok, "The red fox").unwrap();
        let h = m
            .hidden_states(&tok.encode("The red fox").unwrap())
            .unwrap();
        let want: Vec<f32> = h.mean(0).unwrap().to_vec1().unwrap();
        assert_eq!(e, want);
        assert_eq!(e.len(), cfg.hidden_size);
        // Token vectors are the layer's values, one unit vector per token.
        let ids = tok.encode("The red fox").unwrap();
        let tv = token_values(&m, &tok, "The red fox", 1).unwrap();
        assert_eq!(tv.len(), ids.len());
        let v = &m.keys_values(&ids).unwrap()[1].1; // [H_kv, T, d]
        let d = cfg.head_dim();
        let raw: Vec<f32> = (0..cfg.n_kv_heads)
            .flat_map(|h| v.get(h).unwrap().get(2).unwrap().to_vec1::<f32>().unwrap())
            .collect();
        let n = raw.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert_eq!(tv[2].len(), cfg.n_kv_heads * d);
        for (a, b) in tv[2].iter().zip(&raw) {
            assert!((a - b / n).abs() < 1e-5);
        }
        assert!(token_values(&m, &tok, "fox", 9).is_err());
    }

    #[test]
    fn maxsim_scores_each_query_token_by_its_best_match() {
        let text = "aa. bb. cc.";
        let chunks: Vec<Chunk> = (0..3)
            .map(|i| Chunk {
                start: 4 * i,
                end: (4 * i + 4).min(text.len()),
                n_tokens: 2,
            })
            .collect();
        let e = |i: usize| {
            let mut v = vec![0.0f32; 4];
            v[i] = 2.0; // not unit: the index normalises
            v
        };
        // Chunk 0 holds directions 0 and 1, chunk 1 direction 2 twice, chunk 2 directions 1, 3.
        let toks = vec![vec![e(0), e(1)], vec![e(2), e(2)], vec![e(1), e(3)]];
        let idx = RagIndex::from_token_embeddings(
            text,
            chunks.clone(),
            toks.clone(),
            &RagOptions::default(),
        )
        .unwrap();
        // Query tokens along 0 and 3: chunk 0 matches the first fully, chunk 2 the second.
        let r = idx.rank(&Query::Tokens(vec![e(0), e(3)])).unwrap();
        assert!((r[0].1 - 0.5).abs() < 1e-6 && (r[1].1 - 0.5).abs() < 1e-6);
        assert_eq!((r[0].0, r[1].0, r[2].0), (0, 2, 1), "ties by position");
        assert!(r[2].1.abs() < 1e-6);
        // Query along 1 and 3: chunk 2 matches both.
        let r = idx.rank(&Query::Tokens(vec![e(1), e(3)])).unwrap();
        assert_eq!(r[0].0, 2);
        assert!((r[0].1 - 1.0).abs() < 1e-6);
        assert!(idx.rank(&Query::Mean(vec![1.0; 4])).is_err());
        assert!(idx.rank(&Query::Tokens(vec![vec![1.0; 3]])).is_err());
        assert!(RagIndex::from_token_embeddings(
            text,
            chunks,
            vec![vec![e(0)], vec![], vec![e(1)]],
            &RagOptions::default()
        )
        .is_err());
    }

    #[test]
    fn chat_prompt_uses_the_template_or_the_plain_format() {
        let mut tok = crate::tokenizer::tests::toy();
        let (p, chat) = chat_prompt(&tok, SYSTEM_DOCUMENT, Some("Doc."), "Why?").unwrap();
        assert!(!chat);
        assert_eq!(p, "Doc.\n\nQuestion: Why?\nAnswer:");
        tok.set_chat_template(Some(
            "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}\
             {% if add_generation_prompt %}<assistant>{% endif %}"
                .into(),
        ));
        let (p, chat) = chat_prompt(&tok, SYSTEM_PLAIN, None, "Why?").unwrap();
        assert!(chat);
        assert_eq!(p, format!("<system>{SYSTEM_PLAIN}<user>Why?<assistant>"));
        let (p, _) = chat_prompt(&tok, SYSTEM_DOCUMENT, Some("Doc."), "Why?").unwrap();
        assert!(p.contains("<user>Doc.\n\nWhy?<assistant>"));
    }
}
