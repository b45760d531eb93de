//! Continuous batching: waiting and running queues, prefill first, then decode, preemption by
//! recompute when the pool is full.

use super::kv_policy::KvPolicy;
use super::sequence::Sequence;
use anyhow::{bail, Result};
use std::collections::VecDeque;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SchedulerConfig {
    pub max_num_seqs: usize,
    pub max_num_batched_tokens: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            max_num_seqs: 256,
            max_num_batched_tokens: 16_384,
        }
    }
}

/// One step's work: the scheduled running sequences (by index into `running`), whose
/// `pending` jobs go through the model. `prefill`: some sequence computes more than one token
/// (an admission, or a prompt prefilled in pieces).
#[derive(Debug, PartialEq)]
pub struct StepPlan {
    pub prefill: bool,
    pub seqs: Vec<usize>,
}

#[derive(Default)]
pub struct Scheduler {
    pub cfg: SchedulerConfig,
    pub waiting: VecDeque<Sequence>,
    pub running: Vec<Sequence>,
    pub finished: Vec<Sequence>,
    pub preemptions: usize,
}

impl Scheduler {
    pub fn new(cfg: SchedulerConfig) -> Self {
        Scheduler {
            cfg,
            ..Default::default()
        }
    }

    /// Chooses the next step, asking `policy` for room. Prefill of waiting sequences comes first
    /// (as many as fit the token budget); otherwise every running sequence decodes one token.
    pub fn schedule(&mut self, policy: &mut dyn KvPolicy) -> Result<Option<StepPlan>> {
        let first_new = self.running.len();
        let mut batched = 0;
        while let Some(seq) = self.waiting.front() {
            if self.running.len() >= self.cfg.max_num_seqs {
                break;
            }
            // The whole context bounds what admission can ask to compute; checking before
            // admitting means nothing is placed (and recorded as written) that does not run.
            if batched > 0 && batched + seq.len() > self.cfg.max_num_batched_tokens {
                break;
            }
            let Some(placement) = policy.admit(seq.id, &seq.tokens, &seq.chunks)? else {
                break;
            };
            let to_compute: usize = placement.step.jobs.iter().map(|j| j.tokens.len()).sum();
            let mut seq = self.waiting.pop_front().expect("front exists");
            seq.take_step(placement.step, false);
            seq.cascade = placement.cascade;
            seq.cached_at_admission = placement.cached_tokens;
            batched += to_compute;
            self.running.push(seq);
        }
        if batched > 0 {
            return Ok(Some(StepPlan {
                prefill: true,
                seqs: (first_new..self.running.len()).collect(),
            }));
        }
        self.schedule_decode(policy)
    }

    fn schedule_decode(&mut self, policy: &mut dyn KvPolicy) -> Result<Option<StepPlan>> {
        let mut i = 0;
        while i < self.running.len() {
            let seq = &self.running[i];
            match policy.grow(seq.id, &seq.tokens)? {
                Some(step) => {
                    self.running[i].take_step(step, true);
                    i += 1;
                }
                // No room: evict the most recently admitted sequence (possibly this one) and retry.
                None => {
                    let victim = self.running.len() - 1;
                    self.preempt(victim, policy)?;
                    if victim == i {
                        break;
                    }
                }
            }
        }
        if self.running.is_empty() {
            if let Some(seq) = self.waiting.front() {
                bail!(
                    "the KV pool cannot hold sequence {} ({} tokens) even alone; give the pool more blocks",
                    seq.id,
                    seq.len()
                );
            }
            return Ok(None);
        }
        let prefill = self
            .running
            .iter()
            .any(|s| s.pending.iter().any(|j| j.tokens.len() > 1));
        Ok(Some(StepPlan {
            prefill,
            seqs: (0..self.running.len()).collect(),
        }))
    }

    fn preempt(&mut self, idx: usize, policy: &mut dyn KvPolicy) -> Result<()> {
        let mut seq = self.running.remove(idx);
        policy.release(seq.id, seq.placed_tokens())?;
        seq.reset_for_recompute();
        self.preemptions += 1;
        tracing::debug!(seq = seq.id, "preempted: KV dropped, will be recomputed");
        self.waiting.push_front(seq);
        Ok(())
    }

    /// Moves finished sequences out of the running queue, releasing their KV.
    pub fn retire_finished(&mut self, policy: &mut dyn KvPolicy) -> Result<()> {
        let mut i = 0;
        while i < self.running.len() {
            if self.running[i].finish.is_some() {
                let seq = self.running.remove(i);
                policy.release(seq.id, seq.placed_tokens())?;
                self.finished.push(seq);
            } else {
                i += 1;
            }
        }
        Ok(())
    }
}
