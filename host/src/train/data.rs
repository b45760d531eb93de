//! Training documents for the embedded model: byte tokens with a loss weight per target.
//!
//! A mix that forces the model to read its context: key-value lookup (many records, then
//! queries), a pass key hidden in text, copying a random span, and plain text. The answer tokens
//! carry the weight; the random parts (keys, values, filler letters) carry little, since nothing
//! can predict them.

use crate::rng::Rng;
use crate::workload::needles::{distinct_keys, excerpt, passkey_sentence, query, random_value, record, train_text, PASSKEY_QUESTION};

/// One document: `tokens` has `len + 1` entries (inputs are the first `len`, targets the last
/// `len`), `weights` one per target.
pub struct Doc {
    pub kind: Kind,
    pub tokens: Vec<u32>,
    pub weights: Vec<f32>,
    /// Target indices of each query's answer: exact match means every one is predicted.
    pub answers: Vec<std::ops::Range<usize>>,
}

/// Weight of a target nothing in the context determines (a record's key or value, filler).
const NOISE: f32 = 0.02;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    KeyValue,
    Passkey,
    Copy,
    Text,
}

impl Kind {
    /// The mix: lookup dominates, since it is what the model must reach 99% on.
    pub fn draw(rng: &mut Rng) -> Kind {
        match rng.index(20) {
            0..=9 => Kind::KeyValue,
            10..=11 => Kind::Passkey,
            12..=16 => Kind::Copy,
            _ => Kind::Text,
        }
    }
}

/// Builds a document piece by piece, each piece with its weight, cut to `len + 1` tokens.
struct Builder {
    tokens: Vec<u32>,
    weights: Vec<f32>,
    answers: Vec<std::ops::Range<usize>>,
    cap: usize,
}

impl Builder {
    fn new(len: usize) -> Self {
        Builder { tokens: Vec::with_capacity(len + 1), weights: Vec::with_capacity(len + 1), answers: Vec::new(), cap: len + 1 }
    }

    fn room(&self) -> usize {
        self.cap - self.tokens.len()
    }

    /// Appends `text` with weight `w` on each byte as a target; false if it did not fit whole.
    fn push(&mut self, text: &str, w: f32) -> bool {
        let fits = text.len() <= self.room();
        for &b in text.as_bytes().iter().take(self.room()) {
            self.tokens.push(b as u32);
            self.weights.push(w);
        }
        fits
    }

    /// An answer: weight 1, and recorded for exact match if it fit whole.
    fn answer(&mut self, text: &str) -> bool {
        let start = self.tokens.len();
        let fits = self.push(text, 1.0);
        if fits && start > 0 {
            self.answers.push(start - 1..start - 1 + text.len());
        }
        fits
    }

    fn finish(mut self, kind: Kind) -> Doc {
        assert_eq!(self.tokens.len(), self.cap, "document not filled");
        // weights[i] belongs to the target tokens[i + 1].
        self.weights.remove(0);
        Doc { kind, tokens: self.tokens, weights: self.weights, answers: self.answers }
    }
}

pub fn document(kind: Kind, rng: &mut Rng, len: usize) -> Doc {
    let mut b = Builder::new(len);
    match kind {
        Kind::KeyValue => key_value(&mut b, rng),
        Kind::Passkey => passkey(&mut b, rng),
        Kind::Copy => copy(&mut b, rng),
        Kind::Text => {
            b.push(excerpt(rng, train_text(), len + 1), 1.0);
            while b.room() > 0 {
                b.push(" ", 1.0);
            }
        }
    }
    b.finish(kind)
}

/// Records filling 60-85% of the document, then queries for random records until full.
fn key_value(b: &mut Builder, rng: &mut Rng) {
    let record_len = record("abcd", "0123").len();
    let share = 0.6 + 0.25 * rng.next_f64();
    let n = ((b.cap as f64 * share) as usize / record_len).max(1);
    let keys = distinct_keys(rng, n);
    let values: Vec<String> = (0..n).map(|_| random_value(rng)).collect();
    for (k, v) in keys.iter().zip(&values) {
        b.push(&record(k, v), NOISE);
    }
    while b.room() > 0 {
        let i = rng.index(n);
        b.push(&query(&keys[i]), NOISE);
        b.answer(&values[i]);
        b.push("\n", NOISE);
    }
}

/// Book text with the pass-key sentence at a random depth, the question at the end.
fn passkey(b: &mut Builder, rng: &mut Rng) {
    let value = format!("{}{}", random_value(rng), rng.index(10));
    let sentence = passkey_sentence(&value);
    let tail = PASSKEY_QUESTION.len() + value.len() + 2;
    let filler_len = b.cap.saturating_sub(sentence.len() + tail);
    let filler = excerpt(rng, train_text(), filler_len);
    let depth = rng.index(filler.len().max(1));
    let depth = (0..=depth).rev().find(|&i| filler.is_char_boundary(i)).unwrap_or(0);
    b.push(&filler[..depth], 1.0);
    b.push(&sentence, NOISE);
    b.push(&filler[depth..], 1.0);
    b.push(PASSKEY_QUESTION, 1.0);
    b.answer(&value);
    while b.room() > 0 {
        b.push(".\n", 1.0);
    }
}

/// Random spans of letters and digits, each followed by `"\n>> "` and itself, until full.
fn copy(b: &mut Builder, rng: &mut Rng) {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789 ";
    while b.room() > 0 {
        let n = 8 + rng.index(120);
        let span: String = (0..n).map(|_| ALPHABET[rng.index(ALPHABET.len())] as char).collect();
        b.push(&span, NOISE);
        b.push("\n>> ", NOISE);
        b.answer(&span);
        b.push("\n", NOISE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_have_the_asked_length_and_answers_follow_their_queries() {
        let mut rng = Rng::new(3);
        for kind in [Kind::KeyValue, Kind::Passkey, Kind::Copy, Kind::Text] {
            for len in [64, 300, 1024] {
                let d = document(kind, &mut rng, len);
                assert_eq!((d.tokens.len(), d.weights.len()), (len + 1, len), "{kind:?}");
                for a in &d.answers {
                    assert!(a.end <= len && d.weights[a.clone()].iter().all(|&w| w == 1.0), "{kind:?} {a:?}");
                }
                if kind == Kind::KeyValue {
                    assert!(!d.answers.is_empty());
                    // The answer is the value of the record with the queried key.
                    let text = String::from_utf8(d.tokens.iter().map(|&t| t as u8).collect()).unwrap();
                    let a = &d.answers[0];
                    let value = &text[a.start + 1..a.end + 1];
                    let key = &text[a.start + 1 - 6..a.start + 1 - 2];
                    assert!(text.contains(&record(key, value)), "{key} {value}");
                }
            }
        }
    }
}
