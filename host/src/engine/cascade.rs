//! Cascade groups, formed each step from the contexts the strategies placed: sequences whose
//! strategy asked for cascade attention and whose contexts begin with the same pool blocks
//! attend those blocks in one pass for the whole group (`nanohost_kernels::SharedGroup`).
//!
//! Physical block identity is all it takes: the plan ledger guarantees that a block two live
//! sequences hold carries the same tokens at the same positions for both, so the strategy does
//! not have to describe its groups (and cannot describe them wrongly).

use candle_core::Device;
use nanohost_kernels::{SeqAttention, SharedGroup};
use std::collections::HashMap;

/// Below this many shared reads saved per step (query rows of a group times its shared entries)
/// a group is attended flat on the GPU: the shared pass is a second launch with a latency floor,
/// and on an H200 cascade only beat flat attention from about 32K (e.g. batch 16 at prefix 2048,
/// batch 64 at prefix 512; results/gpu-h200-2026-11-28-cascade). On the CPU every group is used:
/// there the group pass is only cheaper, and the tests exercise it on small models.
pub const GPU_MIN_SHARED_READS: usize = 32 * 1024;

/// The threshold for a device (see [`GPU_MIN_SHARED_READS`]).
pub fn min_shared_reads(device: &Device) -> usize {
    if device.is_cpu() {
        0
    } else {
        GPU_MIN_SHARED_READS
    }
}

/// Groups of two or more cascade sequences, each sharing as many leading full blocks as all its
/// members have in common with its first member and all of their query rows can see; groups
/// whose query rows times shared entries fall below `min_shared_reads` are left out.
pub fn shared_groups(
    seqs: &[SeqAttention],
    cascade: &[bool],
    block_size: usize,
    min_shared_reads: usize,
) -> Vec<SharedGroup> {
    // Leading blocks only of sequences in cascade mode: this runs every step, and for a
    // strategy that never asks for cascade there is nothing to compute.
    let leading: Vec<Vec<u32>> = seqs
        .iter()
        .zip(cascade)
        .map(|(s, &c)| {
            if c {
                leading_blocks(s, block_size)
            } else {
                Vec::new()
            }
        })
        .collect();
    // Candidates by first block, in order of first appearance.
    let mut candidates: Vec<Vec<usize>> = Vec::new();
    let mut by_first: HashMap<u32, usize> = HashMap::new();
    for (i, blocks) in leading.iter().enumerate() {
        let Some(&first) = blocks.first() else {
            continue;
        };
        let at = *by_first.entry(first).or_insert_with(|| {
            candidates.push(Vec::new());
            candidates.len() - 1
        });
        candidates[at].push(i);
    }
    candidates
        .into_iter()
        .filter(|members| members.len() > 1)
        .map(|members| {
            let lead = &leading[members[0]];
            let common = members
                .iter()
                .map(|&m| {
                    lead.iter()
                        .zip(&leading[m])
                        .take_while(|(a, b)| a == b)
                        .count()
                })
                .min()
                .unwrap_or(0);
            SharedGroup {
                seqs: members,
                len: common * block_size,
            }
        })
        .filter(|g| {
            g.len > 0
                && g.seqs.iter().map(|&s| seqs[s].q_len).sum::<usize>() * g.len >= min_shared_reads
        })
        .collect()
}

/// The full blocks a sequence's context starts with (through spans that end on a block
/// boundary), limited to what its first query row sees.
fn leading_blocks(seq: &SeqAttention, block_size: usize) -> Vec<u32> {
    let visible_blocks = (seq.kv_len() - seq.q_len + 1) / block_size;
    let mut out = Vec::new();
    for span in &seq.context {
        if span.first != 0 {
            break;
        }
        out.extend(span.blocks.iter().take(span.len / block_size));
        if span.len % block_size != 0 {
            break;
        }
    }
    out.truncate(visible_blocks);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use nanohost_kernels::KvSpan;

    fn seq(q_start: usize, q_len: usize, spans: &[(&[u32], usize)]) -> SeqAttention {
        SeqAttention {
            q_start,
            q_len,
            context: spans
                .iter()
                .map(|(b, len)| KvSpan {
                    first: 0,
                    blocks: b.to_vec(),
                    len: *len,
                    shift: 0,
                })
                .collect(),
        }
    }

    #[test]
    fn groups_follow_common_leading_blocks() {
        let bs = 4;
        let seqs = [
            seq(0, 1, &[(&[7, 8, 9], 12), (&[1], 2)]), // decode over 3 shared blocks
            seq(1, 1, &[(&[7, 8, 5], 12), (&[2], 3)]), // shares 2 of them
            seq(2, 3, &[(&[7, 8, 9], 12), (&[3], 3)]), // prefill after the shared blocks
            seq(5, 1, &[(&[4, 6], 7)]),                // alone: no group
            seq(6, 1, &[(&[7, 8, 9], 12), (&[10], 1)]), // not in cascade mode
        ];
        let groups = shared_groups(&seqs, &[true, true, true, true, false], bs, 0);
        assert_eq!(
            groups,
            vec![SharedGroup {
                seqs: vec![0, 1, 2],
                len: 8
            }]
        );
        // 5 query rows over 8 shared entries: 40 reads saved; a threshold above that drops it.
        assert_eq!(
            shared_groups(&seqs, &[true, true, true, true, false], bs, 40).len(),
            1
        );
        assert!(shared_groups(&seqs, &[true, true, true, true, false], bs, 41).is_empty());
    }

    #[test]
    fn rows_that_cannot_see_a_block_leave_it_out() {
        // The second sequence computes the shared blocks' last tokens itself: its first row sees
        // only 6 entries, so one full block is all the group can share.
        let seqs = [
            seq(0, 1, &[(&[7, 8], 8), (&[1], 1)]),
            seq(1, 3, &[(&[7, 8], 8), (&[2], 1)]),
        ];
        assert_eq!(
            shared_groups(&seqs, &[true, true], 4, 0),
            vec![SharedGroup {
                seqs: vec![0, 1],
                len: 4
            }]
        );
    }
}
