use super::*;
use crate::engine::kv_policy::{Placement, SeqStep};
use nanohost_strategy_api::{AttentionMode, ComputeJob, CopyJob, LayerRange};
use nanohost_strategy_api::{Context, Growth};

fn span(blocks: &[u32], start: u32, len: u32) -> Span {
    Span::private(blocks.to_vec(), start, len)
}

fn admit(l: &mut Ledger, seq: SeqId, tokens: &[u32], spans: Vec<Span>) -> Placement {
    let n = spans.len() as u32;
    let len: u32 = spans.iter().map(|s| s.len).sum();
    let jobs = [ComputeJob {
        context: (0..n).collect::<Vec<_>>().into(),
        len,
    }];
    let checked = l
        .check_admission(seq, tokens, spans, &jobs, Vec::new(), AttentionMode::Flat)
        .unwrap();
    l.apply(checked)
}

fn grow(l: &mut Ledger, seq: SeqId, tokens: &[u32], g: Growth) -> Result<SeqStep, String> {
    let checked = match g {
        Growth::Grown(s) => l.check_grown(seq, tokens, s),
        Growth::Replaced(c) => l.check_replaced(seq, tokens, c.spans.into(), c.copies.into()),
        Growth::NoRoom => unreachable!(),
    }?;
    Ok(l.apply(checked))
}

#[test]
fn grown_blocks_are_checked_against_every_holder() {
    let mut l = Ledger::new(8, 2);
    admit(&mut l, 1, &[5, 6], vec![span(&[0], 0, 2)]);
    admit(&mut l, 2, &[7, 8], vec![span(&[1], 0, 2)]);
    let err = grow(&mut l, 2, &[7, 8, 9], Growth::Grown(span(&[1, 0], 0, 3))).unwrap_err();
    assert!(
        err.contains("block 0 is handed to sequence 2 while live sequence 1 holds it privately"),
        "{err}"
    );
    let err = grow(&mut l, 2, &[7, 8, 9], Growth::Grown(span(&[1, 1], 0, 3))).unwrap_err();
    assert!(
        err.contains("block 1 appears twice in the context of sequence 2"),
        "{err}"
    );
    let g = grow(&mut l, 2, &[7, 8, 9], Growth::Grown(span(&[1, 2], 0, 3))).unwrap();
    assert_eq!(
        (
            g.context[0].blocks.clone(),
            g.placed,
            g.jobs[0].tokens.clone(),
            g.jobs[0].positions.clone()
        ),
        (vec![1, 2], 3, vec![9], vec![2])
    );
    // Now held: another sequence cannot be given it.
    let err = grow(&mut l, 1, &[5, 6, 4], Growth::Grown(span(&[0, 2], 0, 3))).unwrap_err();
    assert!(
        err.contains("block 2 is handed to sequence 1 while live sequence 2 holds it"),
        "{err}"
    );
}

/// A sliding window that keeps 2 sinks and drops the oldest window token: the kept entries are
/// verified slot by slot, the new position is computed at the end, and a freed block counts.
#[test]
fn replaced_contexts_drop_tokens_but_keep_positions() {
    let mut l = Ledger::new(8, 4);
    let tokens: Vec<u32> = (100..110).collect();
    // Sinks 0..2 in block 0; window 2..8 from slot 2 of block 0 into blocks 1.
    let p = admit(
        &mut l,
        1,
        &tokens[..8],
        vec![span(&[0], 0, 2), span(&[0, 1], 2, 6).from_slot(2)],
    );
    assert_eq!(p.step.placed, 8);
    // Position 8 goes into block 2; positions 2..4 (the rest of block 0) drop out.
    let g = grow(
        &mut l,
        1,
        &tokens[..9],
        Growth::Replaced(Context {
            spans: vec![span(&[0], 0, 2), span(&[1, 2], 4, 5)].into(),
            copies: Default::default(),
        }),
    )
    .unwrap();
    assert_eq!(
        (
            g.placed,
            g.jobs[0].tokens.clone(),
            g.jobs[0].positions.clone()
        ),
        (9, vec![108], vec![8])
    );
    assert_eq!((l.tokens_evicted, l.blocks_evicted), (2, 0));
    // Dropping the sinks frees block 0.
    grow(
        &mut l,
        1,
        &tokens[..10],
        Growth::Replaced(Context {
            spans: vec![span(&[1, 2], 4, 6)].into(),
            copies: Default::default(),
        }),
    )
    .unwrap();
    assert_eq!(
        (l.tokens_evicted, l.blocks_evicted, l.live_blocks()),
        (4, 1, 2)
    );
    // A kept entry must hold its token at its position: slot 4 (block 1) holds position 4.
    let err = grow(
        &mut l,
        1,
        &[tokens.clone(), vec![7]].concat(),
        Growth::Replaced(Context {
            spans: vec![span(&[1, 2], 5, 6)].into(),
            copies: Default::default(),
        }),
    )
    .unwrap_err();
    assert!(err.contains("claimed cached, but its slot 4 holds token 104 at position 4 where the sequence needs token 105 at position 5"), "{err}");
    // Every new position must be placed, as the last entries.
    let err = grow(
        &mut l,
        1,
        &[tokens.clone(), vec![7, 8]].concat(),
        Growth::Replaced(Context {
            spans: vec![span(&[1, 2], 4, 6), span(&[3], 11, 1)].into(),
            copies: Default::default(),
        }),
    )
    .unwrap_err();
    assert!(err.contains("must place every position from 10"), "{err}");
    let err = grow(
        &mut l,
        1,
        &[tokens.clone(), vec![7]].concat(),
        Growth::Replaced(Context {
            spans: vec![span(&[2], 8, 2), span(&[1], 4, 1)].into(),
            copies: Default::default(),
        }),
    )
    .unwrap_err();
    assert!(err.contains("increasing position order"), "{err}");
}

/// A window that wraps around its blocks holds one block in two spans; a slot may not be an
/// entry twice.
#[test]
fn a_block_may_hold_two_spans_of_one_context_but_a_slot_one_entry() {
    let mut l = Ledger::new(4, 4);
    let tokens: Vec<u32> = (0..9).collect();
    admit(&mut l, 1, &tokens[..8], vec![span(&[0, 1], 0, 8)]);
    // Position 8 overwrites slot 0 (position 0 dropped): spans [1..4) of block 0, block 1, then slot 0.
    let wrapped = vec![span(&[0, 1], 1, 7).from_slot(1), span(&[0], 8, 1)];
    let g = grow(
        &mut l,
        1,
        &tokens,
        Growth::Replaced(Context {
            spans: wrapped.into(),
            copies: Default::default(),
        }),
    )
    .unwrap();
    assert_eq!(g.jobs[0].positions, vec![8]);
    assert_eq!(l.tokens_evicted, 1);
    // Position 9 into slot 1, which keeps position 1.
    let twice = vec![
        span(&[0, 1], 1, 7).from_slot(1),
        span(&[0], 8, 1),
        span(&[0], 9, 1).from_slot(1),
    ];
    let err = grow(
        &mut l,
        1,
        &[tokens.clone(), vec![9]].concat(),
        Growth::Replaced(Context {
            spans: twice.into(),
            copies: Default::default(),
        }),
    )
    .unwrap_err();
    assert!(err.contains("slot 1 appears twice in the context of sequence 1: it holds position 1, kept, and receives position 9"), "{err}");
}

/// Copies move content the ledger knows; a copied entry then counts as cached. Copying into a
/// block another sequence reads, or from an empty slot, is refused.
#[test]
fn copies_are_checked_and_recorded() {
    let mut l = Ledger::new(8, 4);
    let tokens: Vec<u32> = (50..56).collect();
    admit(&mut l, 1, &tokens, vec![span(&[0, 1], 0, 6)]);
    let early = l.check_admission(
        2,
        &[50, 51],
        vec![span(&[3], 0, 2)],
        &[ComputeJob {
            context: vec![0].into(),
            len: 1,
        }],
        vec![CopyJob {
            src: 0,
            dst: 12,
            len: 1,
        }],
        AttentionMode::Flat,
    );
    assert!(early
        .err()
        .unwrap()
        .contains("copy 0 reads slot 0, which this step computes"));
    l.begin_step();
    // Sequence 2 shares positions 0..6 by copying slots 4..6 (block 1) into block 2 and sharing
    // nothing else: block 0 is private to 1, so it copies 0..4 too, into block 3.
    let copies = vec![
        CopyJob {
            src: 0,
            dst: 12,
            len: 4,
        },
        CopyJob {
            src: 4,
            dst: 8,
            len: 2,
        },
    ];
    let spans = vec![span(&[3], 0, 4), span(&[2], 4, 3)];
    let jobs = [ComputeJob {
        context: vec![0, 1].into(),
        len: 1,
    }];
    let mine = [tokens.clone(), vec![99]].concat();
    let checked = l
        .check_admission(
            2,
            &mine,
            spans.clone(),
            &jobs,
            copies.clone(),
            AttentionMode::Flat,
        )
        .unwrap();
    assert_eq!(
        (
            checked.answer.cached_tokens,
            checked.answer.step.placed,
            checked.answer.step.copies.len()
        ),
        (6, 7, 2)
    );
    let bad = vec![CopyJob {
        src: 20,
        dst: 12,
        len: 4,
    }];
    let err = l
        .check_admission(2, &mine, spans.clone(), &jobs, bad, AttentionMode::Flat)
        .err()
        .unwrap();
    assert!(
        err.contains("copy 0 reads slot 20, which holds nothing"),
        "{err}"
    );
    let into_live = vec![CopyJob {
        src: 0,
        dst: 5,
        len: 1,
    }];
    let err = l
        .check_admission(
            2,
            &mine,
            spans.clone(),
            &jobs,
            into_live,
            AttentionMode::Flat,
        )
        .err()
        .unwrap();
    assert!(err.contains("which live sequence 1 reads"), "{err}");
    l.apply(checked);
    assert_eq!(l.describe(13), (51, 1));
}

#[test]
fn per_layer_spans_are_refused_with_the_reason() {
    let l = Ledger::new(4, 4);
    let s = Span {
        layers: LayerRange { first: 0, end: 2 },
        ..span(&[0], 0, 2)
    };
    let jobs = [ComputeJob {
        context: vec![0].into(),
        len: 2,
    }];
    let err = l
        .check_admission(1, &[1, 2], vec![s], &jobs, Vec::new(), AttentionMode::Flat)
        .err()
        .unwrap();
    assert!(
        err.contains("does not support per-layer contexts yet"),
        "{err}"
    );
}

/// A plan may place only a prompt's first piece: no logits until the rest is grown in.
#[test]
fn a_prompt_placed_in_pieces_has_no_logits_until_its_end() {
    let mut l = Ledger::new(8, 4);
    let tokens: Vec<u32> = (0..10).collect();
    let p = admit(&mut l, 1, &tokens, vec![span(&[0], 0, 4)]);
    assert_eq!((p.step.placed, p.step.logits_job), (4, None));
    let g = grow(&mut l, 1, &tokens, Growth::Grown(span(&[0, 1, 2], 0, 10))).unwrap();
    assert_eq!((g.placed, g.jobs[0].positions.len()), (10, 6));
}

/// A sequence that reads, as cached, what another computes in the same step is flagged: the
/// step must not use the kernel that writes and reads keys in one launch.
#[test]
fn reading_what_this_step_computes_is_flagged() {
    let mut l = Ledger::new(8, 4);
    admit(&mut l, 1, &[1, 2, 3, 4, 5], vec![span(&[0, 1], 0, 5)]);
    let shared = |l: &Ledger| {
        let spans = vec![Span::shared(vec![0], 0, 4), span(&[2], 4, 1)];
        let jobs = [ComputeJob {
            context: vec![0, 1].into(),
            len: 1,
        }];
        l.check_admission(
            2,
            &[1, 2, 3, 4, 9],
            spans,
            &jobs,
            Vec::new(),
            AttentionMode::Flat,
        )
    };
    // Block 0 is private to sequence 1: refused whatever the step.
    assert!(shared(&l)
        .err()
        .unwrap()
        .contains("block 0 is handed to sequence 2 while live sequence 1 holds it privately"));
    let mut l = Ledger::new(8, 4);
    let spans = vec![Span::shared(vec![0], 0, 4), span(&[1], 4, 1)];
    let jobs = [ComputeJob {
        context: vec![0, 1].into(),
        len: 5,
    }];
    let c = l
        .check_admission(
            1,
            &[1, 2, 3, 4, 5],
            spans,
            &jobs,
            Vec::new(),
            AttentionMode::Flat,
        )
        .unwrap();
    assert!(!c.answer.step.cross_reads);
    l.apply(c);
    assert!(shared(&l).unwrap().answer.step.cross_reads);
    l.begin_step();
    assert!(!shared(&l).unwrap().answer.step.cross_reads);
}
