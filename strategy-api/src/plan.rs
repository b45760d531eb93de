//! The plain-data vocabulary a strategy speaks: requests in, plans and spans out.
//!
//! Positions and lengths are in tokens; block ids index the host's KV pool (`0..num_blocks`).

use abi_stable::std_types::{RString, RVec};
use abi_stable::StableAbi;

/// What the host's pool looks like; given to a strategy when it is created.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolInfo {
    pub num_blocks: u32,
    /// Tokens per block.
    pub block_size: u32,
    /// Bytes of K and V of one block over all layers.
    pub bytes_per_block: u64,
}

#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChunkKind {
    SystemPrompt,
    Context,
    Query,
}

/// A typed piece of a chunked request: tokens `start..start + len` of [`Request::tokens`],
/// addressed by the SHA-256 of its type and text.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub kind: ChunkKind,
    pub start: u32,
    pub len: u32,
    pub hash: [u8; 32],
}

/// A sequence to place. `tokens` is the whole context to hold (on recompute after preemption,
/// the prompt plus what was generated). `chunks` is empty for plain prompts.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub seq_id: u64,
    pub tokens: RVec<u32>,
    pub chunks: RVec<Chunk>,
}

/// An ordered run of a sequence's context.
///
/// It holds `len` tokens in the first `len` slots of `blocks` (slot `j` is in
/// `blocks[j / block_size]`), so `blocks.len() == ceil(len / block_size)`. `start_pos` is the
/// logical position of its first token: spans of a context are contiguous, each starting where the
/// previous one ended. `rotated_pos` is the position its keys were rotated for when computed;
/// the host re-rotates at attention time when the two differ. `shared` spans may appear in
/// several live sequences; a block of a private span belongs to one live sequence only.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct Span {
    pub blocks: RVec<u32>,
    pub len: u32,
    pub start_pos: u32,
    pub rotated_pos: u32,
    pub shared: bool,
}

/// Tokens the host must run through the model.
///
/// `context` lists span indices (into [`Plan::spans`], increasing); the job computes the *last*
/// `len` entries of those spans taken together, each attending causally to everything before it
/// in that list. So `[i]` with `len == spans[i].len` computes span `i` in isolation, and
/// `[0, 1, 2]` computes the tail of span 2 after spans 0 and 1.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct ComputeJob {
    pub context: RVec<u32>,
    pub len: u32,
}

/// How the sequence's decode steps attend.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionMode {
    /// One paged pass over all spans.
    Flat,
    /// Shared spans are attended once for the group of sequences holding them, the rest per
    /// sequence, merged by log-sum-exp.
    Cascade,
}

/// Where a request's KV lives and what must be computed. Every request token is either computed
/// by a job or already in the pool (the host checks the pool holds exactly those tokens at
/// those positions). The last token must be computed: its logits give the first output.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub spans: RVec<Span>,
    pub jobs: RVec<ComputeJob>,
    pub mode: AttentionMode,
}

#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    Admitted(Plan),
    /// No room in the pool now; the host retries after other sequences finish.
    NoRoom,
}

/// A named counter a strategy reports (hits, misses, evictions, ...).
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct Counter {
    pub name: RString,
    pub value: u64,
}

#[repr(C)]
#[derive(StableAbi, Clone, Debug, Default, PartialEq)]
pub struct StrategyStats {
    /// Blocks holding KV, live or retained.
    pub blocks_in_use: u32,
    pub counters: RVec<Counter>,
}

/// Who the plugin is.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct PluginInfo {
    pub name: RString,
    pub version: RString,
    pub description: RString,
}
