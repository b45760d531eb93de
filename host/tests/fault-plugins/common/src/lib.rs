//! A private-blocks strategy with one injected fault, selected by the exporting crate.

use nanohost_strategy_api::*;
use std::collections::HashMap;

pub trait Fault: Send + 'static {
    /// Runs at the start of every admission; may panic, abort, crash or hang.
    fn on_admit(&self) {}
    /// Rewrites the blocks a sequence was given.
    fn blocks(&self, _seq: u64, blocks: Vec<u32>, _pool: &PoolInfo) -> Vec<u32> {
        blocks
    }
    fn new() -> Self;
}

pub struct Faulty<F: Fault> {
    fault: F,
    pool: PoolInfo,
    next: u32,
    owned: HashMap<u64, Vec<u32>>,
}

impl<F: Fault> Faulty<F> {
    fn span(&self, seq: u64, len: u32) -> Span {
        let blocks = self.fault.blocks(seq, self.owned[&seq].clone(), &self.pool);
        Span::private(blocks, 0, len)
    }

    fn reserve(&mut self, seq: u64, len: u32) {
        let need = len.div_ceil(self.pool.block_size) as usize;
        let blocks = self.owned.entry(seq).or_default();
        while blocks.len() < need {
            blocks.push(self.next % self.pool.num_blocks);
            self.next += 1;
        }
    }
}

impl<F: Fault> KvStrategy for Faulty<F> {
    fn new(pool: PoolInfo, _options: &Options) -> Result<Self, String> {
        Ok(Faulty { fault: F::new(), pool, next: 0, owned: HashMap::new() })
    }
    fn admit(&mut self, r: &Request) -> Result<Admission, String> {
        self.fault.on_admit();
        let len = r.tokens.len() as u32;
        self.reserve(r.seq_id, len);
        let plan = Plan::new(vec![self.span(r.seq_id, len)], vec![ComputeJob { context: vec![0].into(), len }], AttentionMode::Flat);
        Ok(Admission::Admitted(plan))
    }
    fn grow(&mut self, seq: u64, new_len: u32) -> Result<Growth, String> {
        self.reserve(seq, new_len);
        Ok(Growth::Grown(self.span(seq, new_len)))
    }
    fn release(&mut self, seq: u64, _tokens: &[u32]) -> Result<(), String> {
        self.owned.remove(&seq);
        Ok(())
    }
    fn stats(&self) -> StrategyStats {
        StrategyStats { blocks_in_use: self.owned.values().map(|b| b.len() as u32).sum(), counters: Default::default() }
    }
}

/// Declares a fault type and exports it as a plugin named `fault-<name>`.
#[macro_export]
macro_rules! fault_plugin {
    ($name:literal, $fault:ident { $($body:tt)* }) => {
        pub struct $fault;
        impl $crate::Fault for $fault {
            fn new() -> Self { $fault }
            $($body)*
        }
        nanohost_strategy_api::export_strategy!(
            $crate::Faulty<$fault>,
            name: concat!("fault-", $name),
            version: "0.0.1",
            description: concat!("TEST ONLY: ", $name),
        );
    };
}
