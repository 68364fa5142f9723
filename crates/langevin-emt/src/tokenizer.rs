//! GPT-2 style byte-level BPE, built from GGUF tokenizer metadata with Hugging Face's
//! `tokenizers` crate.
//!
//! Reads `tokenizer.ggml.tokens`, `tokenizer.ggml.merges` and `tokenizer.ggml.token_type`
//! and assembles the pipeline of SmolLM2's own `tokenizer.json` (llama.cpp's `smollm`
//! pre-tokenizer):
//! * model: BPE from the vocabulary and the merges (no unknown token, no dropout,
//!   merges always applied);
//! * pre-tokenizer: `Sequence[Digits(individual_digits), ByteLevel(add_prefix_space =
//!   false)]`: every numeric character (`char::is_numeric`) is its own piece, then the
//!   GPT-2 regex `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
//!   splits the rest and each piece is mapped to the GPT-2 byte alphabet;
//! * added tokens: the control tokens (`token_type` 3, e.g. `<|im_start|>`) as special
//!   tokens, matched literally (leftmost, longest) anywhere in the text;
//! * decoder: `ByteLevel` on the ordinary tokens, invalid UTF-8 replaced by U+FFFD;
//!   control tokens are written as they are spelled.
//!
//! No normalizer and no post-processor: offsets are not trimmed and nothing is added.
//! The ids, offsets and decoded strings equal those of the hand-written BPE this module
//! had before (kept as a test reference in `tests/handwritten/`; the equivalence tests
//! are `tests/tokenizer_equivalence.rs`). Two behaviours of that tokenizer are kept on
//! top of the crate's: merges naming a token missing from the vocabulary are skipped
//! (the crate refuses them) and a repeated merge keeps its first rank; a byte missing
//! from the vocabulary is an error when the text contains it (the crate drops it).
//!
//! One difference remains, in decoding only and absent from SmolLM2's vocabulary (every
//! id of it decodes the same; tested): an ordinary token whose spelling mixes characters
//! of the byte alphabet with others (e.g. `Ġ€`) is written out unmapped as a whole
//! (`Ġ€`) by the `ByteLevel` decoder, where the hand-written one mapped it character by
//! character (` €`). Byte-level vocabularies never hold such tokens.

use std::collections::HashMap;

use candle_core::quantized::gguf_file;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, Decoder};

use crate::error::{EmtError, Result};

/// Byte-level BPE tokenizer.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// The vocabulary by id (spellings in the byte alphabet).
    tokens: Vec<String>,
    special_ids: Vec<u32>,
    /// Bytes whose byte-alphabet symbol is not in the vocabulary (empty for real ones).
    missing_bytes: Vec<u8>,
    eos_id: Option<u32>,
    /// The GGUF's `tokenizer.chat_template` (Jinja), if any.
    chat_template: Option<String>,
}

fn tok_err(e: impl std::fmt::Display) -> EmtError {
    EmtError::Tokenizer(e.to_string())
}

/// GPT-2's reversible map from bytes to printable unicode characters.
fn bytes_to_unicode() -> [char; 256] {
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

impl Tokenizer {
    /// Build from explicit vocabulary and merges (`"left right"` strings, in rank order).
    /// `special` lists the ids of control tokens.
    pub fn new(
        tokens: Vec<String>,
        merges: &[String],
        special: &[u32],
        eos_id: Option<u32>,
    ) -> Result<Self> {
        if tokens.is_empty() {
            return Err(EmtError::Tokenizer("empty vocabulary".into()));
        }
        // A repeated spelling maps to its last id (as a `HashMap` collected in id order).
        let token_to_id: HashMap<&str, u32> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.as_str(), i as u32))
            .collect();
        // Merges whose parts or result are not in the vocabulary are skipped; a pair
        // merged twice keeps its first (best) rank.
        let mut seen = std::collections::HashSet::with_capacity(merges.len());
        let mut kept = Vec::with_capacity(merges.len());
        for m in merges {
            let (a, b) = m
                .split_once(' ')
                .ok_or_else(|| EmtError::Tokenizer(format!("malformed merge {m:?}")))?;
            let (Some(&ia), Some(&ib)) = (token_to_id.get(a), token_to_id.get(b)) else {
                continue;
            };
            if !token_to_id.contains_key(format!("{a}{b}").as_str()) || !seen.insert((ia, ib)) {
                continue;
            }
            kept.push((a.to_string(), b.to_string()));
        }
        let byte_to_char = bytes_to_unicode();
        let missing_bytes = (0..=255u8)
            .filter(|&b| {
                !token_to_id
                    .contains_key(byte_to_char[b as usize].encode_utf8(&mut [0u8; 4]) as &str)
            })
            .collect();
        if let Some(e) = eos_id {
            if e as usize >= tokens.len() {
                return Err(EmtError::Tokenizer(format!("eos id {e} out of range")));
            }
        }
        let vocab: Vocab = token_to_id
            .iter()
            .map(|(&t, &i)| (t.to_string(), i))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, kept)
            .build()
            .map_err(tok_err)?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner
            .with_pre_tokenizer(Some(Sequence::new(vec![
                Digits::new(true).into(),
                ByteLevel::new(false, true, true).into(),
            ])))
            .with_decoder(Some(ByteLevelDecoder::default()));
        let specials: Vec<AddedToken> = special
            .iter()
            .filter_map(|&id| tokens.get(id as usize))
            .filter(|t| !t.is_empty())
            .map(|t| AddedToken::from(t.clone(), true))
            .collect();
        inner.add_special_tokens(specials).map_err(tok_err)?;
        Ok(Self {
            inner,
            tokens,
            special_ids: special.to_vec(),
            missing_bytes,
            eos_id,
            chat_template: None,
        })
    }

    /// Build from the metadata of a GGUF file.
    pub fn from_gguf(content: &gguf_file::Content) -> Result<Self> {
        let md = |k: &str| {
            content
                .metadata
                .get(k)
                .ok_or_else(|| EmtError::Tokenizer(format!("missing metadata {k}")))
        };
        let model = md("tokenizer.ggml.model")?.to_string()?;
        if model != "gpt2" {
            return Err(EmtError::Tokenizer(format!(
                "tokenizer model {model:?} is not supported (only gpt2 byte-level BPE)"
            )));
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
        let mut tok = Self::new(tokens, &merges, &special, eos)?;
        tok.chat_template = content
            .metadata
            .get("tokenizer.chat_template")
            .and_then(|v| v.to_string().ok())
            .filter(|t| !t.trim().is_empty())
            .cloned();
        Ok(tok)
    }

    /// The model's chat template (the GGUF's `tokenizer.chat_template`, Jinja).
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// Set (or remove) the chat template.
    pub fn set_chat_template(&mut self, template: Option<String>) {
        self.chat_template = template;
    }

    /// `messages` (`(role, content)` pairs) rendered with the model's chat
    /// template, as Hugging Face's `apply_chat_template` does, ending with the
    /// assistant's turn when `add_generation_prompt`; `None` when the model has
    /// no template. A template that does not render is
    /// [`EmtError::Tokenizer`].
    pub fn apply_chat_template(
        &self,
        messages: &[(&str, &str)],
        add_generation_prompt: bool,
    ) -> Result<Option<String>> {
        let Some(template) = &self.chat_template else {
            return Ok(None);
        };
        let mut env = minijinja::Environment::new();
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        let render_err = |e: minijinja::Error| tok_err(format!("chat template: {e}"));
        env.add_template("chat", template).map_err(render_err)?;
        let msgs: Vec<std::collections::BTreeMap<&str, &str>> = messages
            .iter()
            .map(|(role, content)| [("role", *role), ("content", *content)].into())
            .collect();
        let eos = self
            .eos_id
            .and_then(|e| self.tokens.get(e as usize))
            .map_or("", String::as_str);
        let out = env
            .get_template("chat")
            .map_err(render_err)?
            .render(minijinja::context! {
                messages => msgs,
                add_generation_prompt => add_generation_prompt,
                eos_token => eos,
                bos_token => "",
            })
            .map_err(render_err)?;
        Ok(Some(out))
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
        self.inner.token_to_id(token)
    }

    /// Whether `text` holds a byte the vocabulary cannot spell (never, for real vocabularies).
    fn may_miss_bytes(&self, text: &str) -> bool {
        !self.missing_bytes.is_empty() && text.bytes().any(|b| self.missing_bytes.contains(&b))
    }

    /// Encode text to ids.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        if self.may_miss_bytes(text) {
            return Ok(self
                .encode_with_offsets(text)?
                .into_iter()
                .map(|(id, _)| id)
                .collect());
        }
        let enc = self.inner.encode_fast(text, false).map_err(tok_err)?;
        Ok(enc.get_ids().to_vec())
    }

    /// Encode text to ids, each with the byte span `(start, end)` of `text` it covers.
    /// A token that covers part of a multi-byte character gets the span of the
    /// whole piece it came from.
    pub fn encode_with_offsets(&self, text: &str) -> Result<Vec<(u32, (usize, usize))>> {
        let enc = self.inner.encode(text, false).map_err(tok_err)?;
        let out: Vec<(u32, (usize, usize))> = enc
            .get_ids()
            .iter()
            .copied()
            .zip(enc.get_offsets().iter().copied())
            .collect();
        if self.may_miss_bytes(text) {
            // The crate drops bytes it cannot spell; outside control tokens that is an error.
            let in_special = |i: usize| {
                out.iter()
                    .any(|&(id, (s, e))| self.is_special(id) && (s..e).contains(&i))
            };
            if let Some((_, b)) = text
                .bytes()
                .enumerate()
                .find(|&(i, b)| self.missing_bytes.contains(&b) && !in_special(i))
            {
                return Err(EmtError::Tokenizer(format!(
                    "byte {b:#x} missing from vocabulary"
                )));
            }
        }
        Ok(out)
    }

    /// Decode ids to text. Control tokens are written out unless `skip_special`.
    /// Invalid UTF-8 (a token sequence cut inside a character) is replaced by U+FFFD.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        let decoder = ByteLevelDecoder::default();
        let mut out = String::new();
        // Runs of ordinary tokens go through the byte-level decoder; control tokens are
        // written literally between them (splitting the byte stream there changes
        // nothing: a control token is whole UTF-8, so no character spans it).
        let mut run: Vec<String> = Vec::new();
        for &id in ids {
            let tok = self
                .tokens
                .get(id as usize)
                .ok_or(EmtError::TokenOutOfRange {
                    id,
                    vocab: self.tokens.len(),
                })?;
            if self.is_special(id) {
                if !skip_special {
                    out.push_str(&decoder.decode(std::mem::take(&mut run)).map_err(tok_err)?);
                    out.push_str(tok);
                }
            } else {
                run.push(tok.clone());
            }
        }
        out.push_str(&decoder.decode(run).map_err(tok_err)?);
        Ok(out)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A toy vocabulary: all 256 byte symbols plus a few merges.
    pub(crate) fn toy() -> Tokenizer {
        let b2u = bytes_to_unicode();
        let mut tokens: Vec<String> = vec!["<|endoftext|>".into()];
        tokens.extend(b2u.iter().map(|c| c.to_string()));
        let merges: Vec<String> = vec!["h e".into(), "l l".into(), "he ll".into(), "Ġ w".into()];
        for m in &merges {
            tokens.push(m.replace(' ', ""));
        }
        Tokenizer::new(tokens, &merges, &[0], Some(0)).unwrap()
    }

    /// SmolLM2-Instruct's template, as its GGUF holds it.
    pub(crate) const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn chat_template_renders_as_hugging_face_does() {
        let mut t = toy();
        assert_eq!(
            t.apply_chat_template(&[("user", "hi")], true).unwrap(),
            None
        );
        t.set_chat_template(Some(CHATML.into()));
        // transformers' apply_chat_template on this template gives exactly these strings
        assert_eq!(
            t.apply_chat_template(&[("system", "Be brief."), ("user", "Where?")], true)
                .unwrap()
                .unwrap(),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhere?<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(
            t.apply_chat_template(&[("user", "Where?")], false).unwrap().unwrap(),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhere?<|im_end|>\n"
        );
        t.set_chat_template(Some("{{ raise_exception('no system role') }}".into()));
        let e = t
            .apply_chat_template(&[("user", "x")], true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no system role"), "{e}");
        t.set_chat_template(Some("{% for %}".into()));
        assert!(t.apply_chat_template(&[("user", "x")], true).is_err());
    }

    #[test]
    fn byte_map_is_a_bijection() {
        let m = bytes_to_unicode();
        let set: std::collections::HashSet<char> = m.iter().copied().collect();
        assert_eq!(set.len(), 256);
        assert_eq!(m[b' ' as usize], 'Ġ');
        assert_eq!(m[b'a' as usize], 'a');
    }

    #[test]
    fn merges_apply_by_rank_and_round_trip() {
        let t = toy();
        let ids = t.encode("hello world").unwrap();
        let hell = t.token_id("hell").unwrap();
        let gw = t.token_id("Ġw").unwrap();
        assert_eq!(ids[0], hell);
        assert!(ids.contains(&gw));
        assert_eq!(t.decode(&ids, false).unwrap(), "hello world");
    }

    #[test]
    fn specials_digits_unicode_and_offsets() {
        let t = toy();
        let text = "a<|endoftext|>x 2024 é€";
        let enc = t.encode_with_offsets(text).unwrap();
        assert_eq!(enc[1].0, 0);
        assert_eq!(&text[enc[1].1 .0..enc[1].1 .1], "<|endoftext|>");
        let ids: Vec<u32> = enc.iter().map(|e| e.0).collect();
        assert_eq!(t.encode(text).unwrap(), ids);
        assert_eq!(t.decode(&ids, false).unwrap(), text);
        assert_eq!(t.decode(&ids, true).unwrap(), "ax 2024 é€");
        for (_, (s, e)) in &enc {
            assert!(text.is_char_boundary(*s) && text.is_char_boundary(*e));
        }
        // Digits are single tokens each.
        let two = t.token_id("2").unwrap();
        assert_eq!(ids.iter().filter(|&&i| i == two).count(), 2);
        assert!(t.decode(&[9999], false).is_err());
    }

    #[test]
    fn bad_merges_are_skipped_and_missing_bytes_are_errors() {
        // Vocabulary without the symbol of byte 'z'; merges naming unknown tokens,
        // a merge whose result is unknown and a repeated merge.
        let b2u = bytes_to_unicode();
        let mut tokens: Vec<String> = vec!["<|endoftext|>".into()];
        tokens.extend(b2u.iter().filter(|&&c| c != 'z').map(|c| c.to_string()));
        tokens.push("ab".into());
        tokens.push("<z>".into());
        let special = [0, tokens.len() as u32 - 1];
        let merges: Vec<String> = vec![
            "a z".into(),
            "b c".into(),
            "a b".into(),
            "a b".into(),
            "q r".into(),
        ];
        let t = Tokenizer::new(tokens, &merges, &special, None).unwrap();
        assert_eq!(t.encode("ab").unwrap(), vec![t.token_id("ab").unwrap()]);
        assert_eq!(t.encode("bc").unwrap().len(), 2);
        // A missing byte inside a control token is no error.
        assert_eq!(t.encode("a<z>").unwrap()[1], special[1]);
        for text in ["az", "<|endoftext|>z"] {
            let e = t.encode(text).unwrap_err().to_string();
            assert!(e.contains("0x7a missing"), "{e}");
            assert!(t.encode_with_offsets(text).is_err());
        }
        assert!(Tokenizer::new(vec!["a".into()], &["ab".into()], &[], None).is_err());
        assert!(Tokenizer::new(Vec::new(), &[], &[], None).is_err());
        assert!(Tokenizer::new(vec!["a".into()], &[], &[], Some(1)).is_err());
    }
}
