//! Training the embedded `tiny` model: candle autograd and AdamW on CPU, deterministic from a
//! seed, so `nanohost train-preset` reproduces the shipped weights.
//!
//! The schedule grows the context (short documents teach the lookup cheaply; the last stages
//! teach it at the lengths the retrieval workload asks) at a constant number of tokens per step.

pub mod data;
pub mod net;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
use data::{document, Doc, Kind};
use net::Net;
use serde::{Deserialize, Serialize};

/// One stage of the schedule: `steps` steps of documents of `len` tokens.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Stage {
    pub len: usize,
    pub steps: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Recipe {
    pub seed: u64,
    pub stages: Vec<Stage>,
    pub tokens_per_step: usize,
    pub lr: f64,
    pub warmup: usize,
    pub weight_decay: f64,
    pub grad_clip: f64,
    /// Evaluate every this many steps (and at the end).
    pub eval_every: usize,
    /// Train another shape than `tiny`'s (for trials): layers, hidden size, MLP size.
    #[serde(default)]
    pub shape: Option<(usize, usize, usize)>,
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// Document mix in relative weights (key-value, pass key, copy, text).
    #[serde(default = "default_mix")]
    pub mix: [usize; 4],
}

fn default_mix() -> [usize; 4] {
    data::MIX
}

impl Recipe {
    pub fn total_steps(&self) -> usize {
        self.stages.iter().map(|s| s.steps).sum()
    }

    pub fn max_len(&self) -> usize {
        self.stages.iter().map(|s| s.len).max().unwrap_or(0)
    }

    fn stage_len(&self, step: usize) -> usize {
        let mut left = step;
        for s in &self.stages {
            if left < s.steps {
                return s.len;
            }
            left -= s.steps;
        }
        self.stages.last().map_or(0, |s| s.len)
    }

    /// Linear warmup, then cosine decay to a tenth.
    fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.lr * (step + 1) as f64 / self.warmup as f64;
        }
        let p = (step - self.warmup) as f64 / (self.total_steps() - self.warmup).max(1) as f64;
        self.lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * p).cos()))
    }
}

/// Exact match of key-value lookup at one length: each query answered right (every answer token
/// the argmax under teacher forcing, which is what greedy decoding would produce).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalPoint {
    pub step: usize,
    pub len: usize,
    pub queries: usize,
    pub exact: f64,
    pub loss: f64,
}

/// Where a continued training's first weights came from.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Init {
    pub path: String,
    /// Of the model.safetensors the weights were read from.
    pub sha256: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainLog {
    pub recipe: Recipe,
    /// Set when training continued from a trained model instead of fresh weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<Init>,
    pub losses: Vec<(usize, f64)>,
    pub evals: Vec<EvalPoint>,
    pub seconds: f64,
}

fn batch_tensors(docs: &[Doc], len: usize, dev: &Device) -> Result<(Tensor, Tensor, Tensor)> {
    let b = docs.len();
    let inputs: Vec<u32> = docs
        .iter()
        .flat_map(|d| d.tokens[..len].iter().copied())
        .collect();
    let targets: Vec<u32> = docs
        .iter()
        .flat_map(|d| d.tokens[1..].iter().copied())
        .collect();
    let weights: Vec<f32> = docs
        .iter()
        .flat_map(|d| d.weights.iter().copied())
        .collect();
    Ok((
        Tensor::from_vec(inputs, (b, len), dev)?,
        Tensor::from_vec(targets, b * len, dev)?,
        Tensor::from_vec(weights, b * len, dev)?,
    ))
}

/// Weighted mean negative log-likelihood, and the argmax of each row.
fn loss_and_argmax(
    logits: &Tensor,
    targets: &Tensor,
    weights: &Tensor,
) -> Result<(Tensor, Vec<u32>)> {
    let v = logits.dim(D::Minus1)?;
    let logits = logits.reshape(((), v))?;
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let picked = shifted.gather(&targets.unsqueeze(1)?, 1)?;
    let nll = (lse - picked)?.squeeze(1)?;
    let loss = ((nll * weights)?.sum_all()? / weights.sum_all()?.to_scalar::<f32>()? as f64)?;
    let argmax = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
    Ok((loss, argmax))
}

/// Key-value exact match on `n` fresh documents of `len` tokens (a stream of its own, never
/// trained on).
pub fn evaluate(net: &Net, seed: u64, len: usize, n: usize, step: usize) -> Result<EvalPoint> {
    let mut rng = crate::rng::Rng::derive(seed, &format!("eval {len}"));
    let (mut right, mut total, mut loss_sum) = (0usize, 0usize, 0f64);
    for _ in 0..n {
        let doc = document(Kind::KeyValue, &mut rng, len);
        let (inputs, targets, weights) =
            batch_tensors(std::slice::from_ref(&doc), len, &net.device)?;
        let (loss, argmax) = loss_and_argmax(&net.forward(&inputs)?, &targets, &weights)?;
        loss_sum += loss.to_scalar::<f32>()? as f64;
        for a in &doc.answers {
            total += 1;
            right += a.clone().all(|i| argmax[i] == doc.tokens[i + 1]) as usize;
        }
    }
    Ok(EvalPoint {
        step,
        len,
        queries: total,
        exact: right as f64 / total.max(1) as f64,
        loss: loss_sum / n as f64,
    })
}

/// Trains from scratch; `progress` gets each logged line, and `checkpoint` the model and its
/// log after each evaluation, so a run killed half-way keeps its last evaluated weights.
/// `init`: weights to start from (a trained model, with where they came from for the log),
/// instead of fresh ones from the recipe's seed.
pub fn train(
    cfg: &crate::model::config::Qwen3Config,
    trained_vocab: usize,
    recipe: &Recipe,
    device: &Device,
    init: Option<(&std::collections::HashMap<String, Tensor>, Init)>,
    mut progress: impl FnMut(&str),
    mut checkpoint: impl FnMut(&Net, &TrainLog) -> Result<()>,
) -> Result<(Net, TrainLog)> {
    let started = std::time::Instant::now();
    keep_freed_memory();
    let (net, init) = match init {
        Some((weights, from)) => (
            Net::from_weights(cfg, trained_vocab, weights, recipe.max_len(), device)?,
            Some(from),
        ),
        None => (
            Net::init(cfg, trained_vocab, recipe.seed, recipe.max_len(), device)?,
            None,
        ),
    };
    let (decayed, plain): (Vec<_>, Vec<_>) = net
        .vars
        .iter()
        .partition(|(name, _)| !name.ends_with("norm.weight"));
    let params = |weight_decay| ParamsAdamW {
        lr: recipe.lr,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay,
    };
    let mut opt_decay = AdamW::new(
        decayed.into_iter().map(|(_, v)| v.clone()).collect(),
        params(recipe.weight_decay),
    )?;
    let mut opt_plain = AdamW::new(
        plain.into_iter().map(|(_, v)| v.clone()).collect(),
        params(0.0),
    )?;
    let mut rng = crate::rng::Rng::derive(recipe.seed, "training documents");
    let mut log = TrainLog {
        recipe: recipe.clone(),
        init,
        losses: Vec::new(),
        evals: Vec::new(),
        seconds: 0.0,
    };
    let total = recipe.total_steps();
    let mut window = Vec::new();
    // Answer tokens predicted right in the training batches since the last log line, by kind.
    let mut answer_hits = [(0usize, 0usize); 4];
    for step in 0..total {
        let len = recipe.stage_len(step);
        let b = (recipe.tokens_per_step / len).max(1);
        let docs: Vec<Doc> = (0..b)
            .map(|_| document(Kind::draw(&mut rng, &recipe.mix), &mut rng, len))
            .collect();
        let (inputs, targets, weights) = batch_tensors(&docs, len, &net.device)?;
        let (loss, argmax) = loss_and_argmax(&net.forward(&inputs)?, &targets, &weights)?;
        for (d, doc) in docs.iter().enumerate() {
            let k = doc.kind as usize;
            for a in &doc.answers {
                answer_hits[k].1 += a.len();
                answer_hits[k].0 += a
                    .clone()
                    .filter(|&i| argmax[d * len + i] == doc.tokens[i + 1])
                    .count();
            }
        }
        let mut grads = loss.backward()?;
        clip(&net, &mut grads, recipe.grad_clip)?;
        let lr = recipe.lr_at(step);
        opt_decay.set_learning_rate(lr);
        opt_plain.set_learning_rate(lr);
        opt_decay.step(&grads)?;
        opt_plain.step(&grads)?;
        window.push(loss.to_scalar::<f32>()? as f64);
        if (step + 1) % 25 == 0 || step + 1 == total {
            let mean = window.iter().sum::<f64>() / window.len() as f64;
            window.clear();
            log.losses.push((step + 1, mean));
            let rate = |k: Kind| {
                answer_hits[k as usize].0 as f64 / answer_hits[k as usize].1.max(1) as f64
            };
            progress(&format!(
                "step {}/{total} len {len} loss {mean:.4} lr {lr:.2e} {:.0}s | answer tokens right: kv {:.3} passkey {:.3} copy {:.3}",
                step + 1,
                started.elapsed().as_secs_f64(),
                rate(Kind::KeyValue),
                rate(Kind::Passkey),
                rate(Kind::Copy)
            ));
            answer_hits = [(0, 0); 4];
        }
        if (step + 1) % recipe.eval_every == 0 || step + 1 == total {
            for eval_len in [len.min(512), len] {
                let e = evaluate(&net, recipe.seed, eval_len, 4, step + 1)?;
                progress(&format!(
                    "  eval len {} exact {:.3} ({} queries) loss {:.4}",
                    e.len, e.exact, e.queries, e.loss
                ));
                log.evals.push(e);
                if eval_len == len {
                    break;
                }
            }
            if step + 1 < total {
                log.seconds = started.elapsed().as_secs_f64();
                checkpoint(&net, &log)?;
            }
        }
    }
    log.seconds = started.elapsed().as_secs_f64();
    Ok((net, log))
}

/// Keeps freed tensor buffers in the heap: glibc otherwise returns each large buffer to the
/// kernel and faults a fresh one in at the next op, a third of training's time on 2 cores.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator's thresholds; called before the buffers exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 512 << 20);
    }
}

/// Scales every gradient so their global norm is at most `max_norm`.
fn clip(net: &Net, grads: &mut candle_core::backprop::GradStore, max_norm: f64) -> Result<()> {
    let mut sq = 0f64;
    for var in net.vars.values() {
        if let Some(g) = grads.get(var.as_tensor()) {
            sq += g
                .sqr()?
                .sum_all()?
                .to_dtype(DType::F32)?
                .to_scalar::<f32>()? as f64;
        }
    }
    let norm = sq.sqrt();
    if norm > max_norm {
        for var in net.vars.values() {
            if let Some(g) = grads.remove(var.as_tensor()) {
                grads.insert(var.as_tensor(), (g * (max_norm / norm))?);
            }
        }
    }
    Ok(())
}

pub fn write_log(path: &std::path::Path, log: &TrainLog) -> Result<()> {
    crate::fsutil::write_atomic(path, serde_json::to_string_pretty(log)?.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::preset::Preset;

    #[test]
    fn training_is_deterministic_and_lowers_the_loss() {
        let recipe = Recipe {
            seed: 3,
            stages: vec![Stage { len: 48, steps: 12 }],
            tokens_per_step: 192,
            lr: 3e-3,
            warmup: 2,
            weight_decay: 0.05,
            grad_clip: 1.0,
            eval_every: 1000,
            shape: None,
            rope_theta: None,
            mix: data::MIX,
        };
        let run = || {
            let (net, log) = train(
                &Preset::Tiny.config(),
                259,
                &recipe,
                &Device::Cpu,
                None,
                |_| {},
                |_, _| Ok(()),
            )
            .unwrap();
            (net.export(3).unwrap(), log)
        };
        let (a, log) = run();
        let (b, _) = run();
        for (name, t) in &a {
            let same = t
                .eq(&b[name])
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
                .mean_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert_eq!(same, 1.0, "{name} differs between two runs of one recipe");
        }
        assert!(log.evals.len() == 1 && log.losses.len() == 1);
        // Continuing (`--init`) starts from exactly the weights given: loaded and exported
        // again, every tensor is the same; a missing tensor is named.
        let cfg = Preset::Tiny.config();
        let mut weights: std::collections::HashMap<String, Tensor> =
            a.clone().into_iter().collect();
        let again = Net::from_weights(&cfg, 259, &weights, 64, &Device::Cpu)
            .unwrap()
            .export(3)
            .unwrap();
        for (name, t) in &a {
            let diff = (t - &again[name])
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap();
            assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0, "{name}");
        }
        weights.remove("model.norm.weight");
        let err = Net::from_weights(&cfg, 259, &weights, 64, &Device::Cpu)
            .err()
            .unwrap();
        assert!(err.to_string().contains("model.norm.weight"), "{err}");
        let first = evaluate_loss_at_init(&recipe);
        assert!(
            log.losses[0].1 < first,
            "{} vs {first} at init",
            log.losses[0].1
        );
    }

    /// The weighted loss of fresh weights on the first training batch.
    fn evaluate_loss_at_init(recipe: &Recipe) -> f64 {
        let net = Net::init(&Preset::Tiny.config(), 259, recipe.seed, 64, &Device::Cpu).unwrap();
        let mut rng = crate::rng::Rng::derive(recipe.seed, "training documents");
        let docs: Vec<Doc> = (0..4)
            .map(|_| document(Kind::draw(&mut rng, &recipe.mix), &mut rng, 48))
            .collect();
        let (i, t, w) = batch_tensors(&docs, 48, &Device::Cpu).unwrap();
        loss_and_argmax(&net.forward(&i).unwrap(), &t, &w)
            .unwrap()
            .0
            .to_scalar::<f32>()
            .unwrap() as f64
    }
}
