//! Next-token choice: greedy at temperature 0, otherwise seeded sampling.
//!
//! Each draw depends only on (seed, sequence id, output index), so a sequence that is preempted
//! and recomputed, or batched differently, draws the same random numbers.

use super::sequence::SeqId;
use crate::rng::Rng;

pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] {
            best = i;
        }
    }
    best as u32
}

pub fn sample(logits: &[f32], temperature: f32, seed: u64, seq: SeqId, index: usize) -> u32 {
    if temperature <= 0.0 {
        return argmax(logits);
    }
    let inv_t = 1.0 / temperature as f64;
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let weights: Vec<f64> = logits.iter().map(|&x| ((x as f64 - max) * inv_t).exp()).collect();
    let total: f64 = weights.iter().sum();
    let mut u = Rng::derive(seed, &format!("sample/{seq}/{index}")).next_f64() * total;
    for (i, w) in weights.iter().enumerate() {
        if u < *w {
            return i as u32;
        }
        u -= w;
    }
    argmax(logits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_picks_the_largest() {
        assert_eq!(sample(&[0.1, 3.0, -1.0, 2.9], 0.0, 1, 1, 0), 1);
    }

    #[test]
    fn sampling_is_reproducible_and_follows_the_distribution() {
        let logits = [0.0f32, (3f32).ln(), f32::NEG_INFINITY];
        let draws: Vec<u32> = (0..4000).map(|i| sample(&logits, 1.0, 42, 7, i)).collect();
        let again: Vec<u32> = (0..4000).map(|i| sample(&logits, 1.0, 42, 7, i)).collect();
        assert_eq!(draws, again);
        assert!(!draws.contains(&2), "zero-probability token drawn");
        let ones = draws.iter().filter(|&&t| t == 1).count() as f64 / 4000.0;
        assert!((ones - 0.75).abs() < 0.03, "P(1) = {ones}, expected 0.75");
    }
}
