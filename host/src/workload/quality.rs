//! The quality workloads: what a strategy costs in answers, not in time.
//!
//! - `retrieval`: a haystack of key-value records with the needle record at a depth, then its
//!   query; one point per context length, each request a (depth, sample) cell. Exact match of
//!   the greedy answer.
//! - `perplexity`: the held-out tenth of the book, teacher-forced through the strategy's own KV:
//!   a short prompt, then every later token fed as the output one decode step at a time, so
//!   eviction during growth shows in the loss.
//!
//! Prompts are text built through the model's tokenizer, so they work on the embedded model and
//! on a real Qwen3 checkpoint alike; the same for every plugin.

use super::needles::{distinct_keys, heldout_text, query, random_value, record};
use super::{Check, Point, Prompt, Workload};
use crate::bench::config::BenchConfig;
use crate::rng::Rng;
use anyhow::{bail, Result};
use serde_json::json;
use tokenizers::Tokenizer;

pub struct Retrieval;
pub struct Perplexity;

fn encode(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    crate::model::tokenizer::encode(tokenizer, text, "a quality prompt")
}

/// One retrieval prompt of at most `len` tokens: records with the needle at `depth_percent`,
/// then the needle's query. Returns the tokens and the needle's value.
pub fn retrieval_prompt(
    tokenizer: &Tokenizer,
    rng: &mut Rng,
    len: usize,
    depth_percent: u32,
) -> Result<(Vec<u32>, String)> {
    let per_record = encode(tokenizer, &record("abcd", "0123"))?.len().max(1);
    let mut n = (len / per_record).max(2);
    let keys = distinct_keys(rng, n + 1);
    let values: Vec<String> = (0..=n).map(|_| random_value(rng)).collect();
    loop {
        let needle = ((depth_percent as f64 / 100.0) * (n - 1) as f64).round() as usize;
        // Key n is the needle's: its record goes at `needle` among the n - 1 others.
        let mut text = String::new();
        let mut others = (0..n - 1).map(|i| record(&keys[i], &values[i]));
        for i in 0..n {
            match i == needle {
                true => text.push_str(&record(&keys[n], &values[n])),
                false => text.push_str(&others.next().expect("n - 1 others")),
            }
        }
        text.push_str(&query(&keys[n]));
        let tokens = encode(tokenizer, &text)?;
        if tokens.len() <= len || n <= 2 {
            return Ok((tokens, values[n].clone()));
        }
        n -= (tokens.len() - len).div_ceil(per_record).max(1).min(n - 2);
    }
}

impl Workload for Retrieval {
    fn name(&self) -> &'static str {
        "retrieval"
    }

    fn points(
        &self,
        cfg: &BenchConfig,
        _vocab: usize,
        tokenizer: &Tokenizer,
    ) -> Result<Vec<Point>> {
        let q = &cfg.quality;
        if q.retrieval_depths.iter().any(|&d| d > 100) {
            bail!(
                "retrieval_depths are percentages, 0 to 100; got {:?}",
                q.retrieval_depths
            );
        }
        let mut points = Vec::new();
        for &len in &q.retrieval_lengths {
            if len < 32 {
                bail!("retrieval_lengths: {len} tokens cannot hold a haystack; give at least 32");
            }
            let mut rng = Rng::derive(cfg.seed, &format!("retrieval/{len}"));
            let mut prompts = Vec::new();
            for &depth in &q.retrieval_depths {
                for _ in 0..q.retrieval_samples {
                    let (tokens, answer) = retrieval_prompt(tokenizer, &mut rng, len, depth)?;
                    let max_tokens = encode(tokenizer, &answer)?.len() + 1;
                    let check = Check::Answer {
                        answer,
                        context_tokens: len,
                        depth_percent: depth,
                    };
                    prompts.push(Prompt {
                        max_tokens: Some(max_tokens),
                        check: Some(check),
                        ..Prompt::plain(tokens)
                    });
                }
            }
            let mut extra = serde_json::Map::new();
            extra.insert("context_tokens".into(), json!(len));
            points.push(Point {
                workload: "retrieval".into(),
                batch_size: prompts.len(),
                prompts,
                extra,
            });
        }
        Ok(points)
    }
}

/// Tokens of the prompt before the forced text of each perplexity document.
pub const PERPLEXITY_PROMPT_TOKENS: usize = 16;

impl Workload for Perplexity {
    fn name(&self) -> &'static str {
        "perplexity"
    }

    fn points(
        &self,
        cfg: &BenchConfig,
        _vocab: usize,
        tokenizer: &Tokenizer,
    ) -> Result<Vec<Point>> {
        let q = &cfg.quality;
        let per_doc = q.perplexity_tokens + PERPLEXITY_PROMPT_TOKENS;
        let tokens = encode(tokenizer, heldout_text())?;
        if q.perplexity_docs == 0 || q.perplexity_tokens == 0 {
            bail!("perplexity_docs and perplexity_tokens must be at least 1");
        }
        if tokens.len() < per_doc * q.perplexity_docs {
            bail!(
                "the held-out text is {} tokens with this tokenizer; perplexity_docs x (perplexity_tokens + {PERPLEXITY_PROMPT_TOKENS}) = {} do not fit",
                tokens.len(),
                per_doc * q.perplexity_docs
            );
        }
        // Documents evenly spaced over the held-out text.
        let stride = tokens.len() / q.perplexity_docs;
        let prompts: Vec<Prompt> = (0..q.perplexity_docs)
            .map(|d| {
                let doc = &tokens[d * stride..d * stride + per_doc];
                let (prompt, forced) = doc.split_at(PERPLEXITY_PROMPT_TOKENS);
                Prompt {
                    max_tokens: Some(forced.len()),
                    check: Some(Check::Forced(forced.to_vec())),
                    ..Prompt::plain(prompt.to_vec())
                }
            })
            .collect();
        let mut extra = serde_json::Map::new();
        extra.insert("context_tokens".into(), json!(per_doc));
        Ok(vec![Point {
            workload: "perplexity".into(),
            batch_size: prompts.len(),
            prompts,
            extra,
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tokenizer::byte_level_tokenizer;

    #[test]
    fn retrieval_prompts_fit_their_length_and_hold_the_needle_at_its_depth() {
        let tok = byte_level_tokenizer().unwrap();
        let mut rng = Rng::new(5);
        for (len, depth) in [(512, 0), (512, 50), (1024, 100), (100, 30)] {
            let (tokens, answer) = retrieval_prompt(&tok, &mut rng, len, depth).unwrap();
            assert!(
                tokens.len() <= len && tokens.len() + 12 > len,
                "{len}: {}",
                tokens.len()
            );
            let text = tok.decode(&tokens, false).unwrap();
            let key = text.rsplit("? ").next().unwrap();
            let at = text.find(&record(key, &answer)).expect("the needle record");
            let depth_seen = 100.0 * at as f64
                / (text.len() - query(key).len() - record(key, &answer).len()) as f64;
            // Within one record's share of the haystack.
            let records = text.matches('\n').count() as f64;
            assert!(
                (depth_seen - depth as f64).abs() <= 100.0 / (records - 1.0) + 0.5,
                "{len} {depth}: {depth_seen}"
            );
            assert_eq!(text.matches(key).count(), 2, "the key is unique");
        }
    }
}
