//! Weights asked of L2 ahead of the matmul that reads them.
//!
//! A small-batch decode step streams every weight once, but in a chain of short kernels: during
//! the norms, the attention and the activations, and while each matmul ramps up, DRAM idles. A
//! hint to L2 issued a kernel or more ahead of a matmul fills those gaps, and the matmul then
//! reads from L2. [`small_matmul`](crate::small_matmul) issues it for the next weight itself;
//! [`l2_prefetch`] is the same hint as its own short kernel, for matmuls that are not nanohost's
//! (cuBLAS at larger batches).
//!
//! A hint only: nothing waits for it and results cannot change. It needs sm_90 or later; it is
//! nothing on the CPU and on older cards, and `NANOHOST_L2_PREFETCH=0` turns it off (A/B runs).

use candle_core::{Result, Tensor};

/// Most bytes of one weight asked for: a quarter of an H100/H200's 50 MB L2, so that a hint
/// never evicts the weight being read (the largest Qwen3-0.6B projection is 12.6 MB; of the LM
/// head, 311 MB, only its start is asked for).
pub const L2_PREFETCH_MAX_BYTES: usize = 12 << 20;

/// Whether prefetch hints are issued (`NANOHOST_L2_PREFETCH`, read once; default on).
pub fn l2_prefetch_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("NANOHOST_L2_PREFETCH").map_or(true, |v| v != "0"))
}

/// Asks L2 for the start of `w` (up to [`L2_PREFETCH_MAX_BYTES`]) in a short kernel on `w`'s
/// stream; nothing on the CPU.
pub fn l2_prefetch(w: &Tensor) -> Result<()> {
    match w.device() {
        #[cfg(feature = "cuda")]
        candle_core::Device::Cuda(_) if l2_prefetch_enabled() => crate::cuda::l2_prefetch(w),
        _ => Ok(()),
    }
}
