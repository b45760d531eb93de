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

/// `n` random ids in 0..=MAX_ID, as the prototype drew its prompts.
pub fn random_ids(rng: &mut Rng, n: usize) -> Vec<u32> {
    (0..n)
        .map(|_| rng.range_inclusive(0, MAX_ID) as u32)
        .collect()
}

/// Workloads of random ids need a vocabulary above MAX_ID.
pub fn check_vocab(vocab: usize, workload: &str) -> Result<()> {
    if (vocab as u64) <= MAX_ID {
        bail!(
            "workload {workload} draws ids up to {MAX_ID}; the model's vocabulary has only {vocab}"
        );
    }
    Ok(())
}

impl Workload for Standard {
    fn name(&self) -> &'static str {
        "standard"
    }

    fn points(
        &self,
        cfg: &BenchConfig,
        vocab_size: usize,
        _tokenizer: &Tokenizer,
    ) -> Result<Vec<Point>> {
        if cfg.max_input_len < MIN_LEN {
            bail!("workload standard needs max_input_len >= {MIN_LEN} (prompt lengths are {MIN_LEN}..=max_input_len), got {}", cfg.max_input_len);
        }
        check_vocab(vocab_size, "standard")?;
        Ok(cfg
            .batch_sizes
            .iter()
            .map(|&b| {
                let mut rng = Rng::derive(cfg.seed, &format!("standard/batch{b}"));
                let prompts = (0..b)
                    .map(|_| {
                        let len =
                            rng.range_inclusive(MIN_LEN as u64, cfg.max_input_len as u64) as usize;
                        Prompt::plain(random_ids(&mut rng, len))
                    })
                    .collect();
                Point {
                    workload: "standard".into(),
                    batch_size: b,
                    prompts,
                    extra: Default::default(),
                }
            })
            .collect())
    }
}
