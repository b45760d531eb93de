//! CUDA graphs for decode steps: the ~400 kernel launches of a step recorded once per shape and
//! replayed with one launch, so that small-batch decode is bound by the GPU, not by the host.
//!
//! A decode step (one new token per sequence) is padded to a batch-size bucket (1, 2, 4, 8, 16,
//! then multiples of 16 up to the scheduler's largest batch) with rows that compute a dummy
//! token in the pool's scratch slot, and its attention metadata is widened to room for the
//! rows' key bucket (a power of two, see `row_keys_bucket`) plus any cascade group's shared
//! entries (steps with groups take graphs unless asked not to, see `DecodeGraphs::with_cascade`;
//! their group structure is then part of the shape). Steps of one
//! [`StepShape`] then run the same kernels with the same arguments: their integer inputs are
//! written into one fixed device buffer, the graph is replayed, and the logits are read from one
//! fixed output buffer. Everything else (prefill, mixed steps, batches over the largest bucket,
//! and cascade steps where asked) runs eagerly. A graph is captured the first time its shape is seen, after
//! an eager warm-up run of the same step (which loads kernels and fills candle's cache of small
//! parameter uploads; its KV writes are the ones the replay makes again). Graphs bake in the
//! addresses of the weights and of the pool: one `DecodeGraphs` per (model, pool).

use super::graph_step::{bucket, StagedStep};
use super::qwen3::{ForwardBatch, Qwen3, StepShape};
use crate::engine::kv_pool::KvPool;
use anyhow::Result;
use candle_core::Tensor;
use nanohost_kernels::{KvSpan, SeqAttention};
use std::cell::RefCell;

/// What the graphs did over a run, for result files.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GraphStats {
    /// Steps run by replaying a graph (or, staged, from the fixed buffers).
    pub replays: usize,
    /// Graphs captured (one per step shape seen).
    pub captures: usize,
    /// Distinct step shapes (graph keys) seen: what `captures` should equal.
    pub shapes: usize,
    /// Wall time of the captures, warm-up runs included.
    pub capture_seconds: f64,
    /// Decode steps that ran eagerly (larger than the largest bucket, or with cascade groups
    /// while cascade graphs are off).
    pub eager_decode_steps: usize,
    /// Replays of a graph captured at an earlier step, and the host's time in them padding the
    /// batch and laying out its metadata, writing it into the fixed buffer, and launching the
    /// graph (parts of the step the GPU waits for: it is idle between steps).
    pub warm_replays: usize,
    pub prepare_seconds: f64,
    pub upload_seconds: f64,
    pub launch_seconds: f64,
    /// Nodes and edges of the last graph captured.
    pub last_graph: Option<nanohost_kernels::GraphAnatomy>,
}

/// How decode steps run.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum GraphMode {
    /// Every step eagerly, as it comes.
    Off,
    /// Padded and staged in the fixed buffers as for a graph, then run eagerly: everything but
    /// the capture, so a replay can be checked against the same computation (and the padding
    /// tested on the CPU).
    Staged,
    /// Captured and replayed (CUDA only; elsewhere this is `off`).
    #[default]
    On,
}

pub struct DecodeGraphs {
    max_batch: usize,
    /// Whether decode steps with cascade groups go through graphs too (their group structure
    /// is then part of the shape); otherwise they run eagerly. On unless
    /// `NANOHOST_CASCADE_GRAPHS=0` (read once) or [`DecodeGraphs::with_cascade`]: on an H200,
    /// cascade decode with a 2048-token shared prefix took 2.87 / 3.01 ms a step through graphs
    /// against 3.15 / 3.40 eager at batch 32 / 64, the same tokens
    /// (results/gpu-h200-2026-11-28-host-overlap/call5/).
    cascade: bool,
    state: RefCell<State>,
}

#[derive(Default)]
struct State {
    /// `Off` when asked, on the CPU for `On`, and after a capture failed (with a warning).
    mode: GraphMode,
    /// The fixed `u32` input buffer every graph reads.
    inputs: Option<Tensor>,
    /// The fixed `[max_batch, vocab]` logits (the model's dtype) every graph writes.
    logits: Option<Tensor>,
    #[cfg(feature = "cuda")]
    graphs: std::collections::HashMap<StepShape, super::cuda_graph::CudaGraph>,
    stats: GraphStats,
    shapes: std::collections::HashSet<StepShape>,
    /// Moves each step's inputs (and the tokens the step before sampled) into `inputs`.
    stage: nanohost_kernels::StepStage,
}

impl State {
    /// Whether the fixed input buffer exists and has room for a step of `shape`.
    fn inputs_hold(&self, shape: &StepShape) -> bool {
        self.inputs
            .as_ref()
            .is_some_and(|t| t.elem_count() >= shape.buffer_len())
    }
}

fn cascade_graphs_asked() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    nanohost_kernels::knob::switch(&ON, "NANOHOST_CASCADE_GRAPHS", true)
}

impl DecodeGraphs {
    /// Graphs for steps of up to `max_batch` sequences; `On` becomes `Off` when the model is
    /// not on a CUDA device.
    pub fn new(model: &Qwen3, max_batch: usize, mode: GraphMode) -> Self {
        let mode = match mode {
            GraphMode::On if !(model.device().is_cuda() && cfg!(feature = "cuda")) => {
                GraphMode::Off
            }
            m => m,
        };
        DecodeGraphs {
            max_batch,
            cascade: cascade_graphs_asked(),
            state: RefCell::new(State {
                mode,
                ..State::default()
            }),
        }
    }

    /// Whether decode steps with cascade groups use graphs (see the field's doc).
    pub fn with_cascade(mut self, on: bool) -> Self {
        self.cascade = on;
        self
    }

    /// The mode in effect (see [`DecodeGraphs::new`]).
    pub fn mode(&self) -> GraphMode {
        self.state.borrow().mode
    }

    pub fn stats(&self) -> GraphStats {
        let st = self.state.borrow();
        GraphStats {
            shapes: st.shapes.len(),
            ..st.stats
        }
    }

    /// The host's half of a graph step: the step padded to its bucket and laid out for a graph,
    /// or `None` where it runs eagerly (not a decode step, graphs off, over the largest bucket,
    /// or with cascade groups while cascade graphs are off). Touches no device, so the next step
    /// can be staged while the device still runs this one; [`DecodeGraphs::run_staged`] runs it.
    pub fn stage(
        &self,
        model: &Qwen3,
        batch: &ForwardBatch,
        pool: &KvPool,
    ) -> Result<Option<StagedStep>> {
        let n = batch.tokens.len();
        let decode = n > 0
            && batch.seqs.len() == n
            && batch
                .seqs
                .iter()
                .enumerate()
                .all(|(i, s)| s.q_len == 1 && s.q_start == i)
            && batch.logits_every_row();
        if self.mode() == GraphMode::Off || !decode || batch.cross_row_reads {
            return Ok(None);
        }
        let Some(rows) =
            bucket(n, self.max_batch).filter(|_| batch.groups.is_empty() || self.cascade)
        else {
            self.state.borrow_mut().stats.eager_decode_steps += 1;
            return Ok(None);
        };
        StagedStep::new(model, batch, rows, pool).map(Some)
    }

    /// Captures, before a timed run, the graph of every decode shape it can meet: each bucket
    /// up to `max_rows` sequences times each row-key bucket up to `max_context` keys (what
    /// vLLM and nano-vllm do at start-up; otherwise each first step of a shape pays its capture
    /// inside the timing, 19 of them costing 0.35 s of a 7 s throughput run on an H200). Each
    /// shape runs once on dummy rows that read and write only the scratch block. Largest first,
    /// so the fixed input buffer is allocated once. Returns the number of shapes run (staged
    /// mode runs them too, which lets the CPU tests check that they are the run's shapes).
    pub fn precapture(
        &self,
        model: &Qwen3,
        pool: &KvPool,
        max_rows: usize,
        max_context: usize,
    ) -> Result<usize> {
        if self.mode() == GraphMode::Off {
            return Ok(0);
        }
        let Some(top) = bucket(max_rows.min(self.max_batch), self.max_batch) else {
            return Ok(0);
        };
        let row_buckets: Vec<usize> = (1..=top)
            .filter_map(|n| bucket(n, self.max_batch))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .rev()
            .collect();
        let key_buckets: Vec<usize> =
            std::iter::successors(Some(nanohost_kernels::row_keys_bucket(max_context)), |&k| {
                (k > 256).then_some(k / 2)
            })
            .collect();
        let (bs, scratch) = (pool.block_size(), pool.scratch_slot());
        let block = scratch / bs as u32;
        let mut shapes = 0;
        for &rows in &row_buckets {
            for &keys in &key_buckets {
                if keys > model.config().max_position_embeddings {
                    continue;
                }
                // `keys` context entries per row, all in the scratch block: the row-key bucket is
                // exactly `keys` (a power of two >= 256).
                let context = vec![KvSpan {
                    first: 0,
                    blocks: vec![block; keys.div_ceil(bs)],
                    len: keys,
                    shift: 0,
                }];
                let seqs: Vec<SeqAttention> = (0..rows)
                    .map(|r| SeqAttention {
                        q_start: r,
                        q_len: 1,
                        context: context.clone(),
                    })
                    .collect();
                let (tokens, positions, slots) = (
                    vec![0u32; rows],
                    vec![(keys - 1) as u32; rows],
                    vec![scratch; rows],
                );
                let logit_rows: Vec<u32> = (0..rows as u32).collect();
                let batch = ForwardBatch {
                    tokens: &tokens,
                    positions: &positions,
                    slots: &slots,
                    seqs: &seqs,
                    groups: &[],
                    logit_rows: &logit_rows,
                    cross_row_reads: false,
                };
                let staged = StagedStep::new(model, &batch, rows, pool)?;
                self.run_staged(model, &staged, pool, None)?;
                shapes += 1;
            }
        }
        Ok(shapes)
    }

    /// Whether `staged` would run into the buffers as they are, replaying a graph captured
    /// already (or staged): a step queued behind the one before, before the host has that
    /// step's tokens, is only queued so; a new shape waits to be captured with the device idle.
    pub fn ready_for(&self, staged: &StagedStep) -> bool {
        let st = self.state.borrow();
        let shape = &staged.step.shape;
        let fits = st.inputs_hold(shape);
        let replays = match st.mode {
            GraphMode::Off => false,
            GraphMode::Staged => true,
            #[cfg(feature = "cuda")]
            GraphMode::On => st.graphs.contains_key(&shape.graph_key()),
            #[cfg(not(feature = "cuda"))]
            GraphMode::On => false,
        };
        fits && replays && st.logits.is_some()
    }

    /// The device's half of a graph step: `staged`'s inputs written into the fixed buffer, and
    /// its graph replayed (captured first if its shape is new). The logits `[rows, vocab]` are a
    /// view of the fixed output buffer: read them before the next step.
    ///
    /// `tokens`, where given, are the step's input tokens on the device, one per row in order
    /// (what the step before sampled): they are copied over the staged ones, so the step can be
    /// queued before the host has read them.
    pub fn run_staged(
        &self,
        model: &Qwen3,
        staged: &StagedStep,
        pool: &KvPool,
        tokens: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (n, step, prepare) = (staged.n, &staged.step, staged.prepare);
        debug_assert!(n <= staged.rows && staged.rows == step.shape.tokens);
        if let Some(t) = tokens.filter(|t| t.elem_count() != n) {
            anyhow::bail!(
                "internal: {} device tokens for a step of {n} rows",
                t.elem_count()
            );
        }
        let mut st = self.state.borrow_mut();
        if !st.inputs_hold(&step.shape) {
            // A bigger buffer moves: every graph captured on the old one goes.
            #[cfg(feature = "cuda")]
            st.graphs.clear();
            st.inputs = Some(Tensor::zeros(
                step.shape.buffer_len() * 3 / 2,
                candle_core::DType::U32,
                model.device(),
            )?);
        }
        if st.logits.is_none() {
            st.logits = Some(Tensor::zeros(
                (self.max_batch, model.config().vocab_size),
                model.dtype(),
                model.device(),
            )?);
        }
        let (inputs, logits) = (
            st.inputs.clone().expect("allocated above"),
            st.logits.clone().expect("allocated above"),
        );
        let upload = std::time::Instant::now();
        st.stage
            .stage(&inputs, &step.ints, &step.shape.pieces(), tokens)?; // the tokens lead the buffer
        let upload = upload.elapsed();
        let key = step.shape.graph_key();
        st.shapes.insert(key);
        match st.mode {
            GraphMode::Staged => {
                model.forward_prepared_into(&inputs, &step.shape, pool, &logits)?
            }
            _ => {
                #[cfg(feature = "cuda")]
                let captured_now = !st.graphs.contains_key(&key);
                #[cfg(feature = "cuda")]
                if captured_now {
                    let start = std::time::Instant::now();
                    match super::cuda_graph::capture(model, &inputs, &logits, &step.shape, pool) {
                        Ok(graph) => {
                            st.stats.last_graph = Some(graph.anatomy);
                            st.graphs.insert(key, graph);
                            st.stats.captures += 1;
                            st.stats.capture_seconds += start.elapsed().as_secs_f64();
                        }
                        Err(why) => {
                            // This step runs as staged mode runs it (the same padded computation,
                            // eagerly); the next ones as plain eager steps.
                            tracing::warn!("CUDA graph capture failed for a decode step of {} rows ({why:#}); running eagerly from now on", staged.rows);
                            st.mode = GraphMode::Off;
                            drop(st);
                            model.forward_prepared_into(&inputs, &step.shape, pool, &logits)?;
                            return Ok(logits.narrow(0, 0, n)?);
                        }
                    }
                }
                #[cfg(feature = "cuda")]
                {
                    let launch = std::time::Instant::now();
                    st.graphs[&key].launch()?;
                    if !captured_now {
                        st.stats.warm_replays += 1;
                        st.stats.prepare_seconds += prepare.as_secs_f64();
                        st.stats.upload_seconds += upload.as_secs_f64();
                        st.stats.launch_seconds += launch.elapsed().as_secs_f64();
                    }
                }
                #[cfg(not(feature = "cuda"))]
                let _ = (prepare, upload);
                #[cfg(not(feature = "cuda"))]
                unreachable!("graphs are never on without the cuda feature");
            }
        }
        st.stats.replays += 1;
        Ok(logits.narrow(0, 0, n)?)
    }

    /// The tokens the last [`Self::run_staged`] given device tokens took, on the host once they
    /// are in its input buffer (not waiting for the step queued after).
    pub fn staged_tokens(&self) -> Result<Vec<u32>> {
        Ok(self.state.borrow_mut().stage.tokens()?)
    }
}
