//! Workloads that measure the host itself rather than a strategy: `throughput` (nano-vllm's
//! benchmark: 256 requests, prompt and output lengths uniform in 100..=1024, random ids, EOS
//! ignored; the figure is output tokens over the wall time of the whole run, prefill included) and
//! `latency` (batch 1, 4 and 64; 256-token prompts; 128 new tokens; decode ms per step), and
//! `long-context` (4096-token prompts).

use super::standard::{check_vocab, random_ids};
use super::{Point, Prompt, Workload};
use crate::bench::config::BenchConfig;
use crate::rng::Rng;
use anyhow::Result;
use serde_json::json;
use tokenizers::Tokenizer;

pub struct Throughput;

pub const THROUGHPUT_REQUESTS: usize = 256;
pub const THROUGHPUT_LENGTHS: (u64, u64) = (100, 1024);

impl Workload for Throughput {
    fn name(&self) -> &'static str {
        "throughput"
    }

    /// One point of 256 requests (the config's batch sizes do not apply; `max_num_seqs` bounds
    /// how many run at once).
    fn points(
        &self,
        cfg: &BenchConfig,
        vocab: usize,
        _tokenizer: &Tokenizer,
    ) -> Result<Vec<Point>> {
        check_vocab(vocab, "throughput")?;
        let mut rng = Rng::derive(cfg.seed, "throughput");
        let prompts = (0..THROUGHPUT_REQUESTS)
            .map(|_| {
                let (lo, hi) = THROUGHPUT_LENGTHS;
                let len = rng.range_inclusive(lo, hi) as usize;
                let out = rng.range_inclusive(lo, hi) as usize;
                Prompt {
                    max_tokens: Some(out),
                    ..Prompt::plain(random_ids(&mut rng, len))
                }
            })
            .collect();
        Ok(vec![Point {
            workload: "throughput".into(),
            batch_size: THROUGHPUT_REQUESTS,
            prompts,
            extra: Default::default(),
        }])
    }
}

/// `long-context`: for each batch size, prompts of `LONG_CONTEXT` random ids and the config's
/// output length: where an evicting strategy's memory bound and flat decode cost show.
pub struct LongContext;

pub const LONG_CONTEXT: usize = 4096;

impl Workload for LongContext {
    fn name(&self) -> &'static str {
        "long-context"
    }

    fn points(
        &self,
        cfg: &BenchConfig,
        vocab: usize,
        _tokenizer: &Tokenizer,
    ) -> Result<Vec<Point>> {
        check_vocab(vocab, "long-context")?;
        Ok(cfg
            .batch_sizes
            .iter()
            .map(|&b| {
                let mut rng = Rng::derive(cfg.seed, &format!("long-context/batch{b}"));
                let prompts = (0..b)
                    .map(|_| Prompt::plain(random_ids(&mut rng, LONG_CONTEXT)))
                    .collect();
                let extra = json!({"prompt_len": LONG_CONTEXT});
                Point {
                    workload: "long-context".into(),
                    batch_size: b,
                    prompts,
                    extra: extra.as_object().expect("object").clone(),
                }
            })
            .collect())
    }
}

pub struct Latency;

pub const LATENCY_BATCHES: [usize; 3] = [1, 4, 64];
pub const LATENCY_PROMPT: usize = 256;
pub const LATENCY_NEW_TOKENS: usize = 128;

impl Workload for Latency {
    fn name(&self) -> &'static str {
        "latency"
    }

    /// Batch 1, 4 and 64 whatever the config says: the sizes the targets are stated for.
    fn points(
        &self,
        cfg: &BenchConfig,
        vocab: usize,
        _tokenizer: &Tokenizer,
    ) -> Result<Vec<Point>> {
        check_vocab(vocab, "latency")?;
        Ok(LATENCY_BATCHES
            .iter()
            .map(|&b| {
                let mut rng = Rng::derive(cfg.seed, &format!("latency/batch{b}"));
                let prompts = (0..b)
                    .map(|_| Prompt {
                        max_tokens: Some(LATENCY_NEW_TOKENS),
                        ..Prompt::plain(random_ids(&mut rng, LATENCY_PROMPT))
                    })
                    .collect();
                let extra = json!({"prompt_len": LATENCY_PROMPT, "new_tokens": LATENCY_NEW_TOKENS});
                Point {
                    workload: "latency".into(),
                    batch_size: b,
                    prompts,
                    extra: extra.as_object().expect("object").clone(),
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_follow_the_definitions() {
        let cfg = BenchConfig::default();
        let tok = crate::model::tokenizer::byte_level_tokenizer().unwrap();
        let t = &Throughput.points(&cfg, 151_936, &tok).unwrap()[0];
        assert_eq!(t.prompts.len(), 256);
        assert!(t
            .prompts
            .iter()
            .all(|p| (100..=1024).contains(&p.tokens.len())
                && (100..=1024).contains(&p.max_tokens.unwrap())));
        let l = Latency.points(&cfg, 151_936, &tok).unwrap();
        assert_eq!(
            l.iter().map(|p| p.batch_size).collect::<Vec<_>>(),
            [1, 4, 64]
        );
        assert!(l
            .iter()
            .flat_map(|p| &p.prompts)
            .all(|p| p.tokens.len() == 256 && p.max_tokens == Some(128)));
        assert!(Latency
            .points(&cfg, 10_000, &tok)
            .unwrap_err()
            .to_string()
            .contains("vocabulary"));
    }
}
