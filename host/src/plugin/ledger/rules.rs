//! The rules every plan is held to, one check each: spans, ownership, copies, entries (each
//! kept or cached entry holding its token at its position, each written slot no other entry's)
//! and writes into slots other live sequences read.

use super::{Ledger, Overlay, Writes, EMPTY};
use crate::engine::sequence::SeqId;
use nanohost_strategy_api::{CopyJob, LayerRange, Span};
use std::collections::{HashMap, HashSet};

impl Ledger {
    pub(super) fn check_span(&self, i: usize, s: &Span) -> Result<(), String> {
        if s.len == 0 {
            return Err(format!("span {i} is empty"));
        }
        if s.first_slot as usize >= self.block_size {
            return Err(format!(
                "span {i} starts at slot {} of its first block; blocks hold {} slots (0..{})",
                s.first_slot, self.block_size, self.block_size
            ));
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
            return Err(format!(
                "span {i} uses block {b}, outside the pool of {} blocks (ids 0..{})",
                self.num_blocks, self.num_blocks
            ));
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
    pub(super) fn check_spans(&self, spans: &[Span], limit: usize) -> Result<(), String> {
        let mut end = 0u32;
        for (i, s) in spans.iter().enumerate() {
            self.check_span(i, s)?;
            if s.start_pos < end {
                return Err(format!("span {i} starts at position {} but the spans before it reach position {end}; spans go in increasing position order", s.start_pos));
            }
            end = s.end_pos();
        }
        if end as usize > limit {
            return Err(format!(
                "the spans reach position {end} but the sequence has {limit} tokens"
            ));
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
    pub(super) fn check_ownership(
        &self,
        seq: SeqId,
        spans: &[Span],
        replacing: bool,
    ) -> Result<(), String> {
        let mut mine: HashMap<u32, bool> = HashMap::new();
        for s in spans {
            for &b in s.blocks.iter() {
                if let Some(&was) = mine.get(&b) {
                    if was != s.shared {
                        return Err(format!(
                            "block {b} is both shared and private in the context of sequence {seq}"
                        ));
                    }
                    continue;
                }
                mine.insert(b, s.shared);
                for &(other, other_shared) in self.holders.get(&b).into_iter().flatten() {
                    if other == seq {
                        if replacing {
                            continue;
                        }
                        return Err(format!(
                            "block {b} appears twice in the context of sequence {seq}"
                        ));
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
    pub(super) fn check_copies(&self, seq: SeqId, copies: &[CopyJob]) -> Result<Overlay, String> {
        let slots = (self.num_blocks * self.block_size) as u64;
        let mut overlay = Overlay::new();
        let mut sources = HashSet::new();
        for (i, c) in copies.iter().enumerate() {
            if c.len == 0
                || c.src as u64 + c.len as u64 > slots
                || c.dst as u64 + c.len as u64 > slots
            {
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
                    return Err(format!(
                        "copy {i} writes slot {dst}, which this plan also copies from or to"
                    ));
                }
                self.check_write(seq, dst, content.0, content.1)?;
            }
        }
        Ok(overlay)
    }

    pub(super) fn content(&self, overlay: &Overlay, slot: u32) -> (u32, u32) {
        overlay
            .get(&slot)
            .copied()
            .unwrap_or((self.slot_token[slot as usize], self.slot_pos[slot as usize]))
    }

    /// Each entry of `spans` either computed (`computed(span, offset)`), then recorded as a
    /// write, or verified to be in the pool already. Returns the writes, the cached count, and
    /// whether a cached entry is one this step computes (another sequence's write).
    pub(super) fn check_entries(
        &self,
        seq: SeqId,
        tokens: &[u32],
        spans: &[Span],
        overlay: &Overlay,
        computed: impl Fn(usize, u32) -> bool,
    ) -> Result<(Writes, usize, bool), String> {
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
                    let holds = if t == EMPTY {
                        "nothing".into()
                    } else {
                        format!("token {t} at position {p}")
                    };
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
        check_writes_distinct(seq, &writes)?;
        for &(slot, token, pos) in &writes {
            let held = self.content(overlay, slot);
            // Entries of the context at this slot for the position it holds: the write's own
            // entry among them when that is the position written.
            let others = entries_at(spans, slot, held.1, bs) - usize::from(held.1 == pos);
            check_not_kept(seq, (slot, token, pos), held, others)?;
        }
        Ok((writes, cached, fresh))
    }

    /// A slot another live sequence relies on may only be rewritten with the same content.
    pub(super) fn check_write(
        &self,
        seq: SeqId,
        slot: u32,
        token: u32,
        pos: u32,
    ) -> Result<(), String> {
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
}

pub(super) fn share_word(shared: bool) -> &'static str {
    if shared {
        "shared"
    } else {
        "private"
    }
}

/// How many entries of `spans` keep their keys, rotated for position `pos`, in `slot`.
pub(super) fn entries_at(spans: &[Span], slot: u32, pos: u32, block_size: u32) -> usize {
    spans
        .iter()
        .filter(|s| {
            (s.rotated_pos..s.rotated_pos + s.len).contains(&pos)
                && s.slot(pos - s.rotated_pos, block_size) == slot
        })
        .count()
}

/// No slot is written twice by one plan.
pub(super) fn check_writes_distinct(seq: SeqId, writes: &Writes) -> Result<(), String> {
    let mut written: Vec<u32> = writes.iter().map(|w| w.0).collect();
    written.sort_unstable();
    match written.windows(2).find(|w| w[0] == w[1]) {
        Some(w) => Err(format!(
            "slot {} appears twice in the context of sequence {seq}",
            w[0]
        )),
        None => Ok(()),
    }
}

/// A written slot is no other entry's: `held` is what it holds now, `kept` how many entries
/// of the context (other than the write) keep that there.
pub(super) fn check_not_kept(
    seq: SeqId,
    (slot, token, pos): (u32, u32, u32),
    held: (u32, u32),
    kept: usize,
) -> Result<(), String> {
    if held.1 != EMPTY && held != (token, pos) && kept > 0 {
        return Err(format!("slot {slot} appears twice in the context of sequence {seq}: it holds position {}, kept, and receives position {pos}", held.1));
    }
    Ok(())
}
