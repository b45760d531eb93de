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
//! nanohost-strategy-api = { path = "…/strategy-api" }
//! abi_stable = "0.11.3"   # used by the export macro
//! ```
//!
//! `src/lib.rs`: the standard strategy that ships with nanohost, complete. Every sequence gets
//! blocks of its own; nothing is shared or kept.
//!
#![doc = concat!("```\n", include_str!("../../plugins/standard/src/lib.rs"), "\n```")]
//!
//! Build it with `cargo build --release` and run `nanohost run --plugin target/release/libyours.so`.
//! `examples/plugin-template/` in the nanohost repository is the same as a crate of its own to
//! copy, with a README from copy to run.
//!
//! # The contract
//!
//! - [`KvStrategy::admit`] returns a [`Plan`]: the sequence's context as [`Span`]s and the
//!   [`ComputeJob`]s that fill what is not already in the pool. The host rejects, naming your
//!   plugin and the rule: block ids outside the pool; a block of a private span held by another
//!   live sequence; spans whose positions are not contiguous or whose lengths do not add up to the
//!   request; cached entries whose pool slots do not hold the request's tokens at those positions;
//!   a plan that does not compute the last token.
//! - [`KvStrategy::append_slot`] grows the last span by a decode slot; it must stay private.
//! - Panics are caught and reported; a strategy that panicked is not called again.
//!
//! # ABI policy
//!
//! The ABI version is this crate's version ([`ABI_VERSION`]). Appending a field at the end of the
//! root module [`StrategyMod`] (a prefix type) or a method after the last one of [`Strategy`] keeps
//! old plugins loadable: the host sees the field as absent. Changing any plan type, reordering or
//! removing fields, or changing a signature bumps the version (minor while 0.x, major after), and
//! the host refuses a plugin built for an incompatible version with an error naming both versions
//! (`built for strategy ABI 9.0.0, but this host speaks ABI 0.1.0`); `nanohost list` shows the
//! version each plugin was built for, and every result records it under `plugin.abi`.

pub use abi_stable;

mod module;
mod plan;
mod strategy;

pub use module::{StrategyMod, StrategyModRef, ABI_VERSION};
pub use plan::{
    Admission, AttentionMode, Chunk, ChunkKind, ComputeJob, Counter, Plan, PluginInfo, PoolInfo, Request, Span,
    StrategyStats,
};
pub use strategy::{catch_panic, new_boxed, Guarded, KvStrategy, Strategy, StrategyBox, Strategy_TO};
