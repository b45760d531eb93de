//! The prototype's shared-prefix workload: for each batch size, prefixes of 50, 100 and 200
//! random ids; every sequence is the point's prefix plus a random suffix of 50..=(max_input_len
//! - P) ids. Strategies are not told about the prefix: sharing must be discovered from tokens.

use super::{Point, Prompt, Workload};
use crate::bench::config::BenchConfig;
use crate::rng::Rng;
use anyhow::{bail, Result};
use serde_json::json;
use tokenizers::Tokenizer;

pub struct SharedPrefix;

pub const PREFIX_LENS: [usize; 3] = [50, 100, 200];
pub const MIN_SUFFIX: usize = 50;
const MAX_ID: u64 = super::standard::MAX_ID;

impl Workload for SharedPrefix {
    fn name(&self) -> &'static str {
        "shared-prefix"
    }

    fn points(&self, cfg: &BenchConfig, vocab_size: usize, _tokenizer: &Tokenizer) -> Result<Vec<Point>> {
        let longest = PREFIX_LENS[PREFIX_LENS.len() - 1];
        if cfg.max_input_len < longest + MIN_SUFFIX {
            bail!(
                "workload shared-prefix needs max_input_len >= {} (prefix up to {longest} plus a suffix of at least {MIN_SUFFIX}), got {}",
                longest + MIN_SUFFIX,
                cfg.max_input_len
            );
        }
        if (vocab_size as u64) <= MAX_ID {
            bail!("workload shared-prefix draws ids up to {MAX_ID}; the model's vocabulary has only {vocab_size}");
        }
        let mut points = Vec::new();
        for &b in &cfg.batch_sizes {
            for p in PREFIX_LENS {
                let mut rng = Rng::derive(cfg.seed, &format!("shared-prefix/batch{b}/prefix{p}"));
                let prefix: Vec<u32> = (0..p).map(|_| rng.range_inclusive(0, MAX_ID) as u32).collect();
                let prompts: Vec<Prompt> = (0..b)
                    .map(|_| {
                        let len = rng.range_inclusive(MIN_SUFFIX as u64, (cfg.max_input_len - p) as u64) as usize;
                        let mut tokens = prefix.clone();
                        tokens.extend((0..len).map(|_| rng.range_inclusive(0, MAX_ID) as u32));
                        Prompt { tokens }
                    })
                    .collect();
                let total: usize = prompts.iter().map(|q| q.tokens.len()).sum();
                // The prototype's arithmetic, kept under an honest name: what storing the prefix
                // once would save. The measured ratio comes from comparing peak KV bytes.
                let unique = total - p * b + p;
                let mut extra = serde_json::Map::new();
                extra.insert("shared_prefix_len".into(), json!(p));
                extra.insert("unique_input_tokens".into(), json!(unique));
                extra.insert("memory_savings_ratio_analytic".into(), json!(1.0 - unique as f64 / total as f64));
                points.push(Point { workload: "shared-prefix".into(), batch_size: b, prompts, extra });
            }
        }
        Ok(points)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nine_points_whose_sequences_share_exactly_the_prefix() {
        let cfg = BenchConfig::default();
        let tok = crate::model::tokenizer::byte_level_tokenizer().unwrap();
        let points = SharedPrefix.points(&cfg, 10_240, &tok).unwrap();
        assert_eq!(points.len(), 9);
        for pt in &points {
            let p = pt.extra["shared_prefix_len"].as_u64().unwrap() as usize;
            assert_eq!(pt.prompts.len(), pt.batch_size);
            let first = &pt.prompts[0].tokens;
            for q in &pt.prompts {
                assert_eq!(&q.tokens[..p], &first[..p]);
                assert!((p + MIN_SUFFIX..=cfg.max_input_len).contains(&q.tokens.len()));
            }
            let total: usize = pt.prompts.iter().map(|q| q.tokens.len()).sum();
            assert_eq!(pt.extra["unique_input_tokens"].as_u64().unwrap() as usize, total - p * (pt.batch_size - 1));
        }
        let small = BenchConfig { max_input_len: 200, ..BenchConfig::default() };
        let e = SharedPrefix.points(&small, 10_240, &tok).unwrap_err().to_string();
        assert!(e.contains("max_input_len >= 250"), "{e}");
    }
}
