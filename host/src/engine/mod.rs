//! The engine: requests in, tokens out. Scheduler → KV policy → packed batch → model → sampler.

mod ahead;
pub mod cascade;
pub mod kv_policy;
pub mod kv_pool;
pub mod runner;
pub mod sampler;
pub mod scheduler;
pub mod sequence;

use crate::model::{DecodeGraphs, Qwen3};
use anyhow::Result;
use kv_policy::KvPolicy;
use kv_pool::KvPool;
use nanohost_strategy_api::{Appended, Chunk};
use runner::PackedBatch;
use scheduler::{Scheduler, SchedulerConfig, StepPlan};
use sequence::{FinishReason, SamplingParams, SeqId, Sequence};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// What one step did, for metrics.
#[derive(Clone, Debug)]
pub struct StepReport {
    pub prefill: bool,
    pub num_seqs: usize,
    pub tokens_computed: usize,
    /// Cascade groups attention formed (sequences attending shared blocks in one pass).
    pub cascade_groups: usize,
    /// Replayed from a CUDA graph (or staged as for one).
    pub graph: bool,
    pub duration: Duration,
    /// Host time before the forward pass was handed to the device (scheduling, packing, the
    /// inputs' upload, the launch calls): the device idles through it.
    pub before_launch: Duration,
    /// The parts of `before_launch` spent scheduling (the plugin's plan included) and packing
    /// the batch; the rest is the model's (metadata, upload, launch).
    pub scheduling: Duration,
    pub packing: Duration,
    /// From then until the sampled tokens were on the host: the device's work, plus whatever
    /// host work sampling adds, and the next step's planning where it was prepared ahead.
    pub until_sampled: Duration,
    /// Scheduled, packed and staged during the step before (see `ahead`): `scheduling` and
    /// `packing` are then zero.
    pub prepared_ahead: bool,
    /// Also queued on the device behind the step before, its tokens copied there from that
    /// step's sampling: `before_launch` is then zero, and the device did not wait for the host.
    pub launched_ahead: bool,
}

/// A step scheduled, packed and (where a graph takes it) staged: what the device runs next.
struct PlannedStep {
    plan: StepPlan,
    batch: PackedBatch,
    staged: Option<crate::model::StagedStep>,
}

pub struct Engine<'m> {
    model: &'m Qwen3,
    pool: &'m KvPool,
    /// Decode steps through CUDA graphs; `None`: every step eagerly.
    graphs: Option<&'m DecodeGraphs>,
    policy: Box<dyn KvPolicy + 'm>,
    scheduler: Scheduler,
    seed: u64,
    next_id: SeqId,
    /// Largest number of pool blocks referenced by live sequences, at any step.
    pub peak_blocks: usize,
    /// Largest number of blocks the strategy said it held (live plus retained), at any step.
    pub peak_reported_blocks: usize,
    /// Peak device memory in use (driver-reported) at step boundaries; `None` on the CPU.
    pub peak_device_memory: Option<u64>,
    pub steps: Vec<StepReport>,
    /// When set, every sampled row's logits are kept as (sequence, output index, logits): for
    /// fidelity checks between strategies, not for benchmarks (it copies logits to the host).
    pub logits: Option<Vec<(SeqId, usize, Vec<f32>)>>,
    /// Whether the first sampled step's logits were all finite (`None` until one ran): one
    /// sum, once, so NaN weights or a broken kernel show as a warning, not as silent token 0s.
    pub first_logits_finite: Option<bool>,
    /// The next decode step, planned (and maybe queued) while the device ran the last one.
    ahead: Option<ahead::Ahead>,
    /// The last step's grown tokens, for the strategy's step hook once the next step is
    /// planned (see `step`).
    hook: Option<Vec<Appended>>,
}

impl<'m> Engine<'m> {
    pub fn new(
        model: &'m Qwen3,
        pool: &'m KvPool,
        policy: Box<dyn KvPolicy + 'm>,
        cfg: SchedulerConfig,
        seed: u64,
    ) -> Self {
        Engine {
            model,
            pool,
            graphs: None,
            policy,
            scheduler: Scheduler::new(cfg),
            seed,
            next_id: 0,
            peak_blocks: 0,
            peak_reported_blocks: 0,
            peak_device_memory: None,
            steps: Vec::new(),
            logits: None,
            first_logits_finite: None,
            ahead: None,
            hook: None,
        }
    }

    /// Runs decode steps through `graphs` (made for this engine's model and pool; they may be
    /// shared by engines on the same pool, so captures carry over).
    pub fn with_graphs(mut self, graphs: &'m DecodeGraphs) -> Self {
        self.graphs = Some(graphs);
        self
    }

    pub fn policy(&self) -> &(dyn KvPolicy + 'm) {
        self.policy.as_ref()
    }

    pub fn preemptions(&self) -> usize {
        self.scheduler.preemptions
    }

    pub fn add_request(&mut self, prompt: Vec<u32>, params: SamplingParams) -> Result<SeqId> {
        self.add_chunked_request(prompt, Vec::new(), params)
    }

    /// A request whose prompt is made of typed chunks, which must tile the start of the prompt
    /// in order.
    pub fn add_chunked_request(
        &mut self,
        prompt: Vec<u32>,
        chunks: Vec<Chunk>,
        params: SamplingParams,
    ) -> Result<SeqId> {
        let mut at = 0;
        for c in &chunks {
            if c.start != at || c.len == 0 || (c.start + c.len) as usize > prompt.len() {
                anyhow::bail!("chunk {:?} at {}..{} does not continue the chunks before it (at {at}) inside the {}-token prompt", c.kind, c.start, c.start + c.len, prompt.len());
            }
            at += c.len;
        }
        if prompt.is_empty() {
            anyhow::bail!("a request needs at least one prompt token");
        }
        let vocab = self.model.config().vocab_size;
        if let Some(t) = prompt.iter().find(|&&t| t as usize >= vocab) {
            anyhow::bail!("prompt token {t} is outside the model's vocabulary of {vocab}");
        }
        let id = self.next_id;
        self.next_id += 1;
        let mut seq = Sequence::new(id, prompt, params);
        seq.chunks = chunks;
        self.scheduler.waiting.push_back(seq);
        Ok(id)
    }

    /// A request whose output is `forced` (teacher forcing), each token scored under the logits
    /// the strategy's KV gives: the sequence grows step by step exactly as in generation.
    pub fn add_forced_request(
        &mut self,
        prompt: Vec<u32>,
        forced: Vec<u32>,
        params: SamplingParams,
    ) -> Result<SeqId> {
        let vocab = self.model.config().vocab_size;
        if let Some(t) = forced.iter().find(|&&t| t as usize >= vocab) {
            anyhow::bail!("forced token {t} is outside the model's vocabulary of {vocab}");
        }
        let params = SamplingParams {
            max_tokens: forced.len(),
            ignore_eos: true,
            ..params
        };
        let id = self.add_chunked_request(prompt, Vec::new(), params)?;
        let seq = self.scheduler.waiting.back_mut().expect("just added");
        seq.forced = forced;
        Ok(id)
    }

    /// Runs one scheduled step; `None` when nothing is left to do.
    pub fn step(&mut self) -> Result<Option<StepReport>> {
        let start = Instant::now();
        let (step, prepared_ahead, scheduled, packed, queued) = match self.ahead.take() {
            Some(a) => (a.step, true, start, start, a.launched),
            None => {
                let Some((step, scheduled, packed)) = self.plan_step()? else {
                    return Ok(None);
                };
                // The step hook comes after the next step's growth, planned ahead or not, so a
                // strategy sees the same order of calls either way.
                if let Some(appended) = self.hook.take() {
                    self.policy.on_step(&appended)?;
                }
                (step, false, scheduled, packed, None)
            }
        };
        let PlannedStep {
            plan,
            batch,
            staged,
        } = step;
        if batch.tokens.contains(&ahead::PLACEHOLDER) {
            anyhow::bail!("internal: a step was launched before its input tokens were sampled");
        }
        let appended = self.grown_tokens(&plan);
        let launched_ahead = queued.is_some();
        if !batch.copies.is_empty() {
            self.pool.copy_slots(&batch.copies)?;
        }
        let (logits, graph) = match (queued, self.graphs, &staged) {
            (Some(logits), _, _) => (logits, true),
            (None, Some(g), Some(s)) => (g.run_staged(self.model, s, self.pool, None)?, true),
            _ => (self.model.forward(&batch.as_forward(), self.pool)?, false),
        };
        let launched = Instant::now();
        let running = &self.scheduler.running;
        let row_seqs: Vec<usize> = plan
            .seqs
            .iter()
            .copied()
            .filter(|&i| running[i].logits_job.is_some())
            .collect();
        let rows: Vec<(SeqId, usize)> = row_seqs
            .iter()
            .map(|&i| (running[i].id, running[i].output().len()))
            .collect();
        // Rows whose token is forced (teacher forcing): (row, token).
        let forced: Vec<(usize, u32)> = row_seqs
            .iter()
            .enumerate()
            .filter_map(|(r, &i)| {
                running[i]
                    .forced
                    .get(running[i].output().len())
                    .map(|&t| (r, t))
            })
            .collect();
        let temperature = plan
            .seqs
            .first()
            .map_or(0.0, |&i| running[i].params.temperature);
        if plan
            .seqs
            .iter()
            .any(|&i| running[i].params.temperature != temperature)
        {
            anyhow::bail!("sequences of one step must share a temperature");
        }
        // A step of prefill pieces alone has no row to sample: its padding row is sampled, and
        // dropped below.
        let padding = [(SeqId::MAX, 0)];
        let sample_rows: &[(SeqId, usize)] = if batch.logits_padded { &padding } else { &rows };
        let on_device = sampler::sample(&logits, sample_rows, temperature, self.seed)?;
        if self.first_logits_finite.is_none() && !batch.logits_padded {
            let sum = logits.to_dtype(candle_core::DType::F32)?.sum_all()?;
            self.first_logits_finite = Some(sum.to_scalar::<f32>()?.is_finite());
        }
        // The device is busy: plan the next step now where only the tokens can change it.
        let mut ahead = if self.can_prepare_ahead(&plan) {
            Some(self.prepare_ahead()?)
        } else {
            None
        };
        // Queued behind this step where it can be, unless this step's logits are kept: the
        // queued step would overwrite the graph's logits buffer before they are read.
        let queued_ahead = match &mut ahead {
            Some(a) if self.logits.is_none() && forced.is_empty() => {
                self.launch_ahead(a, &rows, &on_device)?
            }
            _ => None,
        };
        let mut tokens = match queued_ahead {
            Some(tokens) => tokens,
            None => on_device.to_vec1::<u32>()?,
        };
        tokens.truncate(rows.len());
        let forced_logprobs = sampler::logprobs(&logits, &forced)?;
        for &(r, t) in &forced {
            tokens[r] = t;
        }
        // By id: preparing the next step ahead may have reordered the running list.
        for (&(r, _), lp) in forced.iter().zip(forced_logprobs) {
            if let Some(seq) = self
                .scheduler
                .running
                .iter_mut()
                .find(|s| s.id == rows[r].0)
            {
                seq.forced_logprobs.push(lp);
            }
        }
        let sampled = Instant::now();
        let sampled_by_id: HashMap<SeqId, u32> = rows
            .iter()
            .map(|&(id, _)| id)
            .zip(tokens.iter().copied())
            .collect();
        match &mut ahead {
            Some(a) => self.fill_ahead(a, &sampled_by_id)?,
            None => {
                for &i in &plan.seqs {
                    let seq = &mut self.scheduler.running[i];
                    seq.pending.clear();
                    seq.pending_copies.clear();
                    if let Some(&token) = sampled_by_id.get(&seq.id) {
                        seq.tokens.push(token);
                    }
                }
            }
        }
        if let Some(kept) = &mut self.logits {
            for (&(id, index), row) in rows
                .iter()
                .zip(logits.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?)
            {
                kept.push((id, index, row));
            }
        }
        match ahead {
            Some(_) => self.policy.on_step(&appended)?,
            None => self.hook = Some(appended),
        }
        self.finish_sampled(&sampled_by_id, ahead.is_some())?;
        self.note_peaks(graph)?;
        self.scheduler.retire_finished(self.policy.as_mut())?;
        let report = StepReport {
            prefill: plan.prefill,
            num_seqs: plan.seqs.len(),
            tokens_computed: batch.tokens.len(),
            cascade_groups: batch.groups.len(),
            graph,
            duration: start.elapsed(),
            before_launch: launched - start,
            scheduling: scheduled - start,
            packing: packed - scheduled,
            until_sampled: sampled - launched,
            prepared_ahead,
            launched_ahead,
        };
        self.steps.push(report.clone());
        self.ahead = ahead;
        Ok(Some(report))
    }

    /// What the step's growth placed, for the strategy's step hook: the tokens and positions of
    /// each sequence's grown job (a decode token, or a prompt piece).
    fn grown_tokens(&self, plan: &StepPlan) -> Vec<Appended> {
        let running = &self.scheduler.running;
        plan.seqs
            .iter()
            .map(|&i| &running[i])
            .filter(|s| s.pending_grown)
            .flat_map(|s| {
                s.pending.iter().flat_map(move |j| {
                    j.tokens
                        .iter()
                        .zip(&j.positions)
                        .map(move |(&token, &pos)| Appended {
                            seq_id: s.id,
                            pos,
                            token,
                        })
                })
            })
            .collect()
    }

    /// The next step: scheduled (the plugin asked for room), packed, and staged where a graph
    /// takes it; with the instants scheduling and packing ended.
    fn plan_step(&mut self) -> Result<Option<(PlannedStep, Instant, Instant)>> {
        self.policy.begin_step();
        let Some(plan) = self.scheduler.schedule(self.policy.as_mut())? else {
            return Ok(None);
        };
        let scheduled = Instant::now();
        let min_reads = cascade::min_shared_reads(self.model.device());
        let batch = PackedBatch::pack(
            plan.seqs.iter().map(|&i| &self.scheduler.running[i]),
            self.pool.block_size(),
            min_reads,
        )?;
        let packed = Instant::now();
        let staged = match self.graphs {
            Some(g) => g.stage(self.model, &batch.as_forward(), self.pool)?,
            None => None,
        };
        Ok(Some((
            PlannedStep {
                plan,
                batch,
                staged,
            },
            scheduled,
            packed,
        )))
    }

    /// Each sampled sequence's token time and whether it is finished. By id: preparing the next
    /// step may have preempted some (now waiting, to be recomputed); with a step prepared, none
    /// may finish.
    fn finish_sampled(&mut self, sampled: &HashMap<SeqId, u32>, prepared: bool) -> Result<()> {
        let now = Instant::now();
        let eos = &self.model.config().eos_token_ids;
        let max_pos = self.model.config().max_position_embeddings;
        let sched = &mut self.scheduler;
        for seq in sched.running.iter_mut().chain(sched.waiting.iter_mut()) {
            let Some(&token) = sampled.get(&seq.id) else {
                continue;
            };
            seq.token_times.push(now);
            seq.finish = if seq.output().len() >= seq.params.max_tokens {
                Some(FinishReason::MaxTokens)
            } else if !seq.params.ignore_eos && eos.contains(&token) {
                Some(FinishReason::Eos)
            } else if seq.len() >= max_pos {
                Some(FinishReason::ContextFull)
            } else {
                None
            };
            if seq.finish.is_some() && prepared {
                anyhow::bail!(
                    "internal: sequence {} finished after its next step was prepared",
                    seq.id
                );
            }
        }
        Ok(())
    }

    /// The run's peaks: blocks the ledger and the strategy count, and device memory.
    fn note_peaks(&mut self, graph: bool) -> Result<()> {
        self.peak_blocks = self.peak_blocks.max(self.policy.live_blocks());
        self.peak_reported_blocks = self
            .peak_reported_blocks
            .max(self.policy.reported_blocks()?);
        // Asking the driver (cuMemGetInfo) sits between this step's read-back and the next
        // step's launch, so it is asked only where memory can grow: steps that ran eagerly or
        // captured a graph allocate; replaying one allocates nothing, and is looked at one
        // step in 64 all the same.
        if !graph || self.steps.len().is_multiple_of(64) {
            if let Some(m) = crate::device::device_memory_in_use(self.model.device()) {
                self.peak_device_memory = Some(self.peak_device_memory.map_or(m, |p| p.max(m)));
            }
        }
        Ok(())
    }

    /// Steps until every request is finished; returns them ordered by id.
    pub fn run_to_completion(&mut self) -> Result<Vec<Sequence>> {
        while self.step()?.is_some() {}
        let mut done = std::mem::take(&mut self.scheduler.finished);
        done.sort_by_key(|s| s.id);
        Ok(done)
    }
}
