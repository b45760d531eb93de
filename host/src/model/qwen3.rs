//! Qwen3 over the paged KV pool: a packed batch of tokens from many sequences, each token with
//! its own position, reading and writing KV only through pool slots.
//!
//! Layer order follows the reference: input RMSNorm, q/k/v projections, per-head RMSNorm of q
//! and k *before* RoPE, KV write, paged attention, output projection, residual; post-attention
//! RMSNorm, SiLU-gated MLP, residual. Final RMSNorm, then the (possibly tied) LM head, applied
//! only to the rows whose logits are wanted.
//!
//! Fused where a decode step feels the kernel count (each fused op equals its parts; the CPU
//! composes them): q/k norm + RoPE + KV write in one op, every residual add with the norm after it.

use super::config::Qwen3Config;
use super::rope::Rope;
use crate::engine::kv_pool::KvPool;
use anyhow::{Context, Result};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{ops::rms_norm, Linear};
use nanohost_kernels::{
    add_rms_norm, embed_rms_norm_rope, qkv_attention, silu_mul, small_matmul, small_matmul_swiglu,
    tc_matmul, tc_matmul_fits, tc_matmul_swiglu, tc_matmul_swiglu_fits, AttentionBatch, MetaLayout,
    QkvNorms, SeqAttention, SharedGroup, SMALL_MATMUL_MAX_ROWS, TC_MATMUL_MAX_ROWS,
};
use std::collections::HashMap;

struct Layer {
    input_norm: Tensor,
    /// q_proj, k_proj and v_proj stacked `[(heads + 2 * kv_heads) * head_dim, hidden]`: one
    /// matmul; q, k and v are column slices of its output.
    qkv_proj: Linear,
    o_proj: Linear,
    q_norm: Tensor,
    k_norm: Tensor,
    post_norm: Tensor,
    /// gate_proj and up_proj stacked `[2 * intermediate, hidden]`: one matmul instead of two.
    gate_up_proj: Linear,
    down_proj: Linear,
}

pub struct Qwen3 {
    cfg: Qwen3Config,
    embed: Tensor,
    lm_head: Linear,
    layers: Vec<Layer>,
    norm: Tensor,
    rope: Rope,
    device: Device,
    dtype: DType,
}

/// One forward call: a packed batch.
///
/// `tokens`, `positions` and `slots` have one entry per computed token; `seqs` says which rows
/// belong to which sequence and what context each attends to; `logit_rows` picks the rows whose
/// logits are returned (usually each sequence's last row).
pub struct ForwardBatch<'a> {
    pub tokens: &'a [u32],
    pub positions: &'a [u32],
    pub slots: &'a [u32],
    pub seqs: &'a [SeqAttention],
    /// Sequences that attend their common leading entries in one pass (cascade attention).
    pub groups: &'a [SharedGroup],
    pub logit_rows: &'a [u32],
    /// Some row reads a slot another sequence's row writes in this same step (see
    /// `MetaLayout::cross_row_reads`).
    pub cross_row_reads: bool,
}

impl ForwardBatch<'_> {
    /// Whether every row wants logits, in row order (decode steps): the final norm's output is
    /// then the logit rows as it is.
    pub fn logits_every_row(&self) -> bool {
        self.logit_rows.len() == self.tokens.len()
            && self
                .logit_rows
                .iter()
                .enumerate()
                .all(|(i, &r)| r as usize == i)
    }
}

/// A step's integer inputs flattened on the host in the order the forward reads them (tokens,
/// positions, slots, logit rows, then the attention metadata): one upload per step, into a
/// fresh tensor (eager) or into a CUDA graph's fixed buffer.
pub struct HostStep {
    pub ints: Vec<u32>,
    pub shape: StepShape,
}

impl HostStep {
    /// Sets the input token of row `row`: the tokens come first.
    pub fn set_token(&mut self, row: usize, token: u32) {
        assert!(
            row < self.shape.tokens,
            "row {row} of a step of {} tokens",
            self.shape.tokens
        );
        self.ints[row] = token;
    }
}

/// Everything that places a step's inputs in their buffer and sizes its launches. Two steps of
/// one shape (with `meta.num_slots` aside) run the same kernels with the same arguments: the
/// key of a CUDA graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StepShape {
    pub tokens: usize,
    pub logit_rows: usize,
    /// The logit rows are every row in order (decode): the final norm's output is taken as it
    /// is, without a gather (a kernel of 3.4 us a step at batch 64 on an H200).
    pub every_row: bool,
    pub meta: MetaLayout,
}

impl StepShape {
    fn meta_start(&self) -> usize {
        3 * self.tokens + self.logit_rows
    }

    /// The shape without what a replay may change (the slots in use): steps with equal keys
    /// can replay one CUDA graph.
    pub fn graph_key(&self) -> StepShape {
        StepShape {
            meta: MetaLayout {
                num_slots: 0,
                ..self.meta
            },
            ..*self
        }
    }

    /// `u32`s the device buffer must hold.
    pub fn buffer_len(&self) -> usize {
        self.meta_start() + self.meta.total_len()
    }

    /// The compact `ints` as (range, offset in the device buffer) pieces (see
    /// [`MetaLayout::pieces`]).
    pub fn pieces(&self) -> Vec<(std::ops::Range<usize>, usize)> {
        let m = self.meta_start();
        self.meta
            .pieces()
            .into_iter()
            .map(|(r, at)| {
                if r.start == 0 {
                    (0..m + r.end, 0)
                } else {
                    (m + r.start..m + r.end, m + at)
                }
            })
            .collect()
    }
}

/// Which kernel multiplies by a weight (`Qwen3::matmul_kernel`).
enum MatmulKernel {
    FewRows,
    TensorCores,
    Candle,
}

/// A step's inputs on the model's device.
struct StepInputs {
    cos_sin: Tensor,
    slots: Tensor,
    attention: AttentionBatch,
}

/// Up to how many rows `small_matmul` replaces cuBLAS: 2 by default (measured on an H200:
/// faster than cuBLAS at 1 row, slower at 4 with one column per warp; see
/// results/engine-speed-versions.md). `NANOHOST_SMALL_MATMUL_ROWS` (0 to 8) overrides it, read
/// once, for tuning on other cards.
fn small_matmul_rows() -> usize {
    static ROWS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    nanohost_kernels::knob::knob(
        &ROWS,
        "NANOHOST_SMALL_MATMUL_ROWS",
        2,
        |&r| r <= SMALL_MATMUL_MAX_ROWS,
        "a number of rows from 0 to 8",
    )
}

/// Up to how many rows `tc_matmul` replaces cuBLAS where it runs (rows that `small_matmul` does
/// not take): 16 by default. On an H200 it made decode at batch 4 1.345 -> 1.127 ms/step and
/// batch 16 1.396 -> 1.370, and batch 64 slower, 1.94 -> 2.52 (bench-decode;
/// results/gpu-h200-2026-11-28-tc-matmul/). `NANOHOST_TC_MATMUL_ROWS` (0 to 64; 0 turns it off)
/// overrides it, read once, for A/B runs and other cards.
fn tc_matmul_rows() -> usize {
    static ROWS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    nanohost_kernels::knob::knob(
        &ROWS,
        "NANOHOST_TC_MATMUL_ROWS",
        16,
        |&r| r <= TC_MATMUL_MAX_ROWS,
        "a number of rows from 0 to 64",
    )
}

/// Up to how many rows `tc_matmul` takes the projections that narrow (fewer outputs than inputs:
/// Qwen3-0.6B's o_proj and down_proj, 1,024 outputs), where cuBLAS's kernels for 17-64 rows
/// take as long at 16 rows as at 64 (5.5 and 6.8 us in a chain on an H200): 32 by default (or
/// [`tc_matmul_rows`] if larger). Measured on an H200, bench-decode, 16 against 64: batch 20
/// 1.333 -> 1.246 ms/step, batch 64 1.632 -> 1.753 (tc_matmul loses at 64 rows;
/// results/gpu-h200-2026-11-29-fused-attention-input/). `NANOHOST_TC_MATMUL_NARROW_ROWS` (0 to
/// 64) overrides it, read once.
fn tc_matmul_narrow_rows() -> usize {
    static ROWS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    nanohost_kernels::knob::knob(
        &ROWS,
        "NANOHOST_TC_MATMUL_NARROW_ROWS",
        32.max(tc_matmul_rows()),
        |&r| r <= TC_MATMUL_MAX_ROWS,
        "a number of rows from 0 to 64",
    )
}

/// Whether a decode kernel ends the gate/up projection in its SwiGLU gate: on by default (on an
/// H200, batch 1 1.020 -> 0.973 ms/step; results/gpu-h200-2026-11-28-tc-matmul/).
/// `NANOHOST_FUSED_SWIGLU=0` keeps them apart, read once, for A/B runs.
fn fused_swiglu() -> bool {
    static FUSED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    nanohost_kernels::knob::switch(&FUSED, "NANOHOST_FUSED_SWIGLU", true)
}

impl Qwen3 {
    /// Builds the model from tensors named as in Hugging Face checkpoints (see
    /// [`super::weights::expected_tensors`]).
    pub fn new(
        cfg: &Qwen3Config,
        mut w: HashMap<String, Tensor>,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let mut take = |name: String| {
            w.remove(&name)
                .with_context(|| format!("tensor {name} is missing"))
        };
        let linear = |t: Tensor| Linear::new(t, None);
        let embed = take("model.embed_tokens.weight".into())?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{l}");
            layers.push(Layer {
                input_norm: take(format!("{p}.input_layernorm.weight"))?,
                qkv_proj: linear(Tensor::cat(
                    &[
                        take(format!("{p}.self_attn.q_proj.weight"))?,
                        take(format!("{p}.self_attn.k_proj.weight"))?,
                        take(format!("{p}.self_attn.v_proj.weight"))?,
                    ],
                    0,
                )?),
                o_proj: linear(take(format!("{p}.self_attn.o_proj.weight"))?),
                q_norm: take(format!("{p}.self_attn.q_norm.weight"))?,
                k_norm: take(format!("{p}.self_attn.k_norm.weight"))?,
                post_norm: take(format!("{p}.post_attention_layernorm.weight"))?,
                gate_up_proj: linear(Tensor::cat(
                    &[
                        take(format!("{p}.mlp.gate_proj.weight"))?,
                        take(format!("{p}.mlp.up_proj.weight"))?,
                    ],
                    0,
                )?),
                down_proj: linear(take(format!("{p}.mlp.down_proj.weight"))?),
            });
        }
        let norm = take("model.norm.weight".into())?;
        let lm_head = if cfg.tie_word_embeddings {
            linear(embed.clone())
        } else {
            linear(take("lm_head.weight".into())?)
        };
        let rope = Rope::new(
            cfg.head_dim,
            cfg.rope_theta,
            cfg.max_position_embeddings,
            dtype,
            device,
        )?;
        Ok(Qwen3 {
            cfg: cfg.clone(),
            embed,
            lm_head,
            layers,
            norm,
            rope,
            device: device.clone(),
            dtype,
        })
    }

    pub fn config(&self) -> &Qwen3Config {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Runs the batch; returns logits `[logit_rows.len(), vocab_size]` in the model's dtype.
    pub fn forward(&self, batch: &ForwardBatch, pool: &KvPool) -> Result<Tensor> {
        let step = self.prepare(batch, pool, false)?;
        let len = step.ints.len();
        let ints = Tensor::from_vec(step.ints, len, &self.device)?;
        self.forward_prepared(&ints, &step.shape, pool)
    }

    /// Checks the batch and flattens its integer inputs. `widen` gives the attention metadata
    /// room for every row at its row-key bucket plus the groups' shared entries
    /// ([`MetaLayout::graph_slot_capacity`]), so that steps whose contexts fall in the same
    /// bucket share the shape.
    pub fn prepare(&self, batch: &ForwardBatch, pool: &KvPool, widen: bool) -> Result<HostStep> {
        let n = batch.tokens.len();
        if batch.positions.len() != n || batch.slots.len() != n {
            anyhow::bail!(
                "forward: {n} tokens but {} positions and {} slots",
                batch.positions.len(),
                batch.slots.len()
            );
        }
        if let Some(p) = batch
            .positions
            .iter()
            .find(|&&p| p as usize >= self.rope.max_positions())
        {
            anyhow::bail!(
                "position {p} is beyond max_position_embeddings ({})",
                self.rope.max_positions()
            );
        }
        if let Some(r) = batch.logit_rows.iter().find(|&&r| r as usize >= n) {
            anyhow::bail!("forward: logits asked for row {r} of a batch of {n} rows");
        }
        let (meta, mut layout) = AttentionBatch::flatten(
            batch.seqs,
            batch.groups,
            n,
            pool.block_size(),
            pool.physical_blocks(),
        )?;
        layout.cross_row_reads = batch.cross_row_reads;
        if widen {
            layout.widen(layout.graph_slot_capacity())?;
        }
        let mut ints = Vec::with_capacity(3 * n + batch.logit_rows.len() + meta.len());
        for part in [batch.tokens, batch.positions, batch.slots, batch.logit_rows] {
            ints.extend_from_slice(part);
        }
        ints.extend(meta);
        Ok(HostStep {
            ints,
            shape: StepShape {
                tokens: n,
                logit_rows: batch.logit_rows.len(),
                every_row: batch.logits_every_row(),
                meta: layout,
            },
        })
    }

    /// The forward pass from integer inputs already on the device, laid out as `shape` says
    /// (`ints` holds at least [`StepShape::buffer_len`] values): nothing here reads the host,
    /// so a CUDA graph can capture it.
    pub fn forward_prepared(
        &self,
        ints: &Tensor,
        shape: &StepShape,
        pool: &KvPool,
    ) -> Result<Tensor> {
        // In the model's dtype: the sampler reads them as they are (an f32 copy of a batch's
        // logits cost 90 us per step at batch 64 on an H200). Through cuBLAS at any batch: a
        // long stream of columns is what its kernels do best (the 311 MB head of Qwen3-0.6B at
        // 4.18 TB/s at batch 1 on an H200, the few-row kernel at 3.77: bench-chain,
        // results/gpu-h200-2026-11-28-chain/).
        Ok(self
            .lm_head
            .forward(&self.last_hidden(ints, shape, pool)?)?)
    }

    /// [`Self::forward_prepared`] with the logits written into the first rows of `logits`, a
    /// buffer that outlives a captured graph: the same cuBLAS call, without a copy of them.
    pub fn forward_prepared_into(
        &self,
        ints: &Tensor,
        shape: &StepShape,
        pool: &KvPool,
        logits: &Tensor,
    ) -> Result<()> {
        Ok(nanohost_kernels::matmul_t_into(
            logits,
            &self.last_hidden(ints, shape, pool)?,
            self.lm_head.weight(),
        )?)
    }

    /// The final norm's output at the rows that want logits.
    fn last_hidden(&self, ints: &Tensor, shape: &StepShape, pool: &KvPool) -> Result<Tensor> {
        let (n, meta_start) = (shape.tokens, shape.meta_start());
        let rows = ints.narrow(0, 3 * n, shape.logit_rows)?;
        let eps = self.cfg.rms_norm_eps as f32;
        let first_norm = &self.layers[0].input_norm;
        // One kernel on the GPU (embed_rms_norm_rope); candle's three ops, which the CPU tests
        // pin, on the CPU.
        let (mut x, mut h, cos_sin) = if self.device.is_cuda() {
            embed_rms_norm_rope(
                &self.embed,
                &ints.narrow(0, 0, 2 * n)?,
                first_norm,
                self.rope.table(),
                eps,
            )?
        } else {
            let x = self.embed.index_select(&ints.narrow(0, 0, n)?, 0)?;
            let h = rms_norm(&x, first_norm, eps)?;
            (x, h, self.rope.gather(&ints.narrow(0, n, n)?)?)
        };
        let step = StepInputs {
            cos_sin,
            slots: ints.narrow(0, 2 * n, n)?,
            attention: AttentionBatch::from_meta(
                ints.narrow(0, meta_start, shape.meta.total_len())?,
                shape.meta,
            )?
            .with_rope_theta(self.cfg.rope_theta),
        };
        for (l, layer) in self.layers.iter().enumerate() {
            // Each layer ends with its residual add fused into the norm that follows it: the
            // next layer's input norm, or the final norm.
            let next_norm = self.layers.get(l + 1).map_or(&self.norm, |n| &n.input_norm);
            (x, h) = self.layer_forward(l, layer, &x, &h, next_norm, &step, pool)?;
        }
        drop(x);
        Ok(if shape.every_row {
            h
        } else {
            h.index_select(&rows, 0)?
        })
    }

    /// The kernel for `x @ w^T` with `n` outputs: on the GPU, `small_matmul` for a few rows
    /// (decode at small batch), `tc_matmul` for up to 64 where it runs (sm_90+, bf16/f16), else
    /// candle's matmul (cuBLAS on the GPU). `swiglu`: the weight is a gate/up pair, n outputs
    /// from 2 n rows.
    fn matmul_kernel(&self, x: &Tensor, n: usize, swiglu: bool) -> Result<MatmulKernel> {
        let (rows, k) = x.dims2()?;
        let fits = if swiglu {
            tc_matmul_swiglu_fits
        } else {
            tc_matmul_fits
        };
        Ok(
            if self.device.is_cuda() && rows <= small_matmul_rows() && k % 8 == 0 {
                MatmulKernel::FewRows
            } else if (rows <= tc_matmul_rows() || (n < k && rows <= tc_matmul_narrow_rows()))
                && fits(&self.device, x.dtype(), rows, n, k)
            {
                MatmulKernel::TensorCores
            } else {
                MatmulKernel::Candle
            },
        )
    }

    fn linear(&self, l: &Linear, x: &Tensor) -> Result<Tensor> {
        Ok(match self.matmul_kernel(x, l.weight().dim(0)?, false)? {
            MatmulKernel::FewRows => small_matmul(x, l.weight())?,
            MatmulKernel::TensorCores => tc_matmul(x, l.weight())?,
            MatmulKernel::Candle => l.forward(x)?,
        })
    }

    /// The MLP's gate/up projection and its SwiGLU gate: one kernel where a decode kernel takes
    /// the rows (unless [`fused_swiglu`] is off), else the projection and `silu_mul`.
    fn swiglu(&self, l: &Linear, x: &Tensor) -> Result<Tensor> {
        let kernel = if fused_swiglu() {
            self.matmul_kernel(x, l.weight().dim(0)? / 2, true)?
        } else {
            MatmulKernel::Candle
        };
        Ok(match kernel {
            MatmulKernel::FewRows => small_matmul_swiglu(x, l.weight())?,
            MatmulKernel::TensorCores => tc_matmul_swiglu(x, l.weight())?,
            MatmulKernel::Candle => silu_mul(&self.linear(l, x)?)?,
        })
    }

    /// One layer from its input `x` and `h` = its input norm of `x`; returns the layer's output
    /// and `next_norm` of it.
    #[allow(clippy::too_many_arguments)]
    fn layer_forward(
        &self,
        l: usize,
        layer: &Layer,
        x: &Tensor,
        h: &Tensor,
        next_norm: &Tensor,
        step: &StepInputs,
        pool: &KvPool,
    ) -> Result<(Tensor, Tensor)> {
        let c = &self.cfg;
        let n = x.dim(0)?;
        let eps = c.rms_norm_eps as f32;
        let qkv = self.linear(&layer.qkv_proj, h)?;
        let (k_pool, v_pool) = pool.layer(l);
        let norms = QkvNorms {
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            q_norm: &layer.q_norm,
            k_norm: &layer.k_norm,
            eps,
        };
        let scale = 1.0 / (c.head_dim as f32).sqrt();
        let attn = qkv_attention(
            &qkv,
            &norms,
            &step.cos_sin,
            k_pool,
            v_pool,
            &step.slots,
            &step.attention,
            scale,
        )?;
        let attn = self.linear(
            &layer.o_proj,
            &attn.reshape((n, c.num_attention_heads * c.head_dim))?,
        )?;
        let (x, h) = add_rms_norm(x, &attn, &layer.post_norm, eps)?;
        let mlp = self.linear(&layer.down_proj, &self.swiglu(&layer.gate_up_proj, &h)?)?;
        Ok(add_rms_norm(&x, &mlp, next_norm, eps)?)
    }
}
