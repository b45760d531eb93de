//! Cascade attention (shared entries attended once per group, merged by log-sum-exp) against the
//! unsplit paged attention over the same pool.

mod common;
use candle_core::{DType, Device};
use common::{max_diff, Case, Lcg};
use nanohost_kernels::{AttentionBatch, SharedGroup};

#[test]
fn cascade_equals_flat_for_group_sizes_prefixes_and_gqa() {
    let mut rng = Lcg(11);
    // (heads, kv_heads): GQA 2, 8 and none.
    for (i, &(heads, kv_heads)) in [(4, 2), (8, 1), (3, 3)].iter().enumerate() {
        for group_size in 1..=8 {
            for prefix in [1, 7, 16, 33, 128, 255, 256, 257, 300] {
                // Members decode (1 row) or prefill a few rows after the prefix; own parts of
                // 0..40 entries (0: the decode row's own key is the prefix's last entry).
                let members = (0..group_size)
                    .map(|_| {
                        let q_len = if rng.below(3) == 0 {
                            1 + rng.below(4)
                        } else {
                            1
                        };
                        (q_len + rng.below(40), q_len)
                    })
                    .map(|(own, q)| if own == 0 { (0, 1) } else { (own, q) })
                    .collect();
                let case = Case {
                    heads,
                    kv_heads,
                    head_dim: 16,
                    block_size: 16,
                    groups: vec![(prefix, members)],
                    alone: vec![(9, 2)],
                };
                let b = case.build(100 * i as u64 + prefix as u64, DType::F32);
                let d = max_diff(&b.attend(true), &b.attend(false));
                assert!(d < 2e-6, "heads {heads}/{kv_heads}, group of {group_size}, prefix {prefix}: cascade differs from flat by {d}");
            }
        }
    }
}

#[test]
fn several_groups_and_a_decode_row_whose_own_part_is_empty() {
    let case = Case {
        heads: 8,
        kv_heads: 2,
        head_dim: 32,
        block_size: 4,
        groups: vec![
            (300, vec![(0, 1), (5, 1), (12, 3)]),
            (17, vec![(1, 1), (2, 2)]),
            (64, vec![(4, 1)]),
        ],
        alone: vec![(40, 40), (3, 1)],
    };
    let b = case.build(5, DType::F32);
    let d = max_diff(&b.attend(true), &b.attend(false));
    assert!(d < 2e-6, "differs by {d}");
    let b = case.build(6, DType::BF16);
    let d = max_diff(&b.attend(true), &b.attend(false));
    assert!(d < 2e-2, "bf16 differs by {d}");
}

#[test]
fn groups_that_do_not_share_their_slots_or_cannot_see_them_are_refused() {
    let case = Case {
        heads: 2,
        kv_heads: 1,
        head_dim: 8,
        block_size: 4,
        groups: vec![(8, vec![(1, 1), (2, 1)])],
        alone: vec![(8, 1)],
    };
    let b = case.build(1, DType::F32);
    let flatten = |groups: &[SharedGroup]| {
        AttentionBatch::flatten(&b.seqs, groups, b.rows, 4, b.num_blocks)
            .err()
            .map(|e| e.to_string())
    };
    assert_eq!(flatten(&b.groups), None);
    let stranger = flatten(&[SharedGroup {
        seqs: vec![0, 2],
        len: 8,
    }])
    .unwrap();
    assert!(
        stranger
            .contains("sequence 2 does not hold its first 8 entries in the slots sequence 0 does"),
        "{stranger}"
    );
    let too_long = flatten(&[SharedGroup {
        seqs: vec![0, 1],
        len: 10,
    }])
    .unwrap();
    assert!(
        too_long.contains("sees 9 entries, fewer than the 10 shared"),
        "{too_long}"
    );
    let twice = flatten(&[
        SharedGroup {
            seqs: vec![0],
            len: 4,
        },
        SharedGroup {
            seqs: vec![0, 1],
            len: 4,
        },
    ])
    .unwrap();
    assert!(
        twice.contains("sequence 0 is in two shared groups"),
        "{twice}"
    );
    let missing = flatten(&[SharedGroup {
        seqs: vec![0, 9],
        len: 4,
    }])
    .unwrap();
    assert!(
        missing.contains("names sequence 9, but the batch has 3"),
        "{missing}"
    );
    let empty = flatten(&[SharedGroup {
        seqs: vec![],
        len: 4,
    }])
    .unwrap();
    assert!(empty.contains("shared group 0 is empty"), "{empty}");
    // Shared entries must be attended as stored: a shifted span cannot be part of the group.
    let mut shifted = b.seqs.clone();
    for seq in &mut shifted[..2] {
        seq.context[0].shift = 5;
    }
    let err = AttentionBatch::flatten(&shifted, &b.groups, b.rows, 4, b.num_blocks)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("shifted keys in the shared entries"), "{err}");
    let _ = Device::Cpu;
}
