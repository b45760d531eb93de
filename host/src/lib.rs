//! nanohost: a benchmark host for KV-cache strategies on Qwen3.
//!
//! Data path: request → scheduler ([`engine::scheduler`]) → KV policy ([`engine::kv_policy`]) →
//! packed batch ([`engine::runner`]) → model ([`model::qwen3`]) → kernels (`nanohost-kernels`) →
//! sampler ([`engine::sampler`]).

pub mod bench;
pub mod cli;
pub mod device;
pub mod engine;
pub mod fsutil;
pub mod model;
pub mod plugin;
pub mod rng;
pub mod train;
pub mod workload;
