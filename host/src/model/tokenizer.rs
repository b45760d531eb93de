//! The presets' tokenizer: byte-level BPE without merges, so any text round-trips exactly and no
//! vocabulary file has to be shipped. Special tokens follow Qwen3's names.

use anyhow::{Context, Result};
use std::path::Path;
use tokenizers::Tokenizer;

/// Qwen3's special tokens, placed right after the 256 byte tokens.
pub const SPECIAL_TOKENS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
pub const BYTE_TOKENS: u32 = 256;
pub const ENDOFTEXT_ID: u32 = BYTE_TOKENS;
pub const IM_END_ID: u32 = BYTE_TOKENS + 2;

/// GPT-2's reversible map from bytes to printable characters, which the ByteLevel pre-tokenizer
/// applies before the model sees the text.
fn byte_char(b: u8) -> char {
    let printable = |b: u8| {
        (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b)
    };
    if printable(b) {
        return char::from(b);
    }
    let rank = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + rank).expect("valid code point")
}

/// The tokenizer.json text of the byte-level tokenizer.
pub fn byte_level_tokenizer_json() -> String {
    let vocab: serde_json::Map<String, serde_json::Value> = (0..=255u8)
        .map(|b| (byte_char(b).to_string(), serde_json::json!(b as u32)))
        .collect();
    let added: Vec<serde_json::Value> = SPECIAL_TOKENS
        .iter()
        .enumerate()
        .map(|(i, t)| {
            serde_json::json!({"id": BYTE_TOKENS + i as u32, "content": t, "single_word": false, "lstrip": false,
                               "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let byte_level = serde_json::json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": true});
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": byte_level,
        "post_processor": null,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": []}
    });
    serde_json::to_string_pretty(&json).expect("json")
}

pub fn byte_level_tokenizer() -> Result<Tokenizer> {
    Tokenizer::from_bytes(byte_level_tokenizer_json().as_bytes())
        .map_err(|e| anyhow::anyhow!("building the byte-level tokenizer: {e}"))
}

/// The ids of `text` (no special tokens added); an error says it was tokenizing `what`.
pub fn encode(tokenizer: &Tokenizer, text: &str, what: &str) -> Result<Vec<u32>> {
    Ok(tokenizer
        .encode(text, false)
        .map_err(|e| anyhow::anyhow!("tokenizing {what}: {e}"))?
        .get_ids()
        .to_vec())
}

pub fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    if !path.is_file() {
        anyhow::bail!(
            "tokenizer file {} is missing; a model directory needs tokenizer.json",
            path.display()
        );
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Tokenizer::from_bytes(&bytes).map_err(|e| {
        anyhow::anyhow!(
            "tokenizer file {} is not a valid tokenizer.json: {e}",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_round_trips_text_and_knows_specials() {
        let tok = byte_level_tokenizer().unwrap();
        let text = "Context A: The Earth — ünïcode\nline two";
        let ids = tok.encode(text, false).unwrap().get_ids().to_vec();
        assert_eq!(ids.len(), text.len(), "one token per byte");
        assert_eq!(tok.decode(&ids, false).unwrap(), text);
        let ids = tok
            .encode("<|im_start|>hi<|im_end|>", false)
            .unwrap()
            .get_ids()
            .to_vec();
        assert_eq!(
            ids,
            vec![BYTE_TOKENS + 1, b'h' as u32, b'i' as u32, IM_END_ID]
        );
    }
}
