//! The text of the quality tasks, shared by the embedded model's training and the `retrieval`
//! and `perplexity` workloads, so the model is asked exactly what it was taught.
//!
//! - Key-value records `"qzbt4821\n"` (see [`record`]), and a query `"? qzbt"` whose answer is the
//!   value.
//! - A pass key hidden in the book's text, asked for at the end.
//! - The book: Jules Verne's *Around the World in 80 Days* (Project Gutenberg, public domain),
//!   the copy the `esaxx-rs` crate (a dependency of `tokenizers`) ships. Its first 90% trains
//!   the embedded model; the last 10% is the held-out text of `perplexity`.

use crate::rng::Rng;
use std::sync::OnceLock;

const BOOK_FILE: &str = include_str!("../../data/around-the-world-in-80-days.txt");

/// Letters of a key and digits of a value: fixed lengths, so an answer is always
/// `VALUE_LEN` tokens with any byte-level or digit-splitting tokenizer (Qwen3 splits digits).
pub const KEY_LEN: usize = 4;
pub const VALUE_LEN: usize = 4;

/// The book's body (between the Gutenberg markers), with Unix line ends.
pub fn book() -> &'static str {
    static BODY: OnceLock<String> = OnceLock::new();
    BODY.get_or_init(|| {
        let text = BOOK_FILE
            .trim_start_matches('\u{feff}')
            .replace("\r\n", "\n");
        let start = text
            .find("*** START OF")
            .and_then(|i| text[i..].find('\n').map(|j| i + j + 1))
            .unwrap_or(0);
        let end = text
            .find("End of Project Gutenberg")
            .or_else(|| text.find("*** END OF"))
            .unwrap_or(text.len());
        text[start..end].trim().to_string()
    })
}

/// Where the held-out tenth starts, on a line boundary.
fn split_point() -> usize {
    let b = book();
    let at = b.len() * 9 / 10;
    b[at..].find('\n').map_or(at, |i| at + i + 1)
}

/// The first 90% of the book: training text.
pub fn train_text() -> &'static str {
    &book()[..split_point()]
}

/// The last 10% of the book: never seen in training.
pub fn heldout_text() -> &'static str {
    &book()[split_point()..]
}

pub fn random_key(rng: &mut Rng) -> String {
    (0..KEY_LEN)
        .map(|_| (b'a' + rng.index(26) as u8) as char)
        .collect()
}

pub fn random_value(rng: &mut Rng) -> String {
    (0..VALUE_LEN)
        .map(|_| (b'0' + rng.index(10) as u8) as char)
        .collect()
}

/// `n` distinct random keys.
pub fn distinct_keys(rng: &mut Rng, n: usize) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut keys = Vec::with_capacity(n);
    while keys.len() < n {
        let k = random_key(rng);
        if seen.insert(k.clone()) {
            keys.push(k);
        }
    }
    keys
}

/// A record: the key's letters then the value's digits, adjacent (`"qzbt4821\n"`). The token
/// before the value is the key's last letter in the record and in the query alike, so the first
/// step of a lookup is the simplest in-context copy (a matching token, then what followed it);
/// a separator such as `": "` would hide the key three tokens back, which a small model trained
/// on two CPU cores does not learn to reach in time.
pub fn record(key: &str, value: &str) -> String {
    format!("{key}{value}\n")
}

/// The lookup of `key`; the expected continuation is its value.
pub fn query(key: &str) -> String {
    format!("? {key}")
}

/// The pass key's sentence, hidden in text.
pub fn passkey_sentence(value: &str) -> String {
    format!("\nThe pass key is {value}. Remember it. {value} is the pass key.\n")
}

/// The question that ends a pass-key document; the expected continuation is the key.
pub const PASSKEY_QUESTION: &str = "\nWhat is the pass key? The pass key is ";

/// A random excerpt of `len` bytes of `text`, starting at a line start (always valid UTF-8: the
/// book is ASCII but for a few characters, and the cut backs off to a char boundary).
pub fn excerpt<'a>(rng: &mut Rng, text: &'a str, len: usize) -> &'a str {
    let max_start = text.len().saturating_sub(len + 1);
    let mut start = rng.index(max_start.max(1));
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    if let Some(i) = text[start..].find('\n') {
        if start + i + 1 + len <= text.len() {
            start += i + 1;
        }
    }
    let mut end = (start + len).min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_book_splits_into_train_and_heldout_text() {
        assert!(
            book().len() > 300_000 && !book().contains('\r') && !book().contains("Gutenberg"),
            "{}",
            &book()[..80]
        );
        assert_eq!(train_text().len() + heldout_text().len(), book().len());
        assert!(heldout_text().len() > 30_000 && train_text().ends_with('\n'));
    }

    #[test]
    fn keys_are_distinct_and_records_parse() {
        let mut rng = Rng::new(1);
        let keys = distinct_keys(&mut rng, 300);
        assert_eq!(
            keys.iter().collect::<std::collections::HashSet<_>>().len(),
            300
        );
        let v = random_value(&mut rng);
        assert_eq!(record(&keys[0], &v), format!("{}{v}\n", keys[0]));
        assert!(record(&keys[0], &v).starts_with(query(&keys[0]).trim_start_matches("? ")));
    }
}
