//! Attention and KV-cache operations over nanohost's paged KV pool, as candle custom ops.
//!
//! The pool of one layer is a pair of tensors `[num_blocks, block_size, kv_heads, head_dim]`
//! (K and V). A sequence's context is an ordered list of [`KvSpan`]s: runs of pool blocks, each
//! holding `len` tokens from the start of its first block. Every op has a CPU implementation,
//! which is also the oracle its CUDA implementation (feature `cuda`) is tested against, but two
//! that exist for the GPU alone: [`tc_matmul`] (sm_90+; its tests compare it with candle's f32
//! matmul) and [`matmul_t_into`] (candle's matmul written in place; on the CPU, candle's matmul
//! and a copy).
//!
//! Data path per step: the host flattens the batch's contexts once into an [`AttentionBatch`];
//! each layer writes its new keys/values with [`write_kv`] and runs [`paged_attention`]; the
//! logits become token ids with [`sample_rows`] on the same device.

mod add_norm;
mod cascade;
#[cfg(feature = "cuda")]
mod cuda;
mod elem;
mod embed_norm;
pub mod graph_anatomy;
pub mod knob;
mod kv_write;
mod layout;
mod matmul_into;
mod norm_rope;
mod paged_attention;
mod qkv_attention;
mod qkv_write;
mod rope_shift;
mod sample;
mod silu_mul;
mod small_matmul;
mod stage;
mod tc_matmul;

pub use add_norm::{add_rms_norm, AddRmsNorm};
pub use cascade::{SharedGroup, SHARED_CHUNK};
pub use embed_norm::{embed_rms_norm_rope, EmbedRmsNormRope};
pub use graph_anatomy::GraphAnatomy;
pub use kv_write::{write_kv, WriteKv};
pub use layout::{
    context_slot, row_keys_bucket, AttentionBatch, KvSpan, MetaLayout, SeqAttention, TILED_MIN_ROWS,
};
pub use matmul_into::matmul_t_into;
pub use norm_rope::{rms_norm_rope, RmsNormRope};
pub use paged_attention::{paged_attention, PagedAttention};
pub use qkv_attention::{qkv_attention, qkv_attention_fuses};
pub use qkv_write::{qkv_norm_rope_write, QkvNormRopeWrite, QkvNorms};
pub use rope_shift::{rerotate_keys, Rotation};
pub use sample::{argmax, inverse_cdf, sample_rows, sample_rows_async, SampleRows};
pub use silu_mul::{silu_mul, SiluMul};
pub use small_matmul::{small_matmul, small_matmul_swiglu, SmallMatmul, SMALL_MATMUL_MAX_ROWS};
pub use stage::StepStage;
pub use tc_matmul::{
    tc_matmul, tc_matmul_fits, tc_matmul_swiglu, tc_matmul_swiglu_fits, TC_MATMUL_MAX_ROWS,
};

/// Whether kernels on `device` are launched with programmatic dependent launch (CUDA, sm_90 and
/// later, unless `NANOHOST_PDL=0`): each may start while the one before it finishes.
pub fn programmatic_launch(device: &candle_core::Device) -> bool {
    match device {
        #[cfg(feature = "cuda")]
        candle_core::Device::Cuda(d) => cuda::pdl_enabled(d),
        _ => false,
    }
}
