//! Workloads: the prompts of each benchmark point, independent of the strategy that runs them.

mod chunked;
pub mod chunks;
mod conversation;
mod engine_speed;
pub mod needles;
mod quality;
mod shared_prefix;
mod standard;
mod trace;

use crate::bench::config::BenchConfig;
use anyhow::{bail, Result};
use tokenizers::Tokenizer;

/// One request's input. `chunks` describe a chunked request's typed pieces (empty for plain
/// prompts); `wave` orders requests into batches that run one after another on the same strategy
/// (the chunked-reuse workload's 5 batches), 0 for everything else. `max_tokens` overrides the
/// config's `max_output_len` for workloads whose requests want different output lengths.
/// `continues`: the request is an earlier prompt of the point (by index, in an earlier wave)
/// with its reply, followed by `tokens` (the next turn of a conversation).
#[derive(Clone, Debug, PartialEq)]
pub struct Prompt {
    pub tokens: Vec<u32>,
    pub chunks: Vec<nanohost_strategy_api::Chunk>,
    pub wave: usize,
    pub max_tokens: Option<usize>,
    pub continues: Option<usize>,
    /// What a quality workload checks in this request's output (`None`: nothing).
    pub check: Option<Check>,
    /// When the request arrives, in seconds from the start of the timed call (`trace`
    /// workloads); `None`: at the start (or with its wave).
    pub arrival: Option<f64>,
}

/// A quality workload's check of one request; a point with checks runs greedily.
#[derive(Clone, Debug, PartialEq)]
pub enum Check {
    /// The output must begin with `answer` (decoded text). `cell` names the request's cell of
    /// the retrieval grid (context length and needle depth).
    Answer {
        answer: String,
        context_tokens: usize,
        depth_percent: u32,
    },
    /// Teacher forcing: these tokens are the output, each scored (perplexity).
    Forced(Vec<u32>),
}

impl Prompt {
    pub fn plain(tokens: Vec<u32>) -> Self {
        Prompt {
            tokens,
            chunks: Vec::new(),
            wave: 0,
            max_tokens: None,
            continues: None,
            check: None,
            arrival: None,
        }
    }

    /// The most tokens request `i` of `prompts` can reach: its history, its own tokens and its
    /// output (`max_output` where it sets none).
    pub fn full_len(prompts: &[Prompt], i: usize, max_output: usize) -> usize {
        let p = &prompts[i];
        p.tokens.len()
            + p.max_tokens.unwrap_or(max_output)
            + p.continues
                .map_or(0, |j| Self::full_len(prompts, j, max_output))
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
    fn points(
        &self,
        cfg: &BenchConfig,
        vocab_size: usize,
        tokenizer: &Tokenizer,
    ) -> Result<Vec<Point>>;
}

/// The longest prompt of the workloads that set their own lengths (`long-context`): with
/// `max_input_len` and the quality lengths, what bounds a request before its prompt is built.
pub const LONGEST_FIXED_PROMPT: usize = engine_speed::LONG_CONTEXT;

pub const NAMES: [&str; 12] = [
    "standard",
    "shared-prefix",
    "long-prefix",
    "chunked",
    "chunked-reuse",
    "long-chunked",
    "conversation",
    "long-context",
    "retrieval",
    "perplexity",
    "throughput",
    "latency",
];

pub fn by_name(name: &str) -> Result<Box<dyn Workload>> {
    match name {
        "standard" => Ok(Box::new(standard::Standard)),
        "shared-prefix" => Ok(Box::new(shared_prefix::SharedPrefix::prototype())),
        "long-prefix" => Ok(Box::new(shared_prefix::SharedPrefix::long())),
        "chunked" => Ok(Box::new(chunked::Chunked)),
        "chunked-reuse" => Ok(Box::new(chunked::ChunkedReuse)),
        "long-chunked" => Ok(Box::new(chunked::LongChunked)),
        "conversation" => Ok(Box::new(conversation::Conversation)),
        "long-context" => Ok(Box::new(engine_speed::LongContext)),
        "retrieval" => Ok(Box::new(quality::Retrieval)),
        "perplexity" => Ok(Box::new(quality::Perplexity)),
        "throughput" => Ok(Box::new(engine_speed::Throughput)),
        "latency" => Ok(Box::new(engine_speed::Latency)),
        other if other.starts_with("trace:") => Ok(Box::new(trace::Trace {
            path: other["trace:".len()..].into(),
        })),
        other => bail!(
            "unknown workload \"{other}\"; known workloads: {}, and trace:FILE (a JSONL or ShareGPT file)",
            NAMES.join(", ")
        ),
    }
}
