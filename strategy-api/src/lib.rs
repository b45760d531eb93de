//! The stable ABI between the nanohost host and KV-cache strategy plugins.
//!
//! A strategy decides *policy*: which pool blocks hold which tokens, what is shared between
//! sequences, what is kept after a sequence finishes. It sees token ids and block ids, never
//! tensors. The host owns memory and math, validates every plan a strategy returns, and runs
//! each plugin in its own process, so a buggy plugin produces a reported failure, not corrupted
//! results.
//!
//! # Writing a plugin
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! # from a nanohost checkout, or git = "https://…/nanohost", tag = "…" (see the template)
//! nanohost-strategy-api = { path = "…/strategy-api" }
//! abi_stable = "0.11.3"   # used by the export macro
//! ```
//!
//! `src/lib.rs`: the standard strategy that ships with nanohost, complete. Every sequence gets
//! blocks of its own; nothing is shared or kept.
//!
#![doc = concat!("```\n", include_str!("example.rs"), "\n```")]
//!
//! Build it with `cargo build --release` and run `nanohost run --plugin target/release/libyours.so`.
//! `examples/plugin-template/` in the nanohost repository is the same as a crate of its own to
//! copy, with a README from copy to run.
//!
//! # The contract
//!
//! - [`KvStrategy::admit`] returns a [`Plan`]: the sequence's context as [`Span`]s, the
//!   [`ComputeJob`]s that fill what is not already in the pool, and any [`CopyJob`]s the host
//!   runs first. The host rejects, naming your plugin and the rule: block ids outside the pool;
//!   a block of a private span held by another live sequence; spans out of position order;
//!   cached entries whose pool slots do not hold the request's tokens at those positions; a plan
//!   whose spans do not end with the last computed token.
//! - [`KvStrategy::grow`] makes room for the next positions: [`Growth::Grown`] grows the last
//!   span (every decode step of a strategy that keeps everything), [`Growth::Replaced`] gives a
//!   whole new context (eviction), [`Growth::NoRoom`] makes the host preempt.
//! - [`KvStrategy::release`] gets the sequence's final tokens, so replies can be cached for the
//!   next turn; [`KvStrategy::on_step`] sees each decode token the host wrote.
//! - [`KvStrategy::new`] reads its options through [`Options`]; an unknown one is an error.
//! - Panics are caught and reported; a strategy that panicked is not called again.
//!
//! # A strategy that evicts
//!
//! A context may be any ordered subset of a sequence's positions. Each kept token keeps its
//! position (RoPE stays exact) and new tokens continue from the sequence's true length. To drop
//! tokens, answer [`Growth::Replaced`] with the spans you keep plus the new position(s) as the
//! last entries. A span may begin at any slot of its first block ([`Span::from_slot`]), so a
//! sliding window frees its oldest block as soon as the window has left it, and a block may hold
//! several spans of one context (different slots), as a ring of blocks does where it wraps.
//! `Replaced` may be answered at any step, evicting or not; the host checks every kept slot
//! still holds its token at its position.
//!
//! ```
//! use nanohost_strategy_api::*;
//! // Blocks of 16 slots. The sequence holds positions 0..4 (attention sinks, block 7) and the
//! // window 70..100 (from slot 6 of block 3, then blocks 9 and 2). At `grow(seq, 101)`, keep
//! // the sinks, drop position 70, and place the new position 100 at the window's end.
//! let kept = vec![Span::private(vec![7], 0, 4), Span::private(vec![3, 9, 2], 71, 30).from_slot(7)];
//! assert_eq!(kept[1].slot(29, 16), 2 * 16 + 4); // position 100: block 2, slot 4
//! let answer = Growth::Replaced(Context { spans: kept.into(), copies: Default::default() });
//! # let _ = answer;
//! ```
//!
//! A prompt longer than the pool lets you hold ([`PoolInfo::num_blocks`] blocks for every
//! sequence together) is prefilled in pieces: admit a plan whose spans cover the first piece,
//! and each later `grow` (its `target_len` is the prompt's length) adds the next piece while
//! dropping what falls out. The first output comes once the spans reach the prompt's end.
//! nanohost's `plugins/streaming` (StreamingLLM) is a complete evicting plugin; its source is in
//! the nanohost repository.
//!
//! # What the host measures for every strategy
//!
//! Each result records, whatever the strategy's own counters: `peak_kv_blocks` and
//! `peak_kv_bytes` (blocks live sequences held at the worst step, as the host's plan ledger saw
//! them), `peak_kv_bytes_reported_by_strategy` (from [`StrategyStats::blocks_in_use`], which
//! counts retained blocks too), `tokens_reused` (prompt tokens admitted already in the pool),
//! `tokens_evicted` and `blocks_evicted` (entries dropped from live contexts, and blocks live
//! sequences stopped holding), `strategy_counters` (your [`Counter`]s), `plugin.options` (every
//! option your strategy read, with the value it got) and `plugin.options_given` (what the user
//! gave), beside throughput, time to first token and output-token digests.

//! # ABI policy
//!
//! The ABI version is this crate's version ([`ABI_VERSION`]); the host records it per plugin
//! (`nanohost list`, `plugin.abi` in every result). What abi_stable 0.11 actually checks, and
//! the host's tests show with real builds (`host/tests/abi_versions.rs`):
//!
//! - **Major versions must match.** A plugin built for 2.x (or 0.x) in a 1.x host is refused
//!   with both versions and abi_stable's reason in one line.
//! - **A newer plugin loads in an older host of the same major.** A minor release may only
//!   append: fields at the end of the root module [`StrategyMod`] (a prefix type) or methods
//!   after the last one of [`Strategy`]. A plugin built against 1.1 that has them runs in a 1.0
//!   host, which never calls what it does not know.
//! - **An older plugin does not load in a host whose minor appended something.** abi_stable
//!   requires the plugin's module and trait to have at least the host's fields ("too many
//!   fields": the host expects more than the plugin has). So a host upgraded to such a minor
//!   needs its plugins rebuilt; a release that appends nothing keeps them loadable.
//! - Changing any plan type, reordering or removing anything, or changing a signature is a new
//!   major version.

pub use abi_stable;

mod module;
mod options;
mod plan;
mod strategy;

pub use module::{StrategyMod, StrategyModRef, ABI_VERSION};
pub use options::{OptionValue, Options, PluginOption};
pub use plan::{
    Admission, Appended, AttentionMode, Chunk, ChunkKind, ComputeJob, Context, CopyJob, Counter,
    Growth, LayerRange, Plan, PluginInfo, PoolInfo, Request, Span, StepInfo, StrategyStats,
};
pub use strategy::{
    catch_panic, new_boxed, Guarded, KvStrategy, Strategy, StrategyBox, Strategy_TO,
};
