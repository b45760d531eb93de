//! One request as the engine tracks it, from waiting to finished.

use super::kv_policy::{HostJob, SeqStep};
use nanohost_kernels::KvSpan;
use nanohost_strategy_api::{Chunk, CopyJob};
use std::time::Instant;

pub type SeqId = u64;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    pub max_tokens: usize,
    /// Keep generating after an end-of-sequence token (the prototype's benchmarks did).
    pub ignore_eos: bool,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.6,
            max_tokens: 128,
            ignore_eos: true,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    MaxTokens,
    Eos,
    /// The next position would exceed the model's max_position_embeddings.
    ContextFull,
}

#[derive(Clone, Debug)]
pub struct Sequence {
    pub id: SeqId,
    /// Prompt followed by every generated token.
    pub tokens: Vec<u32>,
    pub prompt_len: usize,
    /// A chunked request's pieces (tokens `start..start + len` of the prompt); empty otherwise.
    pub chunks: Vec<Chunk>,
    pub params: SamplingParams,
    /// Where this sequence's KV lives, in context order.
    pub context: Vec<KvSpan>,
    /// What the next step computes for this sequence, and which job's last row gives logits
    /// (`None` while its prompt is prefilled in pieces).
    pub pending: Vec<HostJob>,
    pub logits_job: Option<usize>,
    /// Whether `pending` is a growth of the context (its tokens go to the strategy's step hook).
    pub pending_grown: bool,
    /// Slots the strategy asked to copy before `pending` runs.
    pub pending_copies: Vec<CopyJob>,
    /// `pending` reads as cached slots that other sequences compute in the same step.
    pub pending_cross_reads: bool,
    /// One past the last position placed in the pool (`tokens[..placed]` have KV there or on
    /// the way).
    pub placed: usize,
    /// Attend with cascade groups (the strategy's choice at admission).
    pub cascade: bool,
    pub finish: Option<FinishReason>,
    pub arrived: Instant,
    /// When each generated token was sampled.
    pub token_times: Vec<Instant>,
    /// Prompt tokens already in the pool at the last admission.
    pub cached_at_admission: usize,
    pub preemptions: usize,
    /// Teacher forcing: output `i` is `forced[i]` whatever the logits say, and its
    /// log-probability under them goes to `forced_logprobs[i]` (the perplexity workload).
    pub forced: Vec<u32>,
    pub forced_logprobs: Vec<f32>,
}

impl Sequence {
    pub fn new(id: SeqId, prompt: Vec<u32>, params: SamplingParams) -> Self {
        let prompt_len = prompt.len();
        Sequence {
            id,
            tokens: prompt,
            prompt_len,
            chunks: Vec::new(),
            params,
            context: Vec::new(),
            pending: Vec::new(),
            logits_job: None,
            pending_grown: false,
            pending_copies: Vec::new(),
            pending_cross_reads: false,
            placed: 0,
            cascade: false,
            finish: None,
            arrived: Instant::now(),
            token_times: Vec::new(),
            cached_at_admission: 0,
            preemptions: 0,
            forced: Vec::new(),
            forced_logprobs: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Takes `step` as what the next step computes; `grown`: it grows a live context (its
    /// tokens go to the strategy's step hook), rather than placing an admitted one.
    pub fn take_step(&mut self, step: SeqStep, grown: bool) {
        self.context = step.context;
        self.pending = step.jobs;
        self.logits_job = step.logits_job;
        self.placed = step.placed;
        self.pending_copies = step.copies;
        self.pending_cross_reads = step.cross_reads;
        self.pending_grown = grown;
    }

    /// The tokens whose KV the pool holds (what a strategy's `release` gets).
    pub fn placed_tokens(&self) -> &[u32] {
        &self.tokens[..self.placed]
    }

    pub fn output(&self) -> &[u32] {
        &self.tokens[self.prompt_len..]
    }

    /// Drops everything the pool held for this sequence; it will be prefilled again.
    pub fn reset_for_recompute(&mut self) {
        self.context.clear();
        self.pending.clear();
        self.pending_copies.clear();
        self.placed = 0;
        self.preemptions += 1;
    }
}
