//! The plain-data vocabulary a strategy speaks: requests in, plans and spans out.
//!
//! Positions and lengths are in tokens; block ids index the host's KV pool (`0..num_blocks`);
//! a *slot* is one token's place in the pool, `block * block_size + offset`.

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
    /// Bytes of K and V of one token over all layers.
    pub bytes_per_token: u64,
    /// Layers of the model (for [`LayerRange`]).
    pub num_layers: u32,
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

/// The layers a span applies to: `first..end`. This host attends every span in every layer and
/// refuses any other range with a plan error; the field is here so that per-layer budgets
/// (PyramidKV) need no new ABI once the host supports them.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LayerRange {
    pub first: u32,
    pub end: u32,
}

impl LayerRange {
    pub const ALL: LayerRange = LayerRange {
        first: 0,
        end: u32::MAX,
    };
}

/// An ordered run of a sequence's context: `len` tokens at positions `start_pos..start_pos +
/// len`, in consecutive slots of `blocks` starting at slot `first_slot` of `blocks[0]`.
///
/// Entry `j` lives in `blocks[(first_slot + j) / block_size]` at offset `(first_slot + j) %
/// block_size`, so `blocks.len() == ceil((first_slot + len) / block_size)`. A context is a list
/// of spans in increasing position order; positions may skip (evicted tokens), and each kept
/// token keeps its true position, so RoPE stays exact. `rotated_pos` is the position the keys
/// were rotated for when computed; the host re-rotates at attention time when it differs from
/// `start_pos` (chunk reuse). `shared` spans may appear in several live sequences; a block of a
/// private span belongs to one live sequence only.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct Span {
    pub blocks: RVec<u32>,
    pub first_slot: u32,
    pub len: u32,
    pub start_pos: u32,
    pub rotated_pos: u32,
    pub shared: bool,
    pub layers: LayerRange,
}

impl Span {
    /// A private span of `len` tokens from position `start_pos`, from the first slot of
    /// `blocks[0]`, keys rotated where they sit, in every layer.
    pub fn private(blocks: impl Into<RVec<u32>>, start_pos: u32, len: u32) -> Span {
        Span {
            blocks: blocks.into(),
            first_slot: 0,
            len,
            start_pos,
            rotated_pos: start_pos,
            shared: false,
            layers: LayerRange::ALL,
        }
    }

    /// The same, marked shared.
    pub fn shared(blocks: impl Into<RVec<u32>>, start_pos: u32, len: u32) -> Span {
        Span {
            shared: true,
            ..Span::private(blocks, start_pos, len)
        }
    }

    /// The span with its first token at slot `first_slot` of its first block.
    pub fn from_slot(self, first_slot: u32) -> Span {
        Span { first_slot, ..self }
    }

    /// The span with keys that were rotated for `rotated_pos` (computed elsewhere).
    pub fn rotated_for(self, rotated_pos: u32) -> Span {
        Span {
            rotated_pos,
            ..self
        }
    }

    /// One past the position of its last token.
    pub fn end_pos(&self) -> u32 {
        self.start_pos + self.len
    }

    /// The pool slot of entry `j`.
    pub fn slot(&self, j: u32, block_size: u32) -> u32 {
        let at = self.first_slot + j;
        self.blocks[(at / block_size) as usize] * block_size + at % block_size
    }
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

/// Copies the KV of pool slots `src..src + len` to `dst..dst + len` (slot ids, all layers),
/// before the step's compute: to take a cached partial block copy-on-write, or to compact a
/// context after eviction. The host checks it like the rest of a plan: the destination's
/// blocks must not be read by another live sequence, and no destination may be a source.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyJob {
    pub src: u32,
    pub dst: u32,
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

/// Where a request's KV lives and what must be computed.
///
/// Each entry of `spans` is either computed by a job or already in the pool (after `copies`):
/// the host checks the pool holds exactly that token at that position. The spans may cover
/// fewer positions than the request (an evicting strategy prefilling a long prompt in pieces):
/// they must end where the last job ends, and the host asks [`KvStrategy::grow`] for the rest,
/// one step at a time. Once the spans reach the request's last token, its logits give the
/// first output.
///
/// [`KvStrategy::grow`]: crate::KvStrategy::grow
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub spans: RVec<Span>,
    pub jobs: RVec<ComputeJob>,
    pub copies: RVec<CopyJob>,
    pub mode: AttentionMode,
}

impl Plan {
    /// A plan with no copies.
    pub fn new(
        spans: impl Into<RVec<Span>>,
        jobs: impl Into<RVec<ComputeJob>>,
        mode: AttentionMode,
    ) -> Plan {
        Plan {
            spans: spans.into(),
            jobs: jobs.into(),
            copies: RVec::new(),
            mode,
        }
    }
}

#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    Admitted(Plan),
    /// No room in the pool now; the host retries after other sequences finish.
    NoRoom,
}

/// A live sequence's whole new context, for [`Growth::Replaced`].
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct Context {
    pub spans: RVec<Span>,
    pub copies: RVec<CopyJob>,
}

/// The answer to [`KvStrategy::grow`](crate::KvStrategy::grow).
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub enum Growth {
    /// The last span, grown at its end (same blocks first, same first slot and positions); the
    /// earlier spans unchanged. What a strategy that never evicts answers.
    Grown(Span),
    /// The whole context replaced: where a strategy evicts (drops entries, frees blocks) or
    /// compacts (with copies). The new positions are the tail of the last span; every other
    /// entry must already hold its token at its position (the host checks each slot).
    Replaced(Context),
    /// No room now: the host preempts a sequence (the most recently admitted) and asks again.
    NoRoom,
}

/// A token whose KV the host wrote at a decode step.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub seq_id: u64,
    pub pos: u32,
    pub token: u32,
}

/// What a step did, given to [`KvStrategy::on_step`](crate::KvStrategy::on_step).
#[repr(C)]
#[derive(StableAbi, Clone, Debug, Default, PartialEq, Eq)]
pub struct StepInfo {
    /// Counts the engine's steps from 0 for one strategy instance.
    pub step: u64,
    /// The decode tokens this step wrote, one per live decoding sequence.
    pub appended: RVec<Appended>,
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
