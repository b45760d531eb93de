//! Workloads whose sequences begin with a common prefix. `shared-prefix` is the prototype's: for
//! each batch size, prefixes of 50, 100 and 200 random ids, each sequence the point's prefix plus
//! a random suffix of 50..=(max_input_len - P) ids. `long-prefix` is where sharing should pay:
//! a 2048-token prefix and suffixes of 64..=256. Strategies are not told about the prefix:
//! sharing must be discovered from tokens.

use super::{Point, Prompt, Workload};
use crate::bench::config::BenchConfig;
use crate::rng::Rng;
use anyhow::{bail, Result};
use serde_json::json;
use tokenizers::Tokenizer;

pub struct SharedPrefix {
    name: &'static str,
    prefix_lens: &'static [usize],
    min_suffix: usize,
    /// Longest suffix; `None`: up to `max_input_len` - prefix (the prototype's rule).
    max_suffix: Option<usize>,
}

pub const PREFIX_LENS: [usize; 3] = [50, 100, 200];
pub const MIN_SUFFIX: usize = 50;

impl SharedPrefix {
    pub fn prototype() -> Self {
        SharedPrefix {
            name: "shared-prefix",
            prefix_lens: &PREFIX_LENS,
            min_suffix: MIN_SUFFIX,
            max_suffix: None,
        }
    }

    pub fn long() -> Self {
        SharedPrefix {
            name: "long-prefix",
            prefix_lens: &[2048],
            min_suffix: 64,
            max_suffix: Some(256),
        }
    }
}

impl Workload for SharedPrefix {
    fn name(&self) -> &'static str {
        self.name
    }

    fn points(
        &self,
        cfg: &BenchConfig,
        vocab_size: usize,
        _tokenizer: &Tokenizer,
    ) -> Result<Vec<Point>> {
        let longest = self.prefix_lens[self.prefix_lens.len() - 1];
        if self.max_suffix.is_none() && cfg.max_input_len < longest + self.min_suffix {
            bail!(
                "workload {} needs max_input_len >= {} (prefix up to {longest} plus a suffix of at least {}), got {}",
                self.name,
                longest + self.min_suffix,
                self.min_suffix,
                cfg.max_input_len
            );
        }
        super::standard::check_vocab(vocab_size, self.name)?;
        let mut points = Vec::new();
        for &b in &cfg.batch_sizes {
            for &p in self.prefix_lens {
                let mut rng = Rng::derive(cfg.seed, &format!("{}/batch{b}/prefix{p}", self.name));
                let prefix: Vec<u32> = super::standard::random_ids(&mut rng, p);
                let max_suffix = self.max_suffix.unwrap_or_else(|| cfg.max_input_len - p);
                let prompts: Vec<Prompt> = (0..b)
                    .map(|_| {
                        let len =
                            rng.range_inclusive(self.min_suffix as u64, max_suffix as u64) as usize;
                        let mut tokens = prefix.clone();
                        tokens.extend(super::standard::random_ids(&mut rng, len));
                        Prompt::plain(tokens)
                    })
                    .collect();
                let total: usize = prompts.iter().map(|q| q.tokens.len()).sum();
                // The prototype's arithmetic, kept under an honest name: what storing the prefix
                // once would save. The measured ratio comes from comparing peak KV bytes.
                let unique = total - p * b + p;
                let mut extra = serde_json::Map::new();
                extra.insert("shared_prefix_len".into(), json!(p));
                extra.insert("unique_input_tokens".into(), json!(unique));
                extra.insert(
                    "memory_savings_ratio_analytic".into(),
                    json!(1.0 - unique as f64 / total as f64),
                );
                points.push(Point {
                    workload: self.name.into(),
                    batch_size: b,
                    prompts,
                    extra,
                });
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
        let points = SharedPrefix::prototype()
            .points(&cfg, 10_240, &tok)
            .unwrap();
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
            assert_eq!(
                pt.extra["unique_input_tokens"].as_u64().unwrap() as usize,
                total - p * (pt.batch_size - 1)
            );
        }
        let small = BenchConfig {
            max_input_len: 200,
            ..BenchConfig::default()
        };
        let e = SharedPrefix::prototype()
            .points(&small, 10_240, &tok)
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_input_len >= 250"), "{e}");
        // The long-prefix workload ignores max_input_len: 2048 + 64..=256 tokens.
        let long = SharedPrefix::long().points(&small, 10_240, &tok).unwrap();
        assert_eq!(long.len(), small.batch_sizes.len());
        assert!(long
            .iter()
            .flat_map(|p| &p.prompts)
            .all(|q| (2048 + 64..=2048 + 256).contains(&q.tokens.len())));
    }
}
