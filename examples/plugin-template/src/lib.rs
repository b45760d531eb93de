//! A complete nanohost strategy to start from: every sequence owns private blocks, handed out
//! lowest id first, and gives them back when it finishes. Change the policy in the four
//! `KvStrategy` methods; the host checks every plan you return and names the rule a wrong one
//! breaks, so experiment freely.

use nanohost_strategy_api::*;
use std::collections::{BTreeSet, HashMap};

pub struct MyStrategy {
    pool: PoolInfo,
    /// Free block ids, lowest first.
    free: BTreeSet<u32>,
    /// The blocks each live sequence holds, in context order.
    held: HashMap<u64, Vec<u32>>,
    /// A counter of your own: it shows up in results under `strategy_counters`.
    blocks_handed_out: u64,
}

impl MyStrategy {
    /// Grows `seq` to hold `len` tokens; `false` (taking nothing) when the pool is short.
    fn grow(&mut self, seq: u64, len: u32) -> bool {
        let have = self.held.get(&seq).map_or(0, Vec::len);
        let need = (len.div_ceil(self.pool.block_size) as usize).saturating_sub(have);
        if need > self.free.len() {
            return false;
        }
        let taken: Vec<u32> = (0..need).filter_map(|_| self.free.pop_first()).collect();
        self.blocks_handed_out += taken.len() as u64;
        self.held.entry(seq).or_default().extend(taken);
        true
    }

    /// The sequence's whole context as one private span starting at position 0.
    fn context(&self, seq: u64, len: u32) -> Span {
        Span { blocks: self.held[&seq].clone().into(), len, start_pos: 0, rotated_pos: 0, shared: false }
    }
}

impl KvStrategy for MyStrategy {
    fn new(pool: PoolInfo) -> Result<Self, String> {
        Ok(MyStrategy { pool, free: (0..pool.num_blocks).collect(), held: HashMap::new(), blocks_handed_out: 0 })
    }

    /// Place a prompt: which blocks hold it and what the host must compute (here: all of it).
    fn admit(&mut self, r: &Request) -> Result<Admission, String> {
        let len = r.tokens.len() as u32;
        if !self.grow(r.seq_id, len) {
            return Ok(Admission::NoRoom);
        }
        let spans = vec![self.context(r.seq_id, len)].into();
        let jobs = vec![ComputeJob { context: vec![0].into(), len }].into();
        Ok(Admission::Admitted(Plan { spans, jobs, mode: AttentionMode::Flat }))
    }

    /// Room for one more (decode) token, or `None` when the pool is full (the host preempts).
    fn append_slot(&mut self, seq: u64, new_len: u32) -> Result<Option<Span>, String> {
        if !self.held.contains_key(&seq) {
            return Err(format!("append_slot for unknown sequence {seq}"));
        }
        Ok(self.grow(seq, new_len).then(|| self.context(seq, new_len)))
    }

    /// The sequence finished or was preempted: free (or keep) its blocks.
    fn release(&mut self, seq: u64) -> Result<(), String> {
        let blocks = self.held.remove(&seq).ok_or(format!("release of unknown sequence {seq}"))?;
        self.free.extend(blocks);
        Ok(())
    }

    fn stats(&self) -> StrategyStats {
        let counters = vec![Counter { name: "blocks_handed_out".into(), value: self.blocks_handed_out }];
        StrategyStats { blocks_in_use: self.pool.num_blocks - self.free.len() as u32, counters: counters.into() }
    }
}

export_strategy!(
    MyStrategy,
    name: "my-strategy",
    version: env!("CARGO_PKG_VERSION"),
    description: "My Strategy: private blocks, lowest ids first",
);
