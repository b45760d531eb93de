//! A strategy plugin as the engine's KV policy: every answer is checked by the ledger, and every
//! failure names the plugin.

use super::ledger::Ledger;
use crate::engine::kv_policy::{HostCounters, KvPolicy, Placement, SeqStep};
use crate::engine::sequence::SeqId;
use anyhow::{anyhow, Result};
use nanohost_strategy_api::abi_stable::std_types::{RResult, RString};
use nanohost_strategy_api::{
    Admission, Appended, Chunk, Growth, PoolInfo, Request, StepInfo, StrategyBox, StrategyStats,
};

pub struct PluginPolicy {
    name: String,
    strategy: StrategyBox,
    ledger: Ledger,
    steps: u64,
}

impl PluginPolicy {
    pub fn new(name: &str, strategy: StrategyBox, pool: PoolInfo) -> Self {
        PluginPolicy {
            name: name.to_string(),
            strategy,
            ledger: Ledger::new(pool.num_blocks as usize, pool.block_size as usize),
            steps: 0,
        }
    }

    fn call<T>(&self, what: &str, r: RResult<T, RString>) -> Result<T> {
        r.into_result()
            .map_err(|e| anyhow!("plugin `{}` failed in {what}: {e}", self.name))
    }

    fn broke(&self, rule: String) -> anyhow::Error {
        anyhow!("plugin `{}` returned an invalid plan: {rule}", self.name)
    }

    /// Every option the strategy read, with the value it got (given or its default).
    pub fn options(&self) -> Vec<nanohost_strategy_api::PluginOption> {
        self.strategy.options().into()
    }

    pub fn stats(&self) -> Result<StrategyStats> {
        let answer = self.strategy.stats();
        self.call("stats", answer)
    }
}

impl KvPolicy for PluginPolicy {
    fn begin_step(&mut self) {
        self.ledger.begin_step();
    }

    fn admit(&mut self, seq: SeqId, tokens: &[u32], chunks: &[Chunk]) -> Result<Option<Placement>> {
        let request = Request {
            seq_id: seq,
            tokens: tokens.to_vec().into(),
            chunks: chunks.to_vec().into(),
        };
        let answer = self.strategy.admit(&request);
        match self.call("admit", answer)? {
            Admission::NoRoom => Ok(None),
            Admission::Admitted(plan) => {
                let checked = self
                    .ledger
                    .check_admission(
                        seq,
                        tokens,
                        plan.spans.into(),
                        &plan.jobs,
                        plan.copies.into(),
                        plan.mode,
                    )
                    .map_err(|e| self.broke(e))?;
                Ok(Some(self.ledger.apply(checked)))
            }
        }
    }

    fn grow(&mut self, seq: SeqId, tokens: &[u32]) -> Result<Option<SeqStep>> {
        let answer = self.strategy.grow(seq, tokens.len() as u32);
        let checked = match self.call("grow", answer)? {
            Growth::NoRoom => return Ok(None),
            Growth::Grown(span) => self.ledger.check_grown(seq, tokens, span),
            Growth::Replaced(ctx) => {
                self.ledger
                    .check_replaced(seq, tokens, ctx.spans.into(), ctx.copies.into())
            }
        };
        let checked = checked.map_err(|e| self.broke(e))?;
        Ok(Some(self.ledger.apply(checked)))
    }

    fn set_last_token(&mut self, seq: SeqId, token: u32) -> Result<()> {
        self.ledger
            .set_last_token(seq, token)
            .map_err(|e| anyhow!("host bookkeeping: {e}"))
    }

    fn on_step(&mut self, appended: &[Appended]) -> Result<()> {
        let appended: Vec<Appended> = appended
            .iter()
            .filter(|a| self.ledger.is_live(a.seq_id))
            .copied()
            .collect();
        let info = StepInfo {
            step: self.steps,
            appended: appended.into(),
        };
        self.steps += 1;
        let answer = self.strategy.on_step(&info);
        self.call("on_step", answer)
    }

    fn release(&mut self, seq: SeqId, tokens: &[u32]) -> Result<()> {
        let answer = self.strategy.release(seq, tokens.into());
        self.call("release", answer)?;
        self.ledger
            .release(seq)
            .map_err(|e| anyhow!("host bookkeeping: {e}"))
    }

    fn host_counters(&self) -> HostCounters {
        HostCounters {
            tokens_evicted: self.ledger.tokens_evicted,
            blocks_evicted: self.ledger.blocks_evicted,
        }
    }

    fn live_blocks(&self) -> usize {
        self.ledger.live_blocks()
    }

    fn reported_blocks(&self) -> Result<usize> {
        Ok(self.stats()?.blocks_in_use as usize)
    }

    fn counters(&self) -> Result<Vec<(String, u64)>> {
        Ok(self
            .stats()?
            .counters
            .iter()
            .map(|c| (c.name.to_string(), c.value))
            .collect())
    }
}
