//! Workloads: the prompts of each benchmark point, independent of the strategy that runs them.

pub mod chunks;
mod chunked;
mod engine_speed;
mod shared_prefix;
mod standard;

use crate::bench::config::BenchConfig;
use anyhow::{bail, Result};
use tokenizers::Tokenizer;

/// One request's input. `chunks` describe a chunked request's typed pieces (empty for plain
/// prompts); `wave` orders requests into batches that run one after another on the same strategy
/// (the chunked-reuse workload's 5 batches), 0 for everything else. `max_tokens` overrides the
/// config's `max_output_len` for workloads whose requests want different output lengths.
#[derive(Clone, Debug, PartialEq)]
pub struct Prompt {
    pub tokens: Vec<u32>,
    pub chunks: Vec<nanohost_strategy_api::Chunk>,
    pub wave: usize,
    pub max_tokens: Option<usize>,
}

impl Prompt {
    pub fn plain(tokens: Vec<u32>) -> Self {
        Prompt { tokens, chunks: Vec::new(), wave: 0, max_tokens: None }
    }
}

/// One benchmark point: the prompts of one batch.
#[derive(Clone, Debug)]
pub struct Point {
    pub workload: String,
    pub batch_size: usize,
    pub prompts: Vec<Prompt>,
    /// Workload-specific result keys (e.g. `shared_prefix_len`).
    pub extra: serde_json::Map<String, serde_json::Value>,
}

pub trait Workload {
    fn name(&self) -> &'static str;
    /// Every point, deterministic from the config's seed.
    fn points(&self, cfg: &BenchConfig, vocab_size: usize, tokenizer: &Tokenizer) -> Result<Vec<Point>>;
}

pub const NAMES: [&str; 8] = ["standard", "shared-prefix", "long-prefix", "chunked", "chunked-reuse", "long-chunked", "throughput", "latency"];

pub fn by_name(name: &str) -> Result<Box<dyn Workload>> {
    match name {
        "standard" => Ok(Box::new(standard::Standard)),
        "shared-prefix" => Ok(Box::new(shared_prefix::SharedPrefix::prototype())),
        "long-prefix" => Ok(Box::new(shared_prefix::SharedPrefix::long())),
        "chunked" => Ok(Box::new(chunked::Chunked)),
        "chunked-reuse" => Ok(Box::new(chunked::ChunkedReuse)),
        "long-chunked" => Ok(Box::new(chunked::LongChunked)),
        "throughput" => Ok(Box::new(engine_speed::Throughput)),
        "latency" => Ok(Box::new(engine_speed::Latency)),
        other => bail!("unknown workload \"{other}\"; known workloads: {}", NAMES.join(", ")),
    }
}
