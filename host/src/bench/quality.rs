//! Scoring the quality workloads' requests: retrieval exact match per (length, depth) cell, and
//! teacher-forced perplexity.

use crate::engine::sequence::Sequence;
use crate::workload::{Check, Prompt};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetrievalCell {
    pub context_tokens: usize,
    pub depth_percent: u32,
    pub correct: usize,
    pub total: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Quality {
    Retrieval {
        accuracy: f64,
        correct: usize,
        total: usize,
        cells: Vec<RetrievalCell>,
    },
    /// `mean_nll` in nats per token over every forced token.
    Perplexity {
        tokens: usize,
        mean_nll: f64,
        perplexity: f64,
    },
}

/// The point's score, `None` when its prompts carry no checks. `seqs` are the finished
/// sequences in the order `run_waves` returns them (waves in order, prompt order within each).
pub fn score(
    prompts: &[Prompt],
    seqs: &[Sequence],
    tokenizer: &Tokenizer,
) -> Result<Option<Quality>> {
    if prompts.iter().all(|p| p.check.is_none()) {
        return Ok(None);
    }
    if prompts.len() != seqs.len() {
        bail!(
            "internal: {} prompts but {} finished sequences",
            prompts.len(),
            seqs.len()
        );
    }
    let mut order: Vec<usize> = (0..prompts.len()).collect();
    order.sort_by_key(|&i| prompts[i].wave);
    let (mut cells, mut nll, mut forced_tokens) = (Vec::<RetrievalCell>::new(), 0f64, 0usize);
    for (&i, seq) in order.iter().zip(seqs) {
        match &prompts[i].check {
            Some(Check::Answer {
                answer,
                context_tokens,
                depth_percent,
            }) => {
                let text = tokenizer
                    .decode(seq.output(), false)
                    .map_err(|e| anyhow::anyhow!("decoding an answer: {e}"))?;
                let right = text.trim_start().starts_with(answer.as_str());
                match cells.iter_mut().find(|c| {
                    c.context_tokens == *context_tokens && c.depth_percent == *depth_percent
                }) {
                    Some(c) => {
                        c.correct += right as usize;
                        c.total += 1;
                    }
                    None => cells.push(RetrievalCell {
                        context_tokens: *context_tokens,
                        depth_percent: *depth_percent,
                        correct: right as usize,
                        total: 1,
                    }),
                }
            }
            Some(Check::Forced(forced)) => {
                if seq.forced_logprobs.len() != forced.len() {
                    bail!(
                        "internal: {} of {} forced tokens were scored",
                        seq.forced_logprobs.len(),
                        forced.len()
                    );
                }
                nll -= seq.forced_logprobs.iter().map(|&l| l as f64).sum::<f64>();
                forced_tokens += forced.len();
            }
            None => {}
        }
    }
    if forced_tokens > 0 {
        let mean_nll = nll / forced_tokens as f64;
        return Ok(Some(Quality::Perplexity {
            tokens: forced_tokens,
            mean_nll,
            perplexity: mean_nll.exp(),
        }));
    }
    let (correct, total) = cells
        .iter()
        .fold((0, 0), |(c, t), x| (c + x.correct, t + x.total));
    Ok(Some(Quality::Retrieval {
        accuracy: correct as f64 / total.max(1) as f64,
        correct,
        total,
        cells,
    }))
}
