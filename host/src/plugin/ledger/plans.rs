//! The three kinds of plan a strategy answers, checked without changing anything: an admission,
//! a grown last span (every decode step: it costs what it adds), and a replaced context.

use super::rules::{check_not_kept, check_writes_distinct, entries_at, share_word};
use super::{kv_span, Checked, Ledger};
use crate::engine::kv_policy::{HostJob, Placement, SeqStep};
use crate::engine::sequence::SeqId;
use nanohost_kernels::KvSpan;
use nanohost_strategy_api::{AttentionMode, ComputeJob, CopyJob, Span};
use std::collections::{BTreeSet, HashSet};

impl Ledger {
    /// Checks an admission plan for `tokens` without changing anything.
    pub fn check_admission(
        &self,
        seq: SeqId,
        tokens: &[u32],
        spans: Vec<Span>,
        jobs: &[ComputeJob],
        copies: Vec<CopyJob>,
        mode: AttentionMode,
    ) -> Result<Checked<Placement>, String> {
        if self.live.contains_key(&seq) {
            return Err(format!("sequence {seq} admitted while already live"));
        }
        self.check_spans(&spans, tokens.len())?;
        self.check_ownership(seq, &spans, false)?;
        let overlay = self.check_copies(seq, &copies)?;

        // Which (span, offset) entries each job computes.
        let mut computed: BTreeSet<(usize, u32)> = BTreeSet::new();
        let mut host_jobs = Vec::new();
        let mut last_job = None;
        let last = (spans.len() - 1, spans[spans.len() - 1].len - 1);
        for (j, job) in jobs.iter().enumerate() {
            let ctx: Vec<usize> = job.context.iter().map(|&c| c as usize).collect();
            if ctx.is_empty()
                || ctx.windows(2).any(|w| w[0] >= w[1])
                || ctx.iter().any(|&c| c >= spans.len())
            {
                return Err(format!("job {j} has context {ctx:?}; it must list span indices in increasing order, below {}", spans.len()));
            }
            let entries: Vec<(usize, u32)> = ctx
                .iter()
                .flat_map(|&c| (0..spans[c].len).map(move |o| (c, o)))
                .collect();
            let n = job.len as usize;
            if n == 0 || n > entries.len() {
                return Err(format!(
                    "job {j} computes {n} tokens but its context holds {}",
                    entries.len()
                ));
            }
            let new = &entries[entries.len() - n..];
            let (mut job_tokens, mut positions) = (Vec::with_capacity(n), Vec::with_capacity(n));
            for &(c, o) in new {
                if !computed.insert((c, o)) {
                    return Err(format!("span {c} entry {o} is computed by two jobs"));
                }
                job_tokens.push(tokens[(spans[c].start_pos + o) as usize]);
                positions.push(spans[c].rotated_pos + o);
            }
            if new.last() == Some(&last) {
                last_job = Some(j);
            }
            host_jobs.push(HostJob {
                context: ctx.iter().map(|&c| kv_span(&spans[c])).collect(),
                tokens: job_tokens,
                positions,
            });
        }
        let Some(last_job) = last_job else {
            return Err("no job ends with the spans' last entry; it must be computed (its logits give the next token)".into());
        };
        let (writes, cached, cross_reads) =
            self.check_entries(seq, tokens, &spans, &overlay, |c, o| {
                computed.contains(&(c, o))
            })?;
        let end = spans[last.0].end_pos();
        let step = SeqStep {
            context: spans.iter().map(kv_span).collect(),
            jobs: host_jobs,
            logits_job: (end as usize == tokens.len()).then_some(last_job),
            placed: end as usize,
            copies: copies.clone(),
            cross_reads,
        };
        let placement = Placement {
            step,
            cached_tokens: cached,
            cascade: mode == AttentionMode::Cascade,
        };
        Ok(Checked {
            answer: placement,
            seq,
            copies,
            writes,
            spans,
            end,
            evicted: (0, Vec::new()),
            in_place: false,
            hold_from: 0,
        })
    }

    /// Checks a grown last span: same blocks first, same first slot and positions, private,
    /// longer, within `tokens`. Costs what it adds, not the context (it runs every step).
    pub fn check_grown(
        &self,
        seq: SeqId,
        tokens: &[u32],
        span: Span,
    ) -> Result<Checked<SeqStep>, String> {
        let live = self.live.get(&seq).ok_or(format!(
            "grow answered for sequence {seq}, which is not live"
        ))?;
        let i = live.spans.len() - 1;
        let old = &live.spans[i];
        // A shared span may grow too: each new slot is checked against the sequences reading
        // its block (`check_write`), as every write is.
        if span.shared != old.shared {
            return Err(format!(
                "the grown span of sequence {seq} changed from {} to {}",
                share_word(old.shared),
                share_word(span.shared)
            ));
        }
        if (span.start_pos, span.rotated_pos, span.first_slot)
            != (old.start_pos, old.rotated_pos, old.first_slot)
            || span.len <= old.len
            || span.end_pos() as usize > tokens.len()
        {
            return Err(format!(
                "Growth::Grown must answer the last span of sequence {seq} longer: starting where it did (position {}, slot {}) and holding {} to {} tokens (up to position {}); got a span starting at position {} (slot {}) holding {}. To change where a span starts, answer Growth::Replaced",
                old.start_pos,
                old.first_slot,
                old.len + 1,
                tokens.len() as u32 - old.start_pos,
                tokens.len(),
                span.start_pos,
                span.first_slot,
                span.len
            ));
        }
        if !span.blocks.starts_with(&old.blocks) {
            return Err(format!(
                "the grown span of sequence {seq} changed blocks it already held ({:?} -> {:?})",
                old.blocks, span.blocks
            ));
        }
        self.check_span(i, &span)?;
        // Only the blocks added now need the ownership check: the others passed it when added.
        let added = Span {
            blocks: span.blocks[old.blocks.len()..].to_vec().into(),
            first_slot: 0,
            len: 0,
            start_pos: span.start_pos,
            rotated_pos: span.rotated_pos,
            shared: span.shared,
            layers: span.layers,
        };
        self.check_ownership(seq, std::slice::from_ref(&added), false)?;
        let bs = self.block_size as u32;
        let mut writes = Vec::with_capacity((span.len - old.len) as usize);
        for o in old.len..span.len {
            let (slot, token, pos) = (
                span.slot(o, bs),
                tokens[(span.start_pos + o) as usize],
                span.rotated_pos + o,
            );
            self.check_write(seq, slot, token, pos)?;
            // A block listed twice can bring the span back onto one of its own entries.
            let held = (self.slot_token[slot as usize], self.slot_pos[slot as usize]);
            let in_old_part = (span.rotated_pos..span.rotated_pos + old.len).contains(&held.1)
                && span.slot(held.1 - span.rotated_pos, bs) == slot;
            check_not_kept(
                seq,
                (slot, token, pos),
                held,
                usize::from(in_old_part) + entries_at(&live.spans[..i], slot, held.1, bs),
            )?;
            writes.push((slot, token, pos));
        }
        check_writes_distinct(seq, &writes)?;
        let context: Vec<KvSpan> = live.spans[..i]
            .iter()
            .chain(std::iter::once(&span))
            .map(kv_span)
            .collect();
        let job = tail_job(&context, &writes);
        let end = span.end_pos();
        // In place (see `apply`): the new last span only.
        let hold_from = live.spans[i].blocks.len();
        let spans = vec![span];
        let grown = SeqStep {
            context,
            jobs: vec![job],
            logits_job: (end as usize == tokens.len()).then_some(0),
            placed: end as usize,
            copies: Vec::new(),
            cross_reads: false,
        };
        Ok(Checked {
            answer: grown,
            seq,
            copies: Vec::new(),
            writes,
            spans,
            end,
            evicted: (0, Vec::new()),
            in_place: true,
            hold_from,
        })
    }

    /// Checks a replaced context: every entry before the sequence's old end must hold its token
    /// at its position (it is kept, or copied there), the positions from the old end on are the
    /// context's last entries and are computed.
    pub fn check_replaced(
        &self,
        seq: SeqId,
        tokens: &[u32],
        spans: Vec<Span>,
        copies: Vec<CopyJob>,
    ) -> Result<Checked<SeqStep>, String> {
        let live = self.live.get(&seq).ok_or(format!(
            "grow answered for sequence {seq}, which is not live"
        ))?;
        let old_end = live.end;
        self.check_spans(&spans, tokens.len())?;
        let end = spans[spans.len() - 1].end_pos();
        let new_entries: u32 = spans
            .iter()
            .map(|s| s.end_pos().saturating_sub(s.start_pos.max(old_end)))
            .sum();
        if end <= old_end || new_entries != end - old_end {
            return Err(format!(
                "the new context of sequence {seq} must place every position from {old_end} (where it ended) up to its end, as its last entries; it ends at {end} and places {new_entries} of them"
            ));
        }
        self.check_ownership(seq, &spans, true)?;
        let overlay = self.check_copies(seq, &copies)?;
        let (writes, _, cross_reads) =
            self.check_entries(seq, tokens, &spans, &overlay, |c, o| {
                spans[c].start_pos + o >= old_end
            })?;
        let held_before: HashSet<u32> = live
            .spans
            .iter()
            .flat_map(|s| s.blocks.iter().copied())
            .collect();
        let held_after: HashSet<u32> = spans
            .iter()
            .flat_map(|s| s.blocks.iter().copied())
            .collect();
        let entries_before: u32 = live.spans.iter().map(|s| s.len).sum();
        let entries_after: u32 = spans.iter().map(|s| s.len).sum();
        let dropped = (entries_before + (end - old_end)).saturating_sub(entries_after) as u64;
        let freed = held_before.difference(&held_after).copied().collect();
        let context: Vec<KvSpan> = spans.iter().map(kv_span).collect();
        let job = tail_job(&context, &writes);
        let grown = SeqStep {
            context,
            jobs: vec![job],
            logits_job: (end as usize == tokens.len()).then_some(0),
            placed: end as usize,
            copies: copies.clone(),
            cross_reads,
        };
        Ok(Checked {
            answer: grown,
            seq,
            copies,
            writes,
            spans,
            end,
            evicted: (dropped, freed),
            in_place: false,
            hold_from: 0,
        })
    }
}

/// The job computing `writes` (the context's last entries, in order).
fn tail_job(context: &[KvSpan], writes: &[(u32, u32, u32)]) -> HostJob {
    HostJob {
        context: context.to_vec(),
        tokens: writes.iter().map(|w| w.1).collect(),
        positions: writes.iter().map(|w| w.2).collect(),
    }
}
