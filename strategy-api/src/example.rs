use nanohost_strategy_api::*;
use std::collections::HashMap;

/// Every sequence owns the blocks of one private span; released blocks go straight back.
pub struct Standard {
    pool: PoolInfo,
    free: Vec<u32>,
    owned: HashMap<u64, Vec<u32>>,
}

impl Standard {
    /// Takes blocks so `seq` holds `len` tokens; `false` (and nothing taken) if too few are free.
    fn reserve(&mut self, seq: u64, len: u32) -> bool {
        let blocks = self.owned.entry(seq).or_default();
        let need = (len.div_ceil(self.pool.block_size) as usize).saturating_sub(blocks.len());
        if need > self.free.len() {
            return false;
        }
        blocks.extend(self.free.drain(self.free.len() - need..));
        true
    }

    fn span(&self, seq: u64, len: u32) -> Span {
        Span::private(self.owned[&seq].clone(), 0, len)
    }
}

impl KvStrategy for Standard {
    fn new(pool: PoolInfo, _options: &Options) -> Result<Self, String> {
        Ok(Standard { pool, free: (0..pool.num_blocks).rev().collect(), owned: HashMap::new() })
    }

    fn admit(&mut self, r: &Request) -> Result<Admission, String> {
        let len = r.tokens.len() as u32;
        if !self.reserve(r.seq_id, len) {
            self.owned.remove(&r.seq_id);
            return Ok(Admission::NoRoom);
        }
        // One span holding the whole prompt; one job computing all of it.
        let jobs = vec![ComputeJob { context: vec![0].into(), len }];
        Ok(Admission::Admitted(Plan::new(vec![self.span(r.seq_id, len)], jobs, AttentionMode::Flat)))
    }

    fn grow(&mut self, seq: u64, target_len: u32) -> Result<Growth, String> {
        if !self.owned.contains_key(&seq) {
            return Err(format!("grow for unknown sequence {seq}"));
        }
        Ok(if self.reserve(seq, target_len) { Growth::Grown(self.span(seq, target_len)) } else { Growth::NoRoom })
    }

    fn release(&mut self, seq: u64, _tokens: &[u32]) -> Result<(), String> {
        let blocks = self.owned.remove(&seq).ok_or(format!("release of unknown sequence {seq}"))?;
        self.free.extend(blocks);
        Ok(())
    }

    fn stats(&self) -> StrategyStats {
        let in_use = self.pool.num_blocks - self.free.len() as u32;
        StrategyStats { blocks_in_use: in_use, counters: Default::default() }
    }
}

export_strategy!(
    Standard,
    name: "standard",
    version: env!("CARGO_PKG_VERSION"),
    description: "Standard KV Cache: every sequence owns its blocks; nothing shared, nothing kept",
);
