//! Which pool blocks hold which sequence's tokens: the policy seam of the engine.
//!
//! The scheduler asks a policy to admit a prompt, to grow a context by a decode slot and to
//! release a finished sequence. The one implementation, `plugin::PluginPolicy`, asks a strategy
//! plugin and validates its answer; the engine only ever sees validated placements.

use super::sequence::SeqId;
use anyhow::Result;
use nanohost_kernels::KvSpan;
use nanohost_strategy_api::{Appended, Chunk, CopyJob};

/// Tokens to run through the model: their KV fills the last `tokens.len()` entries of
/// `context`, and each attends causally to everything before it there.
#[derive(Clone, Debug, PartialEq)]
pub struct HostJob {
    pub context: Vec<KvSpan>,
    pub tokens: Vec<u32>,
    pub positions: Vec<u32>,
}

impl HostJob {
    /// Computes `tokens[from..]`, at positions `from..`, as the tail of `context`.
    pub fn tail(context: &[KvSpan], tokens: &[u32], from: usize) -> Self {
        HostJob {
            context: context.to_vec(),
            tokens: tokens[from..].to_vec(),
            positions: (from as u32..tokens.len() as u32).collect(),
        }
    }
}

/// What the next step computes for one sequence and where its context then lives: an
/// admission's or a growth's answer, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct SeqStep {
    /// The whole context, in order.
    pub context: Vec<KvSpan>,
    pub jobs: Vec<HostJob>,
    /// The job whose last row is the sequence's last token (its logits give the next output);
    /// `None` while a prompt is placed in pieces and its end is not reached yet.
    pub logits_job: Option<usize>,
    /// One past the last position placed.
    pub placed: usize,
    /// Slots to copy before the step's compute.
    pub copies: Vec<CopyJob>,
    /// Some entry claimed cached is computed in this same step by another sequence.
    pub cross_reads: bool,
}

/// A validated prompt placement.
#[derive(Clone, Debug, PartialEq)]
pub struct Placement {
    pub step: SeqStep,
    /// Prompt tokens already in the pool.
    pub cached_tokens: usize,
    /// The strategy asked for cascade attention: leading blocks this sequence holds in common
    /// with others are attended once for all of them.
    pub cascade: bool,
}

/// Counters the host keeps for every strategy, whatever it reports itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostCounters {
    /// Entries dropped from live contexts.
    pub tokens_evicted: u64,
    /// Blocks live sequences stopped holding while they stayed live.
    pub blocks_evicted: u64,
}

pub trait KvPolicy {
    /// A new step is being planned (admissions and growth until the next call belong to it).
    fn begin_step(&mut self);
    /// Places a prompt, or `None` when the pool has no room for it now.
    /// `chunks` describe a chunked request's typed pieces (empty for plain prompts).
    fn admit(&mut self, seq: SeqId, tokens: &[u32], chunks: &[Chunk]) -> Result<Option<Placement>>;
    /// Grows a context toward holding all of `tokens` (at a decode step the last one is the new
    /// token), or `None` when there is no room.
    fn grow(&mut self, seq: SeqId, tokens: &[u32]) -> Result<Option<SeqStep>>;
    /// The token `grow` was given last for `seq` was a placeholder; this is the one sampled.
    fn set_last_token(&mut self, seq: SeqId, token: u32) -> Result<()>;
    /// A step ran: the tokens growth placed in it (those of sequences since released are left
    /// out).
    fn on_step(&mut self, appended: &[Appended]) -> Result<()>;
    /// The sequence is finished or preempted; `tokens` are those whose KV the pool holds.
    fn release(&mut self, seq: SeqId, tokens: &[u32]) -> Result<()>;
    fn host_counters(&self) -> HostCounters;
    /// Pool blocks referenced by live sequences, as the host observes them.
    fn live_blocks(&self) -> usize;
    /// Blocks the strategy says it holds (live plus retained).
    fn reported_blocks(&self) -> Result<usize>;
    /// The strategy's own counters (hits, misses, evictions, ...).
    fn counters(&self) -> Result<Vec<(String, u64)>>;
}
