//! Turns a scheduled step into the model's packed batch: token ids, positions, pool slots for
//! the new KV, each job's attention context, the cascade groups, and which rows need logits.

use super::sequence::Sequence;
use crate::model::ForwardBatch;
use anyhow::{Context, Result};
use nanohost_kernels::{context_slot, SeqAttention, SharedGroup};

#[derive(Default, Debug)]
pub struct PackedBatch {
    pub tokens: Vec<u32>,
    pub positions: Vec<u32>,
    pub slots: Vec<u32>,
    pub seqs: Vec<SeqAttention>,
    pub groups: Vec<SharedGroup>,
    pub logit_rows: Vec<u32>,
    /// Slot copies to run before the forward pass.
    pub copies: Vec<nanohost_strategy_api::CopyJob>,
    /// No sequence needed logits (all prefill pieces): the last row was added to `logit_rows`
    /// so the model's output keeps its shape, and its sample is dropped.
    pub logits_padded: bool,
    /// Some sequence reads as cached a slot another one computes in this step.
    pub cross_row_reads: bool,
}

impl PackedBatch {
    /// Every pending job of each sequence; one logits row per sequence (the last row of its
    /// logits job); cascade groups of at least `min_shared_reads` (see `cascade`).
    pub fn pack<'a>(
        seqs: impl IntoIterator<Item = &'a Sequence>,
        block_size: usize,
        min_shared_reads: usize,
    ) -> Result<Self> {
        let mut b = PackedBatch::default();
        let mut cascade = Vec::new();
        for seq in seqs {
            b.copies.extend_from_slice(&seq.pending_copies);
            b.cross_row_reads |= seq.pending_cross_reads;
            for (j, job) in seq.pending.iter().enumerate() {
                let q_start = b.tokens.len();
                let kv_len: usize = job.context.iter().map(|s| s.len).sum();
                let first = kv_len.checked_sub(job.tokens.len()).with_context(|| {
                    format!(
                        "sequence {}: job {j} computes more tokens than its context holds",
                        seq.id
                    )
                })?;
                for (i, (&t, &p)) in job.tokens.iter().zip(&job.positions).enumerate() {
                    b.tokens.push(t);
                    b.positions.push(p);
                    b.slots.push(
                        context_slot(&job.context, first + i, block_size).with_context(|| {
                            format!(
                                "sequence {}: job {j} has no slot for entry {}",
                                seq.id,
                                first + i
                            )
                        })?,
                    );
                }
                b.seqs.push(SeqAttention {
                    q_start,
                    q_len: job.tokens.len(),
                    context: job.context.clone(),
                });
                cascade.push(seq.cascade);
                if Some(j) == seq.logits_job {
                    b.logit_rows.push((b.tokens.len() - 1) as u32);
                }
            }
        }
        if b.logit_rows.is_empty() && !b.tokens.is_empty() {
            b.logit_rows.push((b.tokens.len() - 1) as u32);
            b.logits_padded = true;
        }
        b.groups = super::cascade::shared_groups(&b.seqs, &cascade, block_size, min_shared_reads);
        Ok(b)
    }

    pub fn as_forward(&self) -> ForwardBatch<'_> {
        ForwardBatch {
            tokens: &self.tokens,
            positions: &self.positions,
            slots: &self.slots,
            seqs: &self.seqs,
            groups: &self.groups,
            logit_rows: &self.logit_rows,
            cross_row_reads: self.cross_row_reads,
        }
    }
}
