//! The host's record of what the pool holds, and the rules every strategy plan must follow.
//!
//! Plan first, apply after (as llama.cpp's memory module does): `check_*` only reads and returns
//! what the plan would change; `apply` records it. The ledger knows which token at which
//! position each slot holds, so a plan that claims KV is cached when it is not (a wrong prefix
//! match, a stale block, an evicted slot reused) is caught before any output is produced.
//! `plans.rs` checks each kind of plan, `rules.rs` holds the rules they share; this file is
//! the record and how an accepted plan changes it.

mod plans;
mod rules;

use crate::engine::sequence::SeqId;
use nanohost_kernels::KvSpan;
use nanohost_strategy_api::{CopyJob, Span};
use std::collections::HashMap;

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
    KvSpan {
        blocks: s.blocks.to_vec(),
        first: s.first_slot as usize,
        len: s.len as usize,
        shift: s.start_pos as i32 - s.rotated_pos as i32,
    }
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

    /// Records a checked plan and returns what the engine runs.
    pub fn apply<T>(&mut self, checked: Checked<T>) -> T {
        let Checked {
            answer,
            seq,
            copies,
            writes,
            mut spans,
            end,
            evicted: (dropped, freed),
            in_place,
            hold_from,
        } = checked;
        for c in &copies {
            for k in 0..c.len as usize {
                let (src, dst) = (c.src as usize + k, c.dst as usize + k);
                (self.slot_token[dst], self.slot_pos[dst]) =
                    (self.slot_token[src], self.slot_pos[src]);
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
                *live.spans.last_mut().expect("a context has spans") =
                    spans.pop().expect("a context has spans");
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
        let Some(span) = self.live.get(&seq).and_then(|l| l.spans.last()) else {
            return Err(format!("sequence {seq} is not live"));
        };
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

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fuzz;
