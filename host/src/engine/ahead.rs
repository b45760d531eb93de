//! The next decode step, prepared while the device runs this one.
//!
//! A decode step's host work (scheduling with the plugin, packing, laying out the attention
//! metadata) took 70-200 us at batch 64 on H200 machines, time the GPU sat idle between steps.
//! Once every running sequence is sure to continue (no request waits, none can reach its
//! token limit or the context limit, none stops at an end-of-sequence token), the next step
//! depends on this one only through the sampled token ids. So the engine schedules, packs and
//! stages it after launching this step, with a placeholder for each sequence's new token, and
//! writes the sampled tokens in once they are on the host. Where anything else could change
//! the next step it is planned after sampling, as before. A request added between two steps
//! (`Engine::add_request`) while the second is already planned is admitted one step later, as
//! under vLLM's asynchronous scheduling; nothing in nanohost adds requests mid-run (waves wait
//! for the engine to drain).
//!
//! Where the next step also has this step's rows in this order and a graph ready for its
//! shape, it is queued on the device right behind this step's sampling, and the device copies
//! the sampled tokens into the next step's inputs itself (`launch_ahead`), and into page-locked
//! memory, where the host reads them meanwhile (`nanohost_kernels::StepStage`). The device then no longer idles while the host
//! reads the tokens, fills them in, uploads and launches (25-65 us a step on H200 machines at
//! batch 64 before this).

use super::scheduler::StepPlan;
use super::sequence::SeqId;
use super::{Engine, PlannedStep};
use anyhow::{bail, Result};
use candle_core::Tensor;
use std::collections::HashMap;

/// What a sequence's new token reads as until it is sampled: out of any vocabulary, so a step
/// launched with one fails loudly instead of computing on a wrong token.
pub const PLACEHOLDER: u32 = u32::MAX;

pub(super) struct Ahead {
    pub step: PlannedStep,
    /// The sequence in each row of the step.
    pub ids: Vec<SeqId>,
    /// The step's logits where it is already queued on the device ([`Engine::launch_ahead`]).
    pub launched: Option<Tensor>,
}

/// `NANOHOST_LAUNCH_AHEAD` (1 or 0; default 1, read once): whether a step planned ahead may be
/// queued behind the step before ([`Engine::launch_ahead`]); 0 is for A/B runs, and leaves
/// the tokens and logits as they are.
fn launch_ahead_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    nanohost_kernels::knob::switch(&ON, "NANOHOST_LAUNCH_AHEAD", true)
}

impl Engine<'_> {
    /// Whether the step after `plan` (just launched) can be planned before its tokens are known.
    pub(super) fn can_prepare_ahead(&self, plan: &StepPlan) -> bool {
        let max_pos = self.model.config().max_position_embeddings;
        let running = &self.scheduler.running;
        self.graphs
            .is_some_and(|g| g.mode() != crate::model::GraphMode::Off)
            && !plan.prefill
            && self.scheduler.waiting.is_empty()
            && running.iter().all(|s| s.logits_job.is_some())
            && plan.seqs.len() == running.len()
            && running.iter().all(|s| {
                s.params.ignore_eos
                    && s.output().len() + 1 < s.params.max_tokens
                    && s.len() + 1 < max_pos
            })
    }

    /// Schedules, packs and stages the next decode step, each running sequence's new token a
    /// [`PLACEHOLDER`] (see [`Engine::fill_ahead`]).
    pub(super) fn prepare_ahead(&mut self) -> Result<Ahead> {
        for seq in &mut self.scheduler.running {
            seq.tokens.push(PLACEHOLDER);
        }
        // Sequences are running, so there is a step: were all of them preempted, the scheduler
        // would fail (the pool cannot hold one alone) rather than plan none.
        let Some((step, _, _)) = self.plan_step()? else {
            bail!("internal: no step to prepare ahead with sequences running")
        };
        if step.plan.prefill {
            bail!("internal: a step prepared ahead admitted a request");
        }
        let running = &self.scheduler.running;
        let ids = step.plan.seqs.iter().map(|&i| running[i].id).collect();
        Ok(Ahead {
            step,
            ids,
            launched: None,
        })
    }

    /// Queues `ahead` on the device behind the step just sampled (`rows`, its tokens
    /// `sampled` still on the device), which then copies them into `ahead`'s inputs itself, and
    /// returns the sampled tokens once on the host: the device goes on to the next step without
    /// waiting for the host to read these, fill them in and launch it. That needs `ahead` to
    /// have the same sequences in the same rows (nothing preempted) and a graph ready for its
    /// shape; `None` (nothing queued, nothing read) otherwise.
    pub(super) fn launch_ahead(
        &mut self,
        ahead: &mut Ahead,
        rows: &[(SeqId, usize)],
        sampled: &Tensor,
    ) -> Result<Option<Vec<u32>>> {
        let (Some(graphs), Some(staged)) = (self.graphs, &ahead.step.staged) else {
            return Ok(None);
        };
        if !launch_ahead_on() {
            return Ok(None);
        }
        let same_rows = ahead.ids.iter().eq(rows.iter().map(|(id, _)| id));
        // Copies run before a step's forward pass, which a queued step would have skipped.
        if !same_rows || !ahead.step.batch.copies.is_empty() || !graphs.ready_for(staged) {
            return Ok(None);
        }
        ahead.launched = Some(graphs.run_staged(self.model, staged, self.pool, Some(sampled))?);
        Ok(Some(graphs.staged_tokens()?))
    }

    /// Writes the tokens `sampled` (by sequence) in the step before `ahead` wherever the
    /// placeholders went: the sequences (running, or waiting if scheduling `ahead` preempted
    /// them), their pending jobs, the packed and staged step, and the policy's record.
    pub(super) fn fill_ahead(
        &mut self,
        ahead: &mut Ahead,
        sampled: &HashMap<SeqId, u32>,
    ) -> Result<()> {
        let sched = &mut self.scheduler;
        let mut filled = 0;
        for seq in sched.running.iter_mut().chain(sched.waiting.iter_mut()) {
            let Some(&token) = sampled.get(&seq.id) else {
                continue;
            };
            match seq.tokens.last_mut() {
                Some(t) if *t == PLACEHOLDER => *t = token,
                _ => bail!(
                    "internal: sequence {} has no placeholder token to fill",
                    seq.id
                ),
            }
            filled += 1;
        }
        if filled != sampled.len() {
            bail!(
                "internal: {} sampled sequences left the engine while their next step was prepared",
                sampled.len() - filled
            );
        }
        for (row, &id) in ahead.ids.iter().enumerate() {
            let Some(&token) = sampled.get(&id) else {
                bail!("internal: sequence {id} is in the prepared step but was not sampled")
            };
            let step = &mut ahead.step;
            let seq = &mut sched.running[step.plan.seqs[row]];
            debug_assert_eq!(seq.id, id);
            seq.pending[0].tokens[0] = token;
            step.batch.tokens[row] = token;
            if let Some(staged) = &mut step.staged {
                staged.set_token(row, token);
            }
            self.policy.set_last_token(id, token)?;
        }
        Ok(())
    }
}
