//! Chunked requests: typed pieces of text (one system prompt, then contexts, then one query),
//! each tokenized on its own so its tokens do not depend on its neighbours, rendered with Qwen's
//! chat markup as the prototype's chat template did (system message; one user message holding the
//! contexts, separated by blank lines, then the query), and addressed by the SHA-256 of its type
//! and text.

use super::Prompt;
use anyhow::{bail, Context, Result};
use nanohost_strategy_api::{Chunk, ChunkKind};
use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkText {
    pub kind: ChunkKind,
    pub text: String,
}

impl ChunkText {
    pub fn system(text: impl Into<String>) -> Self {
        ChunkText {
            kind: ChunkKind::SystemPrompt,
            text: text.into(),
        }
    }
    pub fn context(text: impl Into<String>) -> Self {
        ChunkText {
            kind: ChunkKind::Context,
            text: text.into(),
        }
    }
    pub fn query(text: impl Into<String>) -> Self {
        ChunkText {
            kind: ChunkKind::Query,
            text: text.into(),
        }
    }

    /// SHA-256 of a type tag and the text.
    pub fn hash(&self) -> [u8; 32] {
        let tag: &[u8] = match self.kind {
            ChunkKind::SystemPrompt => b"system\0",
            ChunkKind::Context => b"context\0",
            ChunkKind::Query => b"query\0",
        };
        Sha256::new()
            .chain_update(tag)
            .chain_update(self.text.as_bytes())
            .finalize()
            .into()
    }

    /// The text with its share of the chat markup.
    fn rendered(&self) -> String {
        match self.kind {
            ChunkKind::SystemPrompt => format!(
                "<|im_start|>system\n{}<|im_end|>\n<|im_start|>user\n",
                self.text
            ),
            ChunkKind::Context => format!("{}\n\n", self.text),
            ChunkKind::Query => format!("{}<|im_end|>\n<|im_start|>assistant\n", self.text),
        }
    }
}

/// Checks the composition (exactly one system prompt, first; any number of contexts; exactly one
/// query, last) and builds the prompt: tokens of each chunk in order, and the chunk table.
pub fn compose(chunks: &[ChunkText], tokenizer: &Tokenizer, wave: usize) -> Result<Prompt> {
    let kinds: Vec<ChunkKind> = chunks.iter().map(|c| c.kind).collect();
    match kinds.as_slice() {
        [] => bail!("a chunked request needs a system prompt, then contexts, then a query; it has no chunks"),
        [first, ..] if *first != ChunkKind::SystemPrompt => bail!("a chunked request starts with its system prompt; this one starts with a {first:?}"),
        [.., last] if *last != ChunkKind::Query => bail!("a chunked request ends with its query; this one ends with a {last:?}"),
        [_, middle @ .., _] => {
            if let Some(k) = middle.iter().find(|k| **k != ChunkKind::Context) {
                bail!("only contexts may stand between the system prompt and the query; found a {k:?} (a request has exactly one system prompt and one query)");
            }
        }
        [_] => bail!("a chunked request needs a query after its system prompt"),
    }
    let mut prompt = Prompt {
        tokens: Vec::new(),
        chunks: Vec::with_capacity(chunks.len()),
        wave,
        max_tokens: None,
        continues: None,
        check: None,
        arrival: None,
    };
    for c in chunks {
        let enc = tokenizer
            .encode(c.rendered(), false)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("cannot tokenize a {:?} chunk", c.kind))?;
        let ids = enc.get_ids();
        if ids.is_empty() {
            bail!("a {:?} chunk tokenizes to nothing", c.kind);
        }
        prompt.chunks.push(Chunk {
            kind: c.kind,
            start: prompt.tokens.len() as u32,
            len: ids.len() as u32,
            hash: c.hash(),
        });
        prompt.tokens.extend_from_slice(ids);
    }
    Ok(prompt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok() -> Tokenizer {
        crate::model::tokenizer::byte_level_tokenizer().unwrap()
    }

    #[test]
    fn chunks_tile_the_prompt_and_hash_type_and_text() {
        let p = compose(
            &[
                ChunkText::system("Be brief."),
                ChunkText::context("Earth is round."),
                ChunkText::query("Why?"),
            ],
            &tok(),
            2,
        )
        .unwrap();
        assert_eq!(p.wave, 2);
        assert_eq!(
            p.chunks.iter().map(|c| c.kind).collect::<Vec<_>>(),
            [
                ChunkKind::SystemPrompt,
                ChunkKind::Context,
                ChunkKind::Query
            ]
        );
        let mut at = 0;
        for c in &p.chunks {
            assert_eq!(c.start, at);
            at += c.len;
        }
        assert_eq!(at as usize, p.tokens.len());
        // Byte-level: a context's tokens are its bytes and the blank line after it.
        assert_eq!(p.chunks[1].len as usize, "Earth is round.\n\n".len());
        // Same text, other type: another address.
        assert_ne!(ChunkText::context("x").hash(), ChunkText::query("x").hash());
        assert_eq!(
            ChunkText::context("x").hash(),
            ChunkText::context("x").hash()
        );
    }

    #[test]
    fn every_other_composition_is_refused_by_name() {
        let (s, c, q) = (
            ChunkText::system("s"),
            ChunkText::context("c"),
            ChunkText::query("q"),
        );
        let err = |chunks: &[ChunkText]| compose(chunks, &tok(), 0).unwrap_err().to_string();
        assert!(err(&[]).contains("has no chunks"));
        assert!(err(&[c.clone(), q.clone()]).contains("starts with a Context"));
        assert!(err(&[s.clone(), c.clone()]).contains("ends with a Context"));
        assert!(err(std::slice::from_ref(&s)).contains("ends with a SystemPrompt"));
        assert!(err(&[s.clone(), s.clone(), q.clone()]).contains("found a SystemPrompt"));
        assert!(err(&[s.clone(), q.clone(), c.clone(), q.clone()]).contains("found a Query"));
        assert!(
            compose(&[s.clone(), q.clone()], &tok(), 0).is_ok(),
            "zero contexts is fine"
        );
        assert!(compose(&[s, c.clone(), c, q], &tok(), 0).is_ok());
    }
}
