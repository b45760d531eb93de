//! Turns a scheduled step into the model's packed batch: token ids, positions, pool slots for
//! the new KV, each sequence's attention context, and which rows need logits.

use super::sequence::Sequence;
use crate::model::ForwardBatch;
use anyhow::{Context, Result};
use nanohost_kernels::{context_slot, SeqAttention};

#[derive(Default, Debug)]
pub struct PackedBatch {
    pub tokens: Vec<u32>,
    pub positions: Vec<u32>,
    pub slots: Vec<u32>,
    pub seqs: Vec<SeqAttention>,
    pub logit_rows: Vec<u32>,
}

impl PackedBatch {
    /// Tokens `computed..len` of each sequence; each sequence's last row gives its next token.
    pub fn pack<'a>(seqs: impl IntoIterator<Item = &'a Sequence>, block_size: usize) -> Result<Self> {
        let mut b = PackedBatch::default();
        for seq in seqs {
            let q_start = b.tokens.len();
            for i in seq.computed..seq.len() {
                b.tokens.push(seq.tokens[i]);
                b.positions.push(i as u32);
                b.slots.push(
                    context_slot(&seq.context, i, block_size)
                        .with_context(|| format!("sequence {}: its context has no slot for token {i}", seq.id))?,
                );
            }
            let q_len = b.tokens.len() - q_start;
            b.seqs.push(SeqAttention { q_start, q_len, context: seq.context.clone() });
            b.logit_rows.push((b.tokens.len() - 1) as u32);
        }
        Ok(b)
    }

    pub fn as_forward(&self) -> ForwardBatch<'_> {
        ForwardBatch {
            tokens: &self.tokens,
            positions: &self.positions,
            slots: &self.slots,
            seqs: &self.seqs,
            logit_rows: &self.logit_rows,
        }
    }
}
