//! The host's record of what the pool holds, and the rules every strategy plan must follow.
//!
//! Plan first, apply after (as llama.cpp's memory module does): `check_*` only reads and returns
//! what the plan would change; `apply` records it. The ledger knows which token at which
//! position each slot holds, so a plan that claims KV is cached when it is not (a wrong prefix
//! match, a stale block, an evicted slot reused) is caught before any output is produced.

use crate::engine::kv_policy::{Grown, HostJob, Placement};
use crate::engine::sequence::SeqId;
use nanohost_kernels::KvSpan;
use nanohost_strategy_api::{AttentionMode, ComputeJob, CopyJob, LayerRange, Span};
use std::collections::{BTreeSet, HashMap, HashSet};

const EMPTY: u32 = u32::MAX;

/// Live references to one block: which sequences, and whether each marked it shared.
type Holders = Vec<(SeqId, bool)>;

/// A live sequence's context and how far it reaches (one past its last placed position).
struct Live {
    spans: Vec<Span>,
    end: u32,
}

pub struct Ledger {
    block_size: usize,
    num_blocks: usize,
    slot_token: Vec<u32>,
    slot_pos: Vec<u32>,
    holders: HashMap<u32, Holders>,
    live: HashMap<SeqId, Live>,
    /// Counts steps ([`Ledger::begin_step`]); `slot_step` is the step each slot was last
    /// written in: a copy may not read what its own step computes (it runs before the compute).
    step: u64,
    slot_step: Vec<u64>,
    /// Entries dropped from live contexts by `Growth::Replaced` plans.
    pub tokens_evicted: u64,
    /// Blocks a live sequence stopped holding while it stayed live.
    pub blocks_evicted: u64,
}

/// What an accepted plan changes, recorded by [`Ledger::apply`].
pub struct Checked<T> {
    pub answer: T,
    seq: SeqId,
    copies: Vec<CopyJob>,
    writes: Writes,
    spans: Vec<Span>,
    end: u32,
    /// Entries and blocks the sequence stops holding (growth by replacement).
    evicted: (u64, Vec<u32>),
    /// Only the last span changed (a grown span, `spans` holds it alone): recorded in place,
    /// and only its blocks from this index on are new to the sequence.
    in_place: bool,
    hold_from: usize,
}

fn kv_span(s: &Span) -> KvSpan {
    KvSpan { blocks: s.blocks.to_vec(), first: s.first_slot as usize, len: s.len as usize, shift: s.start_pos as i32 - s.rotated_pos as i32 }
}

/// The plan's copies, as (slot -> (token, position)) they leave in the pool.
type Overlay = HashMap<u32, (u32, u32)>;

/// (slot, token, position) a plan's compute writes.
type Writes = Vec<(u32, u32, u32)>;

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
            step: 1,
            slot_step: vec![0; slots],
            tokens_evicted: 0,
            blocks_evicted: 0,
        }
    }

    /// A new step is being planned.
    pub fn begin_step(&mut self) {
        self.step += 1;
    }

    /// Blocks referenced by at least one live sequence.
    pub fn live_blocks(&self) -> usize {
        self.holders.len()
    }

    fn check_span(&self, i: usize, s: &Span) -> Result<(), String> {
        if s.len == 0 {
            return Err(format!("span {i} is empty"));
        }
        if s.first_slot as usize >= self.block_size {
            return Err(format!("span {i} starts at slot {} of its first block; blocks hold {} slots (0..{})", s.first_slot, self.block_size, self.block_size));
        }
        let need = (s.first_slot + s.len).div_ceil(self.block_size as u32) as usize;
        if s.blocks.len() != need {
            return Err(format!(
                "span {i} holds {} tokens from slot {} in {} blocks; blocks of {} tokens need exactly {need}",
                s.len,
                s.first_slot,
                s.blocks.len(),
                self.block_size
            ));
        }
        if let Some(b) = s.blocks.iter().find(|&&b| b as usize >= self.num_blocks) {
            return Err(format!("span {i} uses block {b}, outside the pool of {} blocks (ids 0..{})", self.num_blocks, self.num_blocks));
        }
        if s.layers != LayerRange::ALL {
            return Err(format!(
                "span {i} applies to layers {}..{}; this host attends every span in every layer and does not support per-layer contexts yet: use LayerRange::ALL",
                s.layers.first, s.layers.end
            ));
        }
        Ok(())
    }

    /// Every span valid, in increasing position order, and within `0..limit`.
    fn check_spans(&self, spans: &[Span], limit: usize) -> Result<(), String> {
        let mut end = 0u32;
        for (i, s) in spans.iter().enumerate() {
            self.check_span(i, s)?;
            if s.start_pos < end {
                return Err(format!("span {i} starts at position {} but the spans before it reach position {end}; spans go in increasing position order", s.start_pos));
            }
            end = s.end_pos();
        }
        if end as usize > limit {
            return Err(format!("the spans reach position {end} but the sequence has {limit} tokens"));
        }
        if spans.is_empty() {
            return Err("the plan has no spans".into());
        }
        Ok(())
    }

    /// Blocks of `spans` must not be held by another live sequence unless both sides mark them
    /// shared. Within `seq`'s context a block may appear in several spans (a window that wraps
    /// around its blocks), marked alike. `added_only`: only these blocks are new to `seq`, which
    /// holds the others already (so they are not checked again).
    fn check_ownership(&self, seq: SeqId, spans: &[Span], replacing: bool) -> Result<(), String> {
        let mut mine: HashMap<u32, bool> = HashMap::new();
        for s in spans {
            for &b in s.blocks.iter() {
                if let Some(&was) = mine.get(&b) {
                    if was != s.shared {
                        return Err(format!("block {b} is both shared and private in the context of sequence {seq}"));
                    }
                    continue;
                }
                mine.insert(b, s.shared);
                for &(other, other_shared) in self.holders.get(&b).into_iter().flatten() {
                    if other == seq {
                        if replacing {
                            continue;
                        }
                        return Err(format!("block {b} appears twice in the context of sequence {seq}"));
                    }
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

    /// Checks copies and returns what they leave in the pool: sources must hold something, no
    /// destination may be a source or written twice, and a destination another live sequence
    /// reads may only receive what it already holds.
    fn check_copies(&self, seq: SeqId, copies: &[CopyJob]) -> Result<Overlay, String> {
        let slots = (self.num_blocks * self.block_size) as u64;
        let mut overlay = Overlay::new();
        let mut sources = HashSet::new();
        for (i, c) in copies.iter().enumerate() {
            if c.len == 0 || c.src as u64 + c.len as u64 > slots || c.dst as u64 + c.len as u64 > slots {
                return Err(format!("copy {i} moves slots {}.. to {}.. ({} slots): outside the pool's {slots} slots, or empty", c.src, c.dst, c.len));
            }
            sources.extend(c.src..c.src + c.len);
        }
        for (i, c) in copies.iter().enumerate() {
            for k in 0..c.len {
                let (src, dst) = (c.src + k, c.dst + k);
                let content = (self.slot_token[src as usize], self.slot_pos[src as usize]);
                if content.0 == EMPTY {
                    return Err(format!("copy {i} reads slot {src}, which holds nothing"));
                }
                if self.slot_step[src as usize] == self.step {
                    return Err(format!("copy {i} reads slot {src}, which this step computes (copies run before it): copy it at a later step, or share it"));
                }
                if sources.contains(&dst) || overlay.insert(dst, content).is_some() {
                    return Err(format!("copy {i} writes slot {dst}, which this plan also copies from or to"));
                }
                self.check_write(seq, dst, content.0, content.1)?;
            }
        }
        Ok(overlay)
    }

    fn content(&self, overlay: &Overlay, slot: u32) -> (u32, u32) {
        overlay.get(&slot).copied().unwrap_or((self.slot_token[slot as usize], self.slot_pos[slot as usize]))
    }

    /// Each entry of `spans` either computed (`computed(span, offset)`), then recorded as a
    /// write, or verified to be in the pool already. Returns the writes, the cached count, and
    /// whether a cached entry is one this step computes (another sequence's write).
    fn check_entries(&self, seq: SeqId, tokens: &[u32], spans: &[Span], overlay: &Overlay, computed: impl Fn(usize, u32) -> bool) -> Result<(Writes, usize, bool), String> {
        let (mut writes, mut cached, mut fresh) = (Vec::new(), 0, false);
        let bs = self.block_size as u32;
        for (c, s) in spans.iter().enumerate() {
            for o in 0..s.len {
                let slot = s.slot(o, bs);
                let (token, pos) = (tokens[(s.start_pos + o) as usize], s.rotated_pos + o);
                if computed(c, o) {
                    self.check_write(seq, slot, token, pos)?;
                    writes.push((slot, token, pos));
                } else if self.content(overlay, slot) != (token, pos) {
                    let (t, p) = self.content(overlay, slot);
                    let holds = if t == EMPTY { "nothing".into() } else { format!("token {t} at position {p}") };
                    return Err(format!(
                        "span {c} entry {o} is claimed cached, but its slot {slot} holds {holds} where the sequence needs token {token} at position {pos}"
                    ));
                } else {
                    cached += 1;
                    fresh |= self.slot_step[slot as usize] == self.step;
                }
            }
        }
        // A slot is one entry: cached entries hold distinct positions, so two of them cannot
        // share a slot and pass; a written slot must be no other entry's (costs the writes, not
        // the context: this runs for an evicting strategy at every step).
        let mut written: Vec<u32> = writes.iter().map(|w| w.0).collect();
        written.sort_unstable();
        if let Some(w) = written.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("slot {} appears twice in the context of sequence {seq}", w[0]));
        }
        for &(slot, token, pos) in &writes {
            let (held_token, held) = self.content(overlay, slot);
            // Entries of the context at this slot for the position it holds: the write's own
            // entry among them when that is the position written.
            let others = entries_at(spans, slot, held, bs) - usize::from(held == pos);
            if (held_token, held) != (token, pos) && held != EMPTY && others > 0 {
                return Err(format!("slot {slot} appears twice in the context of sequence {seq}: it holds position {held}, kept, and receives position {pos}"));
            }
        }
        Ok((writes, cached, fresh))
    }

    /// Checks an admission plan for `tokens` without changing anything.
    pub fn check_admission(&self, seq: SeqId, tokens: &[u32], spans: Vec<Span>, jobs: &[ComputeJob], copies: Vec<CopyJob>, mode: AttentionMode) -> Result<Checked<Placement>, String> {
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
            if ctx.is_empty() || ctx.windows(2).any(|w| w[0] >= w[1]) || ctx.iter().any(|&c| c >= spans.len()) {
                return Err(format!("job {j} has context {ctx:?}; it must list span indices in increasing order, below {}", spans.len()));
            }
            let entries: Vec<(usize, u32)> = ctx.iter().flat_map(|&c| (0..spans[c].len).map(move |o| (c, o))).collect();
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
                job_tokens.push(tokens[(spans[c].start_pos + o) as usize]);
                positions.push(spans[c].rotated_pos + o);
            }
            if new.last() == Some(&last) {
                last_job = Some(j);
            }
            host_jobs.push(HostJob { context: ctx.iter().map(|&c| kv_span(&spans[c])).collect(), tokens: job_tokens, positions });
        }
        let Some(last_job) = last_job else {
            return Err("no job ends with the spans' last entry; it must be computed (its logits give the next token)".into());
        };
        let (writes, cached, cross_reads) = self.check_entries(seq, tokens, &spans, &overlay, |c, o| computed.contains(&(c, o)))?;
        let end = spans[last.0].end_pos();
        let placement = Placement {
            context: spans.iter().map(kv_span).collect(),
            jobs: host_jobs,
            logits_job: (end as usize == tokens.len()).then_some(last_job),
            placed: end as usize,
            cached_tokens: cached,
            cascade: mode == AttentionMode::Cascade,
            copies: copies.clone(),
            cross_reads,
        };
        Ok(Checked { answer: placement, seq, copies, writes, spans, end, evicted: (0, Vec::new()), in_place: false, hold_from: 0 })
    }

    /// Checks a grown last span: same blocks first, same first slot and positions, private,
    /// longer, within `tokens`. Costs what it adds, not the context (it runs every step).
    pub fn check_grown(&self, seq: SeqId, tokens: &[u32], span: Span) -> Result<Checked<Grown>, String> {
        let live = self.live.get(&seq).ok_or(format!("grow answered for sequence {seq}, which is not live"))?;
        let i = live.spans.len() - 1;
        let old = &live.spans[i];
        // A shared span may grow too: each new slot is checked against the sequences reading
        // its block (`check_write`), as every write is.
        if span.shared != old.shared {
            return Err(format!("the grown span of sequence {seq} changed from {} to {}", share_word(old.shared), share_word(span.shared)));
        }
        if (span.start_pos, span.rotated_pos, span.first_slot) != (old.start_pos, old.rotated_pos, old.first_slot) || span.len <= old.len || span.end_pos() as usize > tokens.len() {
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
            return Err(format!("the grown span of sequence {seq} changed blocks it already held ({:?} -> {:?})", old.blocks, span.blocks));
        }
        self.check_span(i, &span)?;
        // Only the blocks added now need the ownership check: the others passed it when added.
        let added = Span { blocks: span.blocks[old.blocks.len()..].to_vec().into(), ..span.clone() };
        self.check_ownership(seq, std::slice::from_ref(&added), false)?;
        let bs = self.block_size as u32;
        let mut writes = Vec::with_capacity((span.len - old.len) as usize);
        for o in old.len..span.len {
            let (slot, token, pos) = (span.slot(o, bs), tokens[(span.start_pos + o) as usize], span.rotated_pos + o);
            self.check_write(seq, slot, token, pos)?;
            // A block listed twice can bring the span back onto one of its own entries.
            let (held_token, held) = (self.slot_token[slot as usize], self.slot_pos[slot as usize]);
            let kept = |s: &Span| (s.rotated_pos..s.rotated_pos + old.len.min(s.len)).contains(&held) && s.slot(held - s.rotated_pos, bs) == slot;
            if held != EMPTY && (held_token, held) != (token, pos) && (kept(&span) || entries_at(&live.spans[..i], slot, held, bs) > 0) {
                return Err(format!("slot {slot} appears twice in the context of sequence {seq}: it holds position {held}, kept, and receives position {pos}"));
            }
            if writes.iter().any(|w: &(u32, u32, u32)| w.0 == slot) {
                return Err(format!("slot {slot} appears twice in the context of sequence {seq}"));
            }
            writes.push((slot, token, pos));
        }
        let context: Vec<KvSpan> = live.spans[..i].iter().chain(std::iter::once(&span)).map(kv_span).collect();
        let job = tail_job(&context, &writes);
        let end = span.end_pos();
        // In place (see `apply`): the new last span only.
        let hold_from = live.spans[i].blocks.len();
        let spans = vec![span];
        let grown = Grown { context, job, placed: end as usize, copies: Vec::new(), cross_reads: false };
        Ok(Checked { answer: grown, seq, copies: Vec::new(), writes, spans, end, evicted: (0, Vec::new()), in_place: true, hold_from })
    }

    /// Checks a replaced context: every entry before the sequence's old end must hold its token
    /// at its position (it is kept, or copied there), the positions from the old end on are the
    /// context's last entries and are computed.
    pub fn check_replaced(&self, seq: SeqId, tokens: &[u32], spans: Vec<Span>, copies: Vec<CopyJob>) -> Result<Checked<Grown>, String> {
        let live = self.live.get(&seq).ok_or(format!("grow answered for sequence {seq}, which is not live"))?;
        let old_end = live.end;
        self.check_spans(&spans, tokens.len())?;
        let end = spans[spans.len() - 1].end_pos();
        let new_entries: u32 = spans.iter().map(|s| s.end_pos().saturating_sub(s.start_pos.max(old_end))).sum();
        if end <= old_end || new_entries != end - old_end {
            return Err(format!(
                "the new context of sequence {seq} must place every position from {old_end} (where it ended) up to its end, as its last entries; it ends at {end} and places {new_entries} of them"
            ));
        }
        self.check_ownership(seq, &spans, true)?;
        let overlay = self.check_copies(seq, &copies)?;
        let (writes, _, cross_reads) = self.check_entries(seq, tokens, &spans, &overlay, |c, o| spans[c].start_pos + o >= old_end)?;
        let held_before: HashSet<u32> = live.spans.iter().flat_map(|s| s.blocks.iter().copied()).collect();
        let held_after: HashSet<u32> = spans.iter().flat_map(|s| s.blocks.iter().copied()).collect();
        let entries_before: u32 = live.spans.iter().map(|s| s.len).sum();
        let entries_after: u32 = spans.iter().map(|s| s.len).sum();
        let dropped = (entries_before + (end - old_end)).saturating_sub(entries_after) as u64;
        let freed = held_before.difference(&held_after).copied().collect();
        let context: Vec<KvSpan> = spans.iter().map(kv_span).collect();
        let job = tail_job(&context, &writes);
        let grown = Grown { context, job, placed: end as usize, copies: copies.clone(), cross_reads };
        Ok(Checked { answer: grown, seq, copies, writes, spans, end, evicted: (dropped, freed), in_place: false, hold_from: 0 })
    }

    /// A slot another live sequence relies on may only be rewritten with the same content.
    fn check_write(&self, seq: SeqId, slot: u32, token: u32, pos: u32) -> Result<(), String> {
        let block = slot / self.block_size as u32;
        let same = (self.slot_token[slot as usize], self.slot_pos[slot as usize]) == (token, pos);
        let empty = self.slot_token[slot as usize] == EMPTY;
        match self.holders.get(&block).and_then(|h| h.iter().find(|(s, _)| *s != seq)) {
            Some((other, _)) if !same && !empty => Err(format!(
                "the plan writes token {token} into slot {slot} of block {block}, which live sequence {other} reads (it holds {})",
                match self.slot_token[slot as usize] {
                    EMPTY => "nothing".into(),
                    t => format!("token {t} at position {}", self.slot_pos[slot as usize]),
                }
            )),
            _ => Ok(()),
        }
    }

    /// Records a checked plan and returns what the engine runs.
    pub fn apply<T>(&mut self, checked: Checked<T>) -> T {
        let Checked { answer, seq, copies, writes, mut spans, end, evicted: (dropped, freed), in_place, hold_from } = checked;
        for c in &copies {
            for k in 0..c.len as usize {
                let (src, dst) = (c.src as usize + k, c.dst as usize + k);
                (self.slot_token[dst], self.slot_pos[dst]) = (self.slot_token[src], self.slot_pos[src]);
            }
        }
        for (slot, token, pos) in writes {
            self.slot_token[slot as usize] = token;
            self.slot_pos[slot as usize] = pos;
            self.slot_step[slot as usize] = self.step;
        }
        for b in &freed {
            self.unhold(seq, *b);
        }
        self.tokens_evicted += dropped;
        self.blocks_evicted += freed.len() as u64;
        for s in &spans {
            for &b in s.blocks.iter().skip(hold_from) {
                let h = self.holders.entry(b).or_default();
                // A replaced context may mark a block it kept shared or private anew.
                match h.iter_mut().find(|(x, _)| *x == seq) {
                    Some(held) => held.1 = s.shared,
                    None => h.push((seq, s.shared)),
                }
            }
        }
        match self.live.get_mut(&seq) {
            Some(live) if in_place => {
                // The grown path: this runs for every sequence at every decode step.
                *live.spans.last_mut().expect("a context has spans") = spans.pop().expect("a context has spans");
                live.end = end;
            }
            _ => {
                self.live.insert(seq, Live { spans, end });
            }
        }
        answer
    }

    fn unhold(&mut self, seq: SeqId, block: u32) {
        if let Some(h) = self.holders.get_mut(&block) {
            h.retain(|(s, _)| *s != seq);
            if h.is_empty() {
                self.holders.remove(&block);
            }
        }
    }

    /// Records `token` as what the last entry of `seq`'s context holds: a slot granted before
    /// its token was sampled (the engine prepares the next step while the device runs this
    /// one), which the growth recorded with a placeholder.
    pub fn set_last_token(&mut self, seq: SeqId, token: u32) -> Result<(), String> {
        let Some(span) = self.live.get(&seq).and_then(|l| l.spans.last()) else { return Err(format!("sequence {seq} is not live")) };
        let slot = span.slot(span.len - 1, self.block_size as u32);
        self.slot_token[slot as usize] = token;
        Ok(())
    }

    #[cfg(test)]
    fn describe(&self, slot: usize) -> (u32, u32) {
        (self.slot_token[slot], self.slot_pos[slot])
    }

    pub fn is_live(&self, seq: SeqId) -> bool {
        self.live.contains_key(&seq)
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

fn share_word(shared: bool) -> &'static str {
    if shared {
        "shared"
    } else {
        "private"
    }
}

/// How many entries of `spans` keep their keys, rotated for position `pos`, in `slot`.
fn entries_at(spans: &[Span], slot: u32, pos: u32, block_size: u32) -> usize {
    spans.iter().filter(|s| (s.rotated_pos..s.rotated_pos + s.len).contains(&pos) && s.slot(pos - s.rotated_pos, block_size) == slot).count()
}

/// The job computing `writes` (the context's last entries, in order).
fn tail_job(context: &[KvSpan], writes: &[(u32, u32, u32)]) -> HostJob {
    HostJob { context: context.to_vec(), tokens: writes.iter().map(|w| w.1).collect(), positions: writes.iter().map(|w| w.2).collect() }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fuzz;
