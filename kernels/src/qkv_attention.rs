//! The attention block from the fused QKV projection: [`qkv_norm_rope_write`] then
//! [`paged_attention`]. On the GPU, where no row reads another row's new key (decode: one query
//! row per sequence, no cascade group), that is one kernel: each attention block makes its own
//! q heads and one of them writes the row's key and value before the key stream starts. It
//! saves a launch, and q's trip through memory, per layer: the step at batch 64 is a chain of
//! about 250 short kernels, each boundary a microsecond or more.

use crate::{
    paged_attention, qkv_norm_rope_write, AttentionBatch, MetaLayout, PagedAttention, QkvNorms,
};
use candle_core::{CustomOp3, Layout, Result, Shape, Tensor};
use std::sync::OnceLock;

/// Whether the GPU fuses the two ops where the batch allows (`NANOHOST_FUSED_ATTENTION_INPUT`,
/// 1 or 0, default 1: the A/B switch).
fn fused_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    crate::knob::switch(&ON, "NANOHOST_FUSED_ATTENTION_INPUT", true)
}

/// Whether one kernel can take this batch: on the GPU, head_dim 64, 128 or 256, one query row
/// per sequence, no shared group (and so no tiled prefill). A CUDA graph's padding rows
/// (graph_step.rs) all write and read the pool's scratch slot: each writes the same values as
/// the others (the same token at the same position), and their outputs are dropped.
pub fn qkv_attention_fuses(qkv: &Tensor, head_dim: usize, batch: &AttentionBatch) -> bool {
    qkv.device().is_cuda() && fused_enabled() && fuses(&batch.layout, head_dim)
}

/// The kernel's side of [`qkv_attention_fuses`], which its launch checks again.
pub(crate) fn fuses(l: &MetaLayout, head_dim: usize) -> bool {
    [64, 128, 256].contains(&head_dim)
        && l.rows == l.num_seqs
        && l.num_groups == 0
        && l.num_tiled == 0
        && !l.cross_row_reads
}

/// `qkv` `[tokens, (heads + 2 kv_heads) head_dim]` as [`qkv_norm_rope_write`] takes it (token
/// t's key and value go to pool slot `slots[t]`), then attention of the normed, rotated
/// queries as [`paged_attention`] does: the result, `[tokens, heads, head_dim]`, and the pools
/// are those of the two ops in turn, bit for bit.
#[allow(clippy::too_many_arguments)]
pub fn qkv_attention(
    qkv: &Tensor,
    n: &QkvNorms,
    cos_sin: &Tensor,
    k_pool: &Tensor,
    v_pool: &Tensor,
    slots: &Tensor,
    batch: &AttentionBatch,
    softmax_scale: f32,
) -> Result<Tensor> {
    let head_dim = n.q_norm.dims1()?;
    if !qkv_attention_fuses(qkv, head_dim, batch) {
        let q = qkv_norm_rope_write(qkv, n, cos_sin, k_pool, v_pool, slots)?;
        return paged_attention(&q, k_pool, v_pool, batch, softmax_scale);
    }
    let (tokens, _) = n.check_qkv("qkv_attention", qkv, k_pool, v_pool)?;
    crate::qkv_write::check_kernel_inputs(
        "qkv_attention",
        tokens,
        head_dim,
        qkv,
        cos_sin,
        slots,
        k_pool,
    )?;
    let op = QkvAttention {
        attention: PagedAttention::new(
            "qkv_attention",
            (tokens, n.heads, head_dim),
            k_pool,
            v_pool,
            batch,
            softmax_scale,
        )?,
        heads: n.heads,
        eps: n.eps,
        q_norm: n.q_norm.contiguous()?,
        k_norm: n.k_norm.contiguous()?,
        cos_sin: cos_sin.contiguous()?,
        slots: slots.contiguous()?,
    };
    qkv.contiguous()?.apply_op3_no_bwd(k_pool, v_pool, &op)
}

/// The CUDA op: the pools are written through their device pointers while candle borrows them
/// as inputs (as [`crate::QkvNormRopeWrite`] does).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
struct QkvAttention {
    attention: PagedAttention,
    heads: usize,
    eps: f32,
    q_norm: Tensor,
    k_norm: Tensor,
    cos_sin: Tensor,
    slots: Tensor,
}

impl CustomOp3 for QkvAttention {
    fn name(&self) -> &'static str {
        "qkv-attention"
    }

    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
    ) -> Result<(candle_core::CpuStorage, Shape)> {
        candle_core::bail!(
            "qkv_attention: the CPU composes qkv_norm_rope_write and paged_attention instead"
        )
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        qkv: &candle_core::CudaStorage,
        ql: &Layout,
        k: &candle_core::CudaStorage,
        kl: &Layout,
        v: &candle_core::CudaStorage,
        vl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let input = crate::cuda::QkvInput {
            heads: self.heads,
            q_norm: &self.q_norm,
            k_norm: &self.k_norm,
            cos_sin: &self.cos_sin,
            slots: &self.slots,
            eps: self.eps,
        };
        crate::cuda::paged_attention(&self.attention, qkv, ql, k, kl, v, vl, Some(&input))
    }
}
