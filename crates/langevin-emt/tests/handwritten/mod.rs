//! The hand-written byte-level BPE that `langevin_emt::Tokenizer` replaced (commit 598c4ab),
//! kept verbatim as the reference the `tokenizers`-based one is checked against
//! (tests/tokenizer_equivalence.rs) and timed against (examples/tokenizer_speed.rs).
//! Only the error type changed (anyhow instead of `EmtError`).
//!
//! GPT-2 style byte-level BPE, built from GGUF tokenizer metadata.
//!
//! Reads `tokenizer.ggml.tokens`, `tokenizer.ggml.merges` and `tokenizer.ggml.token_type`.
//! Pre-tokenization follows llama.cpp's `smollm` pre-tokenizer (the same as the
//! Hugging Face tokenizer of SmolLM2): every digit is its own piece, then the GPT-2
//! regex `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
//! Each piece is mapped to the GPT-2 byte alphabet and merged by merge rank.
//! Control tokens (`token_type` 3, e.g. `<|im_start|>`) written literally in the
//! text are recognised as single tokens.

#![allow(dead_code)]

use std::collections::HashMap;

use candle_core::quantized::gguf_file;
use fancy_regex::Regex;

use anyhow::{anyhow, bail, Result};

const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// Byte-level BPE tokenizer.
#[derive(Debug, Clone)]
pub struct HandwrittenBpe {
    tokens: Vec<String>,
    token_to_id: HashMap<String, u32>,
    /// (left id, right id) -> (rank, merged id)
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// Control tokens, longest first, matched literally in text.
    specials: Vec<(String, u32)>,
    special_ids: Vec<u32>,
    byte_to_char: [char; 256],
    char_to_byte: HashMap<char, u8>,
    regex: Regex,
    eos_id: Option<u32>,
}

/// GPT-2's reversible map from bytes to printable unicode characters.
pub fn bytes_to_unicode() -> [char; 256] {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut out = ['\0'; 256];
    for (b, c) in bs.into_iter().zip(cs) {
        out[b as usize] = char::from_u32(c).unwrap_or('\0');
    }
    out
}

impl HandwrittenBpe {
    /// Build from explicit vocabulary and merges (`"left right"` strings, in rank order).
    /// `special` lists the ids of control tokens.
    pub fn new(
        tokens: Vec<String>,
        merges: &[String],
        special: &[u32],
        eos_id: Option<u32>,
    ) -> Result<Self> {
        if tokens.is_empty() {
            return Err(anyhow!("empty vocabulary"));
        }
        let token_to_id: HashMap<String, u32> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let mut merge_map = HashMap::with_capacity(merges.len());
        for (rank, m) in merges.iter().enumerate() {
            let (a, b) = m
                .split_once(' ')
                .ok_or_else(|| anyhow!("malformed merge {m:?}"))?;
            let (Some(&ia), Some(&ib)) = (token_to_id.get(a), token_to_id.get(b)) else {
                continue;
            };
            let Some(&merged) = token_to_id.get(&format!("{a}{b}")) else {
                continue;
            };
            merge_map.entry((ia, ib)).or_insert((rank as u32, merged));
        }
        let mut specials: Vec<(String, u32)> = special
            .iter()
            .filter_map(|&id| tokens.get(id as usize).map(|t| (t.clone(), id)))
            .filter(|(t, _)| !t.is_empty())
            .collect();
        specials.sort_by_key(|(t, _)| std::cmp::Reverse(t.len()));
        let byte_to_char = bytes_to_unicode();
        let char_to_byte = byte_to_char
            .iter()
            .enumerate()
            .map(|(b, &c)| (c, b as u8))
            .collect();
        let regex = Regex::new(GPT2_PATTERN).map_err(|e| anyhow!("{e}"))?;
        if let Some(e) = eos_id {
            if e as usize >= tokens.len() {
                return Err(anyhow!("eos id {e} out of range"));
            }
        }
        Ok(Self {
            tokens,
            token_to_id,
            merges: merge_map,
            specials,
            special_ids: special.to_vec(),
            byte_to_char,
            char_to_byte,
            regex,
            eos_id,
        })
    }

    /// Build from the metadata of a GGUF file.
    pub fn from_gguf(content: &gguf_file::Content) -> Result<Self> {
        let md = |k: &str| {
            content
                .metadata
                .get(k)
                .ok_or_else(|| anyhow!("missing metadata {k}"))
        };
        let model = md("tokenizer.ggml.model")?.to_string()?;
        if model != "gpt2" {
            bail!("tokenizer model {model:?} is not supported (only gpt2 byte-level BPE)");
        }
        let tokens = md("tokenizer.ggml.tokens")?
            .to_vec()?
            .iter()
            .map(|v| v.to_string().cloned())
            .collect::<candle_core::Result<Vec<_>>>()?;
        let merges = md("tokenizer.ggml.merges")?
            .to_vec()?
            .iter()
            .map(|v| v.to_string().cloned())
            .collect::<candle_core::Result<Vec<_>>>()?;
        let special: Vec<u32> = match content.metadata.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .to_vec()?
                .iter()
                .enumerate()
                .filter(|(_, t)| matches!(t.to_i32(), Ok(3)))
                .map(|(i, _)| i as u32)
                .collect(),
            None => Vec::new(),
        };
        let eos = content
            .metadata
            .get("tokenizer.ggml.eos_token_id")
            .and_then(|v| v.to_u32().ok());
        Self::new(tokens, &merges, &special, eos)
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// End-of-sequence id, if the model declares one.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }

    /// Ids of control (special) tokens.
    pub fn special_ids(&self) -> &[u32] {
        &self.special_ids
    }

    /// Whether `id` is a control token.
    pub fn is_special(&self, id: u32) -> bool {
        self.special_ids.contains(&id)
    }

    /// The id of an exact vocabulary entry (byte-level spelling).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.token_to_id.get(token).copied()
    }

    /// Encode text to ids.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .encode_with_offsets(text)?
            .into_iter()
            .map(|(id, _)| id)
            .collect())
    }

    /// Encode text to ids, each with the byte span `(start, end)` of `text` it covers.
    /// A token that covers part of a multi-byte character gets the span of the
    /// whole piece it came from.
    pub fn encode_with_offsets(&self, text: &str) -> Result<Vec<(u32, (usize, usize))>> {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < text.len() {
            // Next control token occurrence.
            let mut next: Option<(usize, &str, u32)> = None;
            for (s, id) in &self.specials {
                if let Some(i) = text[pos..].find(s.as_str()) {
                    let at = pos + i;
                    if next.is_none_or(|(a, _, _)| at < a) {
                        next = Some((at, s.as_str(), *id));
                    }
                }
            }
            let end = next.map_or(text.len(), |(a, _, _)| a);
            self.encode_plain(&text[pos..end], pos, &mut out)?;
            match next {
                Some((at, s, id)) => {
                    out.push((id, (at, at + s.len())));
                    pos = at + s.len();
                }
                None => pos = text.len(),
            }
        }
        Ok(out)
    }

    fn encode_plain(
        &self,
        text: &str,
        base: usize,
        out: &mut Vec<(u32, (usize, usize))>,
    ) -> Result<()> {
        // Digits are isolated first, then the GPT-2 regex runs on the rest.
        let mut segments: Vec<(usize, &str)> = Vec::new();
        let mut seg_start = 0;
        for (i, c) in text.char_indices() {
            if c.is_numeric() {
                if seg_start < i {
                    segments.push((seg_start, &text[seg_start..i]));
                }
                segments.push((i, &text[i..i + c.len_utf8()]));
                seg_start = i + c.len_utf8();
            }
        }
        if seg_start < text.len() {
            segments.push((seg_start, &text[seg_start..]));
        }
        for (off, seg) in segments {
            for m in self.regex.find_iter(seg) {
                let m = m.map_err(|e| anyhow!("{e}"))?;
                let start = base + off + m.start();
                self.bpe_piece(m.as_str(), start, out)?;
            }
        }
        Ok(())
    }

    fn bpe_piece(
        &self,
        piece: &str,
        start: usize,
        out: &mut Vec<(u32, (usize, usize))>,
    ) -> Result<()> {
        // Symbols: (token id, byte start, byte end) in the piece.
        let mut syms: Vec<(u32, usize, usize)> = Vec::with_capacity(piece.len());
        for (i, b) in piece.bytes().enumerate() {
            let c = self.byte_to_char[b as usize];
            let id = self
                .token_to_id
                .get(c.encode_utf8(&mut [0u8; 4]) as &str)
                .copied()
                .ok_or_else(|| anyhow!("byte {b:#x} missing from vocabulary"))?;
            syms.push((id, i, i + 1));
        }
        loop {
            let mut best: Option<(u32, usize, u32)> = None;
            for i in 0..syms.len().saturating_sub(1) {
                if let Some(&(rank, merged)) = self.merges.get(&(syms[i].0, syms[i + 1].0)) {
                    if best.is_none_or(|(r, _, _)| rank < r) {
                        best = Some((rank, i, merged));
                    }
                }
            }
            let Some((_, i, merged)) = best else { break };
            let end = syms[i + 1].2;
            syms[i] = (merged, syms[i].1, end);
            syms.remove(i + 1);
        }
        // Spans: snap to char boundaries of the piece.
        for (id, s, e) in syms {
            let mut s = s;
            while !piece.is_char_boundary(s) {
                s -= 1;
            }
            let mut e = e;
            while !piece.is_char_boundary(e) {
                e += 1;
            }
            out.push((id, (start + s, start + e)));
        }
        Ok(())
    }

    /// Decode ids to text. Control tokens are written out unless `skip_special`.
    /// Invalid UTF-8 (a token sequence cut inside a character) is replaced by U+FFFD.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        let mut bytes = Vec::new();
        for &id in ids {
            let tok = self
                .tokens
                .get(id as usize)
                .ok_or_else(|| anyhow!("token id {id} out of range ({})", self.tokens.len()))?;
            if self.is_special(id) {
                if !skip_special {
                    bytes.extend_from_slice(tok.as_bytes());
                }
                continue;
            }
            for c in tok.chars() {
                match self.char_to_byte.get(&c) {
                    Some(&b) => bytes.push(b),
                    None => bytes.extend_from_slice(c.encode_utf8(&mut [0u8; 4]).as_bytes()),
                }
            }
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}
