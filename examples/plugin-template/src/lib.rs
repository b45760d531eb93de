//! A complete nanohost strategy to start from: every sequence owns private blocks, handed out
//! lowest id first, and gives them back when it finishes. Change the policy in the `KvStrategy`
//! methods; the host checks every plan you return and names the rule a wrong one breaks, so
//! experiment freely.
//!
//! Where to start for a strategy that *evicts* (StreamingLLM, H2O, SnapKV, ...): `grow` is
//! called every step; answer `Growth::Replaced` with the spans you keep plus the new position,
//! and decide what to drop in `on_step`, which shows each token written. `plugins/streaming`
//! in the nanohost repository is a complete example.

use nanohost_strategy_api::*;
use std::collections::{BTreeSet, HashMap};

pub struct MyStrategy {
    pool: PoolInfo,
    /// An option (`--plugin-option min_free=N`): admit a sequence only if this many blocks stay
    /// free afterwards, as headroom for the decode steps of those already running.
    min_free: u32,
    /// Free block ids, lowest first.
    free: BTreeSet<u32>,
    /// The blocks each live sequence holds, in context order.
    held: HashMap<u64, Vec<u32>>,
    /// A counter of your own: it shows up in results under `strategy_counters`.
    blocks_handed_out: u64,
}

impl MyStrategy {
    /// Gives `seq` blocks for `len` tokens, keeping `keep_free` free; `false` (taking nothing)
    /// when the pool is short.
    fn reserve(&mut self, seq: u64, len: u32, keep_free: u32) -> bool {
        let have = self.held.get(&seq).map_or(0, Vec::len);
        let need = (len.div_ceil(self.pool.block_size) as usize).saturating_sub(have);
        if need + keep_free as usize > self.free.len() {
            return false;
        }
        let taken: Vec<u32> = (0..need).filter_map(|_| self.free.pop_first()).collect();
        self.blocks_handed_out += taken.len() as u64;
        self.held.entry(seq).or_default().extend(taken);
        true
    }

    /// The sequence's whole context as one private span from position 0.
    fn context(&self, seq: u64, len: u32) -> Span {
        Span::private(self.held[&seq].clone(), 0, len)
    }
}

impl KvStrategy for MyStrategy {
    fn new(pool: PoolInfo, options: &Options) -> Result<Self, String> {
        let min_free = options.u32("min_free", 0)?;
        Ok(MyStrategy { pool, min_free, free: (0..pool.num_blocks).collect(), held: HashMap::new(), blocks_handed_out: 0 })
    }

    /// Place a prompt: which blocks hold it and what the host must compute (here: all of it).
    fn admit(&mut self, r: &Request) -> Result<Admission, String> {
        let len = r.tokens.len() as u32;
        if !self.reserve(r.seq_id, len, self.min_free) {
            return Ok(Admission::NoRoom);
        }
        let jobs = vec![ComputeJob { context: vec![0].into(), len }];
        Ok(Admission::Admitted(Plan::new(vec![self.context(r.seq_id, len)], jobs, AttentionMode::Flat)))
    }

    /// Room for the next token(s): the last span grown, or `NoRoom` (the host preempts).
    fn grow(&mut self, seq: u64, target_len: u32) -> Result<Growth, String> {
        if !self.held.contains_key(&seq) {
            return Err(format!("grow for unknown sequence {seq}"));
        }
        Ok(if self.reserve(seq, target_len, 0) { Growth::Grown(self.context(seq, target_len)) } else { Growth::NoRoom })
    }

    /// The sequence finished or was preempted: free (or keep) its blocks. `tokens` is what they
    /// hold, replies included, should you want to cache them for a next turn.
    fn release(&mut self, seq: u64, _tokens: &[u32]) -> Result<(), String> {
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
