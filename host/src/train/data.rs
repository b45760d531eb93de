//! Training documents for the embedded model: byte tokens with a loss weight per target.
//!
//! A mix that forces the model to read its context: key-value lookup (many records, then
//! queries), a pass key hidden in text, copying a random span, and plain text. The answer tokens
//! carry the weight; the random parts (keys, values, filler letters) carry little, since nothing
//! can predict them.

use crate::rng::Rng;
use crate::workload::needles::{
    excerpt, passkey_sentence, query, random_value, record, train_text, KEY_LEN, PASSKEY_QUESTION,
};

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

/// The shipped mix, in twentieths (key-value, pass key, copy, text): lookup dominates, since it
/// is what the model must reach 99% on.
pub const MIX: [usize; 4] = [10, 2, 5, 3];

impl Kind {
    /// A kind drawn with weights `mix` (key-value, pass key, copy, text).
    pub fn draw(rng: &mut Rng, mix: &[usize; 4]) -> Kind {
        let mut r = rng.index(mix.iter().sum::<usize>().max(1));
        for (kind, &w) in [Kind::KeyValue, Kind::Passkey, Kind::Copy, Kind::Text]
            .into_iter()
            .zip(mix)
        {
            if r < w {
                return kind;
            }
            r -= w;
        }
        Kind::Text
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
        Builder {
            tokens: Vec::with_capacity(len + 1),
            weights: Vec::with_capacity(len + 1),
            answers: Vec::new(),
            cap: len + 1,
        }
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
        Doc {
            kind,
            tokens: self.tokens,
            weights: self.weights,
            answers: self.answers,
        }
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

/// Records filling 60-85% of the document, then queries for records until full.
fn key_value(b: &mut Builder, rng: &mut Rng) {
    let record_len = record("abcd", "0123").len();
    let share = 0.6 + 0.25 * rng.next_f64();
    let n = ((b.cap as f64 * share) as usize / record_len).max(1);
    let keys = confusable_keys(rng, n);
    let values: Vec<String> = (0..n).map(|_| random_value(rng)).collect();
    for (k, v) in keys.iter().zip(&values) {
        b.push(&record(k, v), NOISE);
    }
    let mut first = true;
    while b.room() > 0 {
        // Half the first queries ask the record just before them: the retrieval workload's
        // needle at depth 100%, which uniform draws would show once in n documents.
        let i = match first && rng.index(2) == 0 {
            true => n - 1,
            false => rng.index(n),
        };
        first = false;
        b.push(&query(&keys[i]), NOISE);
        b.answer(&values[i]);
        b.push("\n", NOISE);
    }
}

/// `n` distinct keys over a random alphabet of 3 to 26 letters: with few letters many keys share
/// their last letters, so even a short document needs the whole key matched, as the retrieval
/// workload's long haystacks do.
fn confusable_keys(rng: &mut Rng, n: usize) -> Vec<String> {
    let mut letters: Vec<u8> = (b'a'..=b'z').collect();
    for i in (1..letters.len()).rev() {
        letters.swap(i, rng.index(i + 1));
    }
    let min = (1..=26)
        .find(|m: &usize| m.pow(KEY_LEN as u32) >= 2 * n)
        .unwrap_or(26)
        .max(3);
    let m = min + rng.index(27 - min);
    let mut seen = std::collections::HashSet::new();
    let mut keys = Vec::with_capacity(n);
    while keys.len() < n {
        let k: String = (0..KEY_LEN)
            .map(|_| letters[rng.index(m)] as char)
            .collect();
        if seen.insert(k.clone()) {
            keys.push(k);
        }
    }
    keys
}

/// Book text with the pass-key sentence at a random depth, the question at the end.
fn passkey(b: &mut Builder, rng: &mut Rng) {
    let value = format!("{}{}", random_value(rng), rng.index(10));
    let sentence = passkey_sentence(&value);
    let tail = PASSKEY_QUESTION.len() + value.len() + 2;
    let filler_len = b.cap.saturating_sub(sentence.len() + tail);
    let filler = excerpt(rng, train_text(), filler_len);
    let depth = rng.index(filler.len().max(1));
    let depth = (0..=depth)
        .rev()
        .find(|&i| filler.is_char_boundary(i))
        .unwrap_or(0);
    b.push(&filler[..depth], 1.0);
    b.push(&sentence, NOISE);
    b.push(&filler[depth..], 1.0);
    b.push(PASSKEY_QUESTION, 1.0);
    b.answer(&value);
    while b.room() > 0 {
        b.push(".\n", 1.0);
    }
}

/// Random spans of printable ASCII, each followed by `"\n>> "` and itself, until full. 94
/// symbols and spans of 8 to 48: most characters occur once in a span, so the token before
/// each one finds it.
fn copy(b: &mut Builder, rng: &mut Rng) {
    while b.room() > 0 {
        let n = 8 + rng.index(41);
        let span: String = (0..n)
            .map(|_| (b'!' + rng.index(94) as u8) as char)
            .collect();
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
                assert_eq!(
                    (d.tokens.len(), d.weights.len()),
                    (len + 1, len),
                    "{kind:?}"
                );
                for a in &d.answers {
                    assert!(
                        a.end <= len && d.weights[a.clone()].iter().all(|&w| w == 1.0),
                        "{kind:?} {a:?}"
                    );
                }
                if kind == Kind::KeyValue {
                    assert!(!d.answers.is_empty());
                    // The answer is the value of the record with the queried key.
                    let text =
                        String::from_utf8(d.tokens.iter().map(|&t| t as u8).collect()).unwrap();
                    let a = &d.answers[0];
                    let value = &text[a.start + 1..a.end + 1];
                    let key = &text[a.start + 1 - 4..a.start + 1];
                    assert!(text.contains(&record(key, value)), "{key} {value}");
                }
            }
        }
    }
}
