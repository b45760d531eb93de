//! One decode step as a CUDA graph takes it, on the host: its batch-size bucket, its rows
//! padded to the bucket with rows that compute in the scratch slot, and its integer inputs laid
//! out for the graph's fixed buffer (see `graphs.rs`).

use super::qwen3::{ForwardBatch, HostStep, Qwen3};
use crate::engine::kv_pool::KvPool;
use anyhow::Result;
use nanohost_kernels::{KvSpan, SeqAttention};

/// The batch size a decode step of `n` sequences is padded to, `None` past `max_batch`.
pub fn bucket(n: usize, max_batch: usize) -> Option<usize> {
    if n == 0 || n > max_batch {
        return None;
    }
    let b = if n <= 16 {
        n.next_power_of_two()
    } else {
        n.div_ceil(16) * 16
    };
    Some(b.min(max_batch))
}

/// A decode step padded and laid out for a graph on the host ([`DecodeGraphs::stage`](super::graphs::DecodeGraphs::stage)), not yet
/// on the device.
pub struct StagedStep {
    /// Rows of the step, and of its bucket.
    pub(super) n: usize,
    pub(super) rows: usize,
    pub(super) step: HostStep,
    /// Host time the staging took.
    pub(super) prepare: std::time::Duration,
}

impl StagedStep {
    /// `batch` (a decode step) padded to `rows` and laid out with its metadata widened.
    pub(super) fn new(
        model: &Qwen3,
        batch: &ForwardBatch,
        rows: usize,
        pool: &KvPool,
    ) -> Result<Self> {
        let start = std::time::Instant::now();
        let padded = Padded::new(batch, rows, pool);
        let step = model.prepare(&padded.as_forward(), pool, true)?;
        Ok(StagedStep {
            n: batch.tokens.len(),
            rows,
            step,
            prepare: start.elapsed(),
        })
    }

    /// Sets the input token of row `row`, for a step staged before that token was sampled.
    pub fn set_token(&mut self, row: usize, token: u32) {
        assert!(
            row < self.n,
            "row {row} of a staged step of {} rows",
            self.n
        );
        self.step.set_token(row, token);
    }
}

/// A decode batch padded to `rows` with rows that write and read only the scratch slot (in no
/// cascade group; the batch's groups keep their sequences, which come first).
struct Padded {
    tokens: Vec<u32>,
    positions: Vec<u32>,
    slots: Vec<u32>,
    seqs: Vec<SeqAttention>,
    groups: Vec<nanohost_kernels::SharedGroup>,
    logit_rows: Vec<u32>,
}

impl Padded {
    fn new(batch: &ForwardBatch, rows: usize, pool: &KvPool) -> Self {
        let n = batch.tokens.len();
        let scratch = pool.scratch_slot();
        let pad = |v: &[u32], x: u32| {
            v.iter()
                .copied()
                .chain(std::iter::repeat_n(x, rows - n))
                .collect::<Vec<u32>>()
        };
        let block = scratch / pool.block_size() as u32;
        let mut seqs = batch.seqs.to_vec();
        seqs.extend((n..rows).map(|r| SeqAttention {
            q_start: r,
            q_len: 1,
            context: vec![KvSpan {
                first: 0,
                blocks: vec![block],
                len: 1,
                shift: 0,
            }],
        }));
        Padded {
            tokens: pad(batch.tokens, 0),
            positions: pad(batch.positions, 0),
            slots: pad(batch.slots, scratch),
            seqs,
            groups: batch.groups.to_vec(),
            logit_rows: (0..rows as u32).collect(),
        }
    }

    fn as_forward(&self) -> ForwardBatch<'_> {
        ForwardBatch {
            tokens: &self.tokens,
            positions: &self.positions,
            slots: &self.slots,
            seqs: &self.seqs,
            groups: &self.groups,
            logit_rows: &self.logit_rows,
            cross_row_reads: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bucket;

    #[test]
    fn buckets_are_powers_of_two_then_multiples_of_16_capped_at_the_largest_batch() {
        let got: Vec<_> = [1, 2, 3, 5, 9, 16, 17, 33, 250, 256]
            .iter()
            .map(|&n| bucket(n, 256))
            .collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 16, 32, 48, 256, 256].map(Some));
        assert_eq!(bucket(257, 256), None);
        assert_eq!(bucket(0, 256), None);
        assert_eq!(bucket(19, 20), Some(20));
    }
}
