//! The prototype's standard workload: random token ids in 0..=10000, lengths uniform in
//! 100..=max_input_len, one point per batch size.

use super::{Point, Prompt, Workload};
use crate::bench::config::BenchConfig;
use crate::rng::Rng;
use anyhow::{bail, Result};
use tokenizers::Tokenizer;

pub struct Standard;

pub const MIN_LEN: usize = 100;
pub const MAX_ID: u64 = 10_000;

impl Workload for Standard {
    fn name(&self) -> &'static str {
        "standard"
    }

    fn points(&self, cfg: &BenchConfig, vocab_size: usize, _tokenizer: &Tokenizer) -> Result<Vec<Point>> {
        if cfg.max_input_len < MIN_LEN {
            bail!("workload standard needs max_input_len >= {MIN_LEN} (prompt lengths are {MIN_LEN}..=max_input_len), got {}", cfg.max_input_len);
        }
        if (vocab_size as u64) <= MAX_ID {
            bail!("workload standard draws ids up to {MAX_ID}; the model's vocabulary has only {vocab_size}");
        }
        Ok(cfg
            .batch_sizes
            .iter()
            .map(|&b| {
                let mut rng = Rng::derive(cfg.seed, &format!("standard/batch{b}"));
                let prompts = (0..b)
                    .map(|_| {
                        let len = rng.range_inclusive(MIN_LEN as u64, cfg.max_input_len as u64) as usize;
                        Prompt::plain((0..len).map(|_| rng.range_inclusive(0, MAX_ID) as u32).collect())
                    })
                    .collect();
                Point { workload: "standard".into(), batch_size: b, prompts, extra: Default::default() }
            })
            .collect())
    }
}
