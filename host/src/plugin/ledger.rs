//! The host's record of what the pool holds, and the rules every strategy plan must follow.
//!
//! Plan first, apply after (as llama.cpp's memory module does): [`Ledger::check_admission`]
//! only reads; [`Ledger::apply_admission`] records the accepted plan. The ledger knows which
//! token at which position each slot holds, so a plan that claims KV is cached when it is not
//! (a wrong prefix match, a stale block) is caught before any output is produced.

use crate::engine::kv_policy::{HostJob, Placement};
use crate::engine::sequence::SeqId;
use nanohost_kernels::KvSpan;
use nanohost_strategy_api::{AttentionMode, Plan, Span};
use std::collections::{BTreeSet, HashMap};

const EMPTY: u32 = u32::MAX;

/// Live references to one block: which sequences, and whether each marked it shared.
type Holders = Vec<(SeqId, bool)>;

pub struct Ledger {
    block_size: usize,
    num_blocks: usize,
    slot_token: Vec<u32>,
    slot_pos: Vec<u32>,
    holders: HashMap<u32, Holders>,
    live: HashMap<SeqId, Vec<Span>>,
}

/// What an accepted admission writes: (slot, token, position).
pub struct CheckedAdmission {
    pub placement: Placement,
    writes: Vec<(u32, u32, u32)>,
    spans: Vec<Span>,
}

fn kv_span(s: &Span) -> KvSpan {
    KvSpan { blocks: s.blocks.to_vec(), len: s.len as usize, shift: s.start_pos as i32 - s.rotated_pos as i32 }
}

impl Ledger {
    pub fn new(num_blocks: usize, block_size: usize) -> Self {
        let slots = num_blocks * block_size;
        Ledger {
            block_size,
            num_blocks,
            slot_token: vec![EMPTY; slots],
            slot_pos: vec![EMPTY; slots],
            holders: HashMap::new(),
            live: HashMap::new(),
        }
    }

    /// Blocks referenced by at least one live sequence.
    pub fn live_blocks(&self) -> usize {
        self.holders.len()
    }

    fn check_span(&self, i: usize, s: &Span) -> Result<(), String> {
        if s.len == 0 {
            return Err(format!("span {i} is empty"));
        }
        let need = (s.len as usize).div_ceil(self.block_size);
        if s.blocks.len() != need {
            return Err(format!("span {i} holds {} tokens in {} blocks; blocks of {} tokens need exactly {need}", s.len, s.blocks.len(), self.block_size));
        }
        if let Some(b) = s.blocks.iter().find(|&&b| b as usize >= self.num_blocks) {
            return Err(format!("span {i} uses block {b}, outside the pool of {} blocks (ids 0..{})", self.num_blocks, self.num_blocks));
        }
        Ok(())
    }

    /// Blocks of `spans` must not be held by another live sequence unless both sides mark them
    /// shared, nor appear twice in `seq`'s context: among `spans`, or already held by `seq` (an
    /// append adds blocks to a live sequence; an admitted one holds nothing yet).
    fn check_ownership(&self, seq: SeqId, spans: &[Span]) -> Result<(), String> {
        let mut mine: HashMap<u32, bool> = HashMap::new();
        for s in spans {
            for &b in s.blocks.iter() {
                let held = self.holders.get(&b).into_iter().flatten();
                if mine.insert(b, s.shared).is_some() || held.clone().any(|&(other, _)| other == seq) {
                    return Err(format!("block {b} appears twice in the context of sequence {seq}"));
                }
                for &(other, other_shared) in held {
                    if !(s.shared && other_shared) {
                        return Err(format!(
                            "block {b} is handed to sequence {seq} while live sequence {other} holds it{}",
                            if other_shared && !s.shared { " (shared there, private here)" } else { " privately" }
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn slot(&self, s: &Span, offset: usize) -> u32 {
        s.blocks[offset / self.block_size] * self.block_size as u32 + (offset % self.block_size) as u32
    }

    /// Checks a plan for `tokens` without changing anything.
    pub fn check_admission(&self, seq: SeqId, tokens: &[u32], plan: &Plan) -> Result<CheckedAdmission, String> {
        if self.live.contains_key(&seq) {
            return Err(format!("sequence {seq} admitted while already live"));
        }
        let spans: Vec<Span> = plan.spans.to_vec();
        let mut pos = 0u32;
        for (i, s) in spans.iter().enumerate() {
            self.check_span(i, s)?;
            if s.start_pos != pos {
                return Err(format!("span {i} starts at position {} but the spans before it end at {pos}", s.start_pos));
            }
            pos += s.len;
        }
        if pos as usize != tokens.len() {
            return Err(format!("the spans hold {pos} tokens but the request has {}", tokens.len()));
        }
        self.check_ownership(seq, &spans)?;

        // Which (span, offset) entries each job computes.
        let mut computed: BTreeSet<(usize, usize)> = BTreeSet::new();
        let mut jobs = Vec::new();
        let mut logits_job = None;
        for (j, job) in plan.jobs.iter().enumerate() {
            let ctx: Vec<usize> = job.context.iter().map(|&c| c as usize).collect();
            if ctx.is_empty() || ctx.windows(2).any(|w| w[0] >= w[1]) || ctx.iter().any(|&c| c >= spans.len()) {
                return Err(format!("job {j} has context {ctx:?}; it must list span indices in increasing order, below {}", spans.len()));
            }
            let entries: Vec<(usize, usize)> = ctx.iter().flat_map(|&c| (0..spans[c].len as usize).map(move |o| (c, o))).collect();
            let n = job.len as usize;
            if n == 0 || n > entries.len() {
                return Err(format!("job {j} computes {n} tokens but its context holds {}", entries.len()));
            }
            let new = &entries[entries.len() - n..];
            let (mut job_tokens, mut positions) = (Vec::with_capacity(n), Vec::with_capacity(n));
            for &(c, o) in new {
                if !computed.insert((c, o)) {
                    return Err(format!("span {c} entry {o} is computed by two jobs"));
                }
                job_tokens.push(tokens[(spans[c].start_pos as usize) + o]);
                positions.push(spans[c].rotated_pos + o as u32);
            }
            let last = spans.len() - 1;
            if new.last() == Some(&(last, spans[last].len as usize - 1)) {
                logits_job = Some(j);
            }
            jobs.push(HostJob { context: ctx.iter().map(|&c| kv_span(&spans[c])).collect(), tokens: job_tokens, positions });
        }
        let Some(logits_job) = logits_job else {
            return Err("no job ends with the request's last token; it must be computed (its logits give the first output)".into());
        };

        let mut writes = Vec::new();
        let mut cached = 0;
        for (c, s) in spans.iter().enumerate() {
            for o in 0..s.len as usize {
                let slot = self.slot(s, o);
                let (token, pos) = (tokens[s.start_pos as usize + o], s.rotated_pos + o as u32);
                if computed.contains(&(c, o)) {
                    self.check_write(seq, slot, token, pos)?;
                    writes.push((slot, token, pos));
                } else if (self.slot_token[slot as usize], self.slot_pos[slot as usize]) != (token, pos) {
                    return Err(format!(
                        "span {c} entry {o} is claimed cached, but its slot {slot} holds {} where the request needs token {token} at position {pos}",
                        self.describe_slot(slot)
                    ));
                } else {
                    cached += 1;
                }
            }
        }
        let cascade = plan.mode == AttentionMode::Cascade;
        let placement = Placement { context: spans.iter().map(kv_span).collect(), jobs, logits_job, cached_tokens: cached, cascade };
        Ok(CheckedAdmission { placement, writes, spans })
    }

    fn describe_slot(&self, slot: u32) -> String {
        match self.slot_token[slot as usize] {
            EMPTY => "nothing".into(),
            t => format!("token {t} at position {}", self.slot_pos[slot as usize]),
        }
    }

    /// A slot another live sequence relies on may only be rewritten with the same content.
    fn check_write(&self, seq: SeqId, slot: u32, token: u32, pos: u32) -> Result<(), String> {
        let block = slot / self.block_size as u32;
        let same = (self.slot_token[slot as usize], self.slot_pos[slot as usize]) == (token, pos);
        let empty = self.slot_token[slot as usize] == EMPTY;
        match self.holders.get(&block).and_then(|h| h.iter().find(|(s, _)| *s != seq)) {
            Some((other, _)) if !same && !empty => Err(format!(
                "the plan writes token {token} into slot {slot} of block {block}, which live sequence {other} reads (it holds {})",
                self.describe_slot(slot)
            )),
            _ => Ok(()),
        }
    }

    pub fn apply_admission(&mut self, seq: SeqId, checked: CheckedAdmission) -> Placement {
        for (slot, token, pos) in checked.writes {
            self.slot_token[slot as usize] = token;
            self.slot_pos[slot as usize] = pos;
        }
        self.hold(seq, &checked.spans);
        self.live.insert(seq, checked.spans);
        checked.placement
    }

    fn hold(&mut self, seq: SeqId, spans: &[Span]) {
        for s in spans {
            for &b in s.blocks.iter() {
                let h = self.holders.entry(b).or_default();
                if !h.iter().any(|(x, _)| *x == seq) {
                    h.push((seq, s.shared));
                }
            }
        }
    }

    /// Checks and records a decode slot: `span` replaces the sequence's last span and must hold
    /// all of `tokens` after the earlier spans.
    pub fn apply_append(&mut self, seq: SeqId, tokens: &[u32], span: Span) -> Result<Vec<KvSpan>, String> {
        let Some(spans) = self.live.get(&seq) else { return Err(format!("append_slot answered for sequence {seq}, which is not live")) };
        let old = spans.last().expect("admitted sequences have spans");
        let before: u32 = spans[..spans.len() - 1].iter().map(|s| s.len).sum();
        let i = spans.len() - 1;
        if span.shared || old.shared {
            return Err(format!("decode slots go into a private span, but span {i} of sequence {seq} is shared"));
        }
        if before + span.len != tokens.len() as u32 || span.start_pos != old.start_pos || span.rotated_pos != old.rotated_pos {
            return Err(format!(
                "the grown span of sequence {seq} must keep start {} and hold {} tokens; got start {} and {}",
                old.start_pos,
                tokens.len() as u32 - before,
                span.start_pos,
                span.len
            ));
        }
        if !span.blocks.starts_with(&old.blocks) {
            return Err(format!("the grown span of sequence {seq} changed blocks it already held ({:?} -> {:?})", old.blocks, span.blocks));
        }
        self.check_span(i, &span)?;
        // Only the blocks added now need the ownership check and recording: the ones held
        // already passed it when they were added, and no other plan can have taken them since.
        // (Checking all of them made this O(context) per token.)
        let added = Span { blocks: span.blocks[old.blocks.len()..].to_vec().into(), len: span.len, start_pos: span.start_pos, rotated_pos: span.rotated_pos, shared: false };
        self.check_ownership(seq, std::slice::from_ref(&added))?;
        let o = span.len as usize - 1;
        let slot = self.slot(&span, o);
        let (token, pos) = (tokens[tokens.len() - 1], span.rotated_pos + o as u32);
        self.check_write(seq, slot, token, pos)?;
        self.slot_token[slot as usize] = token;
        self.slot_pos[slot as usize] = pos;
        self.hold(seq, std::slice::from_ref(&added));
        // In place: this runs for every sequence at every decode step.
        let spans = self.live.get_mut(&seq).expect("looked up above");
        spans[i] = span;
        Ok(spans.iter().map(kv_span).collect())
    }

    /// Records `token` as what the last entry of `seq`'s context holds: a decode slot granted
    /// before its token was sampled (the engine prepares the next step while the device runs
    /// this one), which `apply_append` recorded with a placeholder.
    pub fn set_last_token(&mut self, seq: SeqId, token: u32) -> Result<(), String> {
        let Some(span) = self.live.get(&seq).and_then(|spans| spans.last()) else { return Err(format!("sequence {seq} is not live")) };
        let slot = self.slot(span, span.len as usize - 1);
        self.slot_token[slot as usize] = token;
        Ok(())
    }

    pub fn release(&mut self, seq: SeqId) -> Result<(), String> {
        if self.live.remove(&seq).is_none() {
            return Err(format!("sequence {seq} released but not live"));
        }
        self.holders.retain(|_, h| {
            h.retain(|(s, _)| *s != seq);
            !h.is_empty()
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nanohost_strategy_api::{AttentionMode, ComputeJob};

    fn span(blocks: &[u32], len: u32) -> Span {
        Span { blocks: blocks.to_vec().into(), len, start_pos: 0, rotated_pos: 0, shared: false }
    }

    fn admit(l: &mut Ledger, seq: SeqId, tokens: &[u32], blocks: &[u32]) {
        let plan = Plan { spans: vec![span(blocks, tokens.len() as u32)].into(), jobs: vec![ComputeJob { context: vec![0].into(), len: tokens.len() as u32 }].into(), mode: AttentionMode::Flat };
        let checked = l.check_admission(seq, tokens, &plan).unwrap();
        l.apply_admission(seq, checked);
    }

    #[test]
    fn appended_blocks_are_checked_against_every_holder() {
        let mut l = Ledger::new(8, 2);
        admit(&mut l, 1, &[5, 6], &[0]);
        admit(&mut l, 2, &[7, 8], &[1]);
        let err = l.apply_append(2, &[7, 8, 9], span(&[1, 0], 3)).unwrap_err();
        assert!(err.contains("block 0 is handed to sequence 2 while live sequence 1 holds it privately"), "{err}");
        let err = l.apply_append(2, &[7, 8, 9], span(&[1, 1], 3)).unwrap_err();
        assert!(err.contains("block 1 appears twice in the context of sequence 2"), "{err}");
        let context = l.apply_append(2, &[7, 8, 9], span(&[1, 2], 3)).unwrap();
        assert_eq!(context[0].blocks, [1, 2]);
        // Now held: another sequence cannot be given it.
        let err = l.apply_append(1, &[5, 6, 4], span(&[0, 2], 3)).unwrap_err();
        assert!(err.contains("block 2 is handed to sequence 1 while live sequence 2 holds it"), "{err}");
    }
}
