//! A strategy plugin as the engine's KV policy: every answer is checked by the ledger, and every
//! failure names the plugin.

use super::ledger::Ledger;
use crate::engine::kv_policy::{KvPolicy, Placement};
use crate::engine::sequence::SeqId;
use anyhow::{anyhow, Result};
use nanohost_kernels::KvSpan;
use nanohost_strategy_api::abi_stable::std_types::{ROption, RResult};
use nanohost_strategy_api::{Admission, Chunk, PoolInfo, Request, StrategyBox, StrategyStats};

pub struct PluginPolicy {
    name: String,
    strategy: StrategyBox,
    ledger: Ledger,
}

impl PluginPolicy {
    pub fn new(name: &str, strategy: StrategyBox, pool: PoolInfo) -> Self {
        PluginPolicy {
            name: name.to_string(),
            strategy,
            ledger: Ledger::new(pool.num_blocks as usize, pool.block_size as usize),
        }
    }

    fn call<T>(&self, what: &str, r: RResult<T, nanohost_strategy_api::abi_stable::std_types::RString>) -> Result<T> {
        r.into_result().map_err(|e| anyhow!("plugin `{}` failed in {what}: {e}", self.name))
    }

    fn broke(&self, rule: String) -> anyhow::Error {
        anyhow!("plugin `{}` returned an invalid plan: {rule}", self.name)
    }

    pub fn stats(&self) -> Result<StrategyStats> {
        let answer = self.strategy.stats();
        self.call("stats", answer)
    }
}

impl KvPolicy for PluginPolicy {
    fn admit(&mut self, seq: SeqId, tokens: &[u32], chunks: &[Chunk]) -> Result<Option<Placement>> {
        let request = Request { seq_id: seq, tokens: tokens.to_vec().into(), chunks: chunks.to_vec().into() };
        let answer = self.strategy.admit(&request);
        match self.call("admit", answer)? {
            Admission::NoRoom => Ok(None),
            Admission::Admitted(plan) => {
                let checked = self.ledger.check_admission(seq, tokens, &plan).map_err(|e| self.broke(e))?;
                Ok(Some(self.ledger.apply_admission(seq, checked)))
            }
        }
    }

    fn grow(&mut self, seq: SeqId, tokens: &[u32]) -> Result<Option<Vec<KvSpan>>> {
        let answer = self.strategy.append_slot(seq, tokens.len() as u32);
        match self.call("append_slot", answer)? {
            ROption::RNone => Ok(None),
            ROption::RSome(span) => self.ledger.apply_append(seq, tokens, span).map(Some).map_err(|e| self.broke(e)),
        }
    }

    fn set_last_token(&mut self, seq: SeqId, token: u32) -> Result<()> {
        self.ledger.set_last_token(seq, token).map_err(|e| anyhow!("host bookkeeping: {e}"))
    }

    fn release(&mut self, seq: SeqId) -> Result<()> {
        let answer = self.strategy.release(seq);
        self.call("release", answer)?;
        self.ledger.release(seq).map_err(|e| anyhow!("host bookkeeping: {e}"))
    }

    fn live_blocks(&self) -> usize {
        self.ledger.live_blocks()
    }

    fn reported_blocks(&self) -> Result<usize> {
        Ok(self.stats()?.blocks_in_use as usize)
    }

    fn counters(&self) -> Result<Vec<(String, u64)>> {
        Ok(self.stats()?.counters.iter().map(|c| (c.name.to_string(), c.value)).collect())
    }
}
