//! The attention block's input side in one op: from the fused QKV projection, Qwen3's per-head
//! RMSNorm and RoPE of q and k, and the KV write of k and v into their pool slots. On the GPU
//! that is one launch instead of four (two norm+RoPE, two writes): a decode step at small batch
//! is bound by the number of kernels.

use candle_core::{CustomOp3, Layout, Result, Shape, Tensor};

/// The inputs of [`qkv_norm_rope_write`] other than the QKV rows.
pub struct QkvNorms<'a> {
    pub heads: usize,
    pub kv_heads: usize,
    pub q_norm: &'a Tensor,
    pub k_norm: &'a Tensor,
    pub eps: f32,
}

/// `qkv` is `[tokens, (heads + 2 * kv_heads) * head_dim]`: q heads, then k heads, then v
/// heads. Writes `rope(rms_norm(k))` and `v` of token `t` to pool slot `slots[t]` of `k_pool`
/// and `v_pool`, and returns `rope(rms_norm(q))` as `[tokens, heads, head_dim]`. The CPU
/// composes [`crate::rms_norm_rope`] and [`crate::write_kv`] (the oracle the CUDA kernel is
/// tested against); CUDA runs one kernel.
pub fn qkv_norm_rope_write(
    qkv: &Tensor,
    n: &QkvNorms,
    cos_sin: &Tensor,
    k_pool: &Tensor,
    v_pool: &Tensor,
    slots: &Tensor,
) -> Result<Tensor> {
    let (tokens, head_dim) = n.check_qkv("qkv_norm_rope_write", qkv, k_pool, v_pool)?;
    let (q_width, kv_width) = (n.heads * head_dim, n.kv_heads * head_dim);
    if !qkv.device().is_cuda() {
        let q = crate::rms_norm_rope(
            &qkv.narrow(1, 0, q_width)?,
            n.heads,
            n.q_norm,
            cos_sin,
            n.eps,
        )?;
        let k = crate::rms_norm_rope(
            &qkv.narrow(1, q_width, kv_width)?,
            n.kv_heads,
            n.k_norm,
            cos_sin,
            n.eps,
        )?;
        crate::write_kv(k_pool, &k, slots)?;
        crate::write_kv(v_pool, &qkv.narrow(1, q_width + kv_width, kv_width)?, slots)?;
        return Ok(q);
    }
    check_kernel_inputs(
        "qkv_norm_rope_write",
        tokens,
        head_dim,
        qkv,
        cos_sin,
        slots,
        k_pool,
    )?;
    let op = QkvNormRopeWrite {
        heads: n.heads,
        kv_heads: n.kv_heads,
        eps: n.eps,
        q_norm: n.q_norm.contiguous()?,
        k_norm: n.k_norm.contiguous()?,
        k_pool: k_pool.clone(),
        v_pool: v_pool.clone(),
    };
    let q =
        qkv.contiguous()?
            .apply_op3_no_bwd(&cos_sin.contiguous()?, &slots.contiguous()?, &op)?;
    q.reshape((tokens, n.heads, head_dim))
}

impl QkvNorms<'_> {
    /// That `qkv`'s rows split into these heads (the norms' length each) and that the pools
    /// hold the KV heads: `(tokens, head_dim)`. `op` names the caller in the error.
    pub(crate) fn check_qkv(
        &self,
        op: &str,
        qkv: &Tensor,
        k_pool: &Tensor,
        v_pool: &Tensor,
    ) -> Result<(usize, usize)> {
        let (tokens, width) = qkv.dims2()?;
        let head_dim = self.q_norm.dims1()?;
        if width != (self.heads + 2 * self.kv_heads) * head_dim
            || self.k_norm.dims1()? != head_dim
            || k_pool.dims4()?.2 != self.kv_heads
            || k_pool.dims() != v_pool.dims()
        {
            candle_core::bail!(
                "{op}: qkv {:?} does not fit {} + 2 x {} heads of {head_dim} and pools {:?}",
                qkv.dims(),
                self.heads,
                self.kv_heads,
                k_pool.dims()
            );
        }
        Ok((tokens, head_dim))
    }
}

/// What the CUDA kernels that write the step's keys read besides `qkv`: a cos|sin row and a
/// slot per token, and pools of qkv's dtype (the CPU's composition checks its own).
pub(crate) fn check_kernel_inputs(
    op: &str,
    tokens: usize,
    head_dim: usize,
    qkv: &Tensor,
    cos_sin: &Tensor,
    slots: &Tensor,
    k_pool: &Tensor,
) -> Result<()> {
    if cos_sin.dims() != [tokens, head_dim]
        || slots.dims1()? != tokens
        || k_pool.dtype() != qkv.dtype()
    {
        candle_core::bail!(
            "{op}: cos_sin {:?} and {} slots for {tokens} tokens",
            cos_sin.dims(),
            slots.dims1()?
        );
    }
    Ok(())
}

/// The CUDA op: the pools are written through their device pointers while the op's three
/// arguments are borrowed by candle (candle has no op with two in-place outputs).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub struct QkvNormRopeWrite {
    pub(crate) heads: usize,
    pub(crate) kv_heads: usize,
    pub(crate) eps: f32,
    pub(crate) q_norm: Tensor,
    pub(crate) k_norm: Tensor,
    pub(crate) k_pool: Tensor,
    pub(crate) v_pool: Tensor,
}

impl CustomOp3 for QkvNormRopeWrite {
    fn name(&self) -> &'static str {
        "qkv-norm-rope-write"
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
            "qkv_norm_rope_write: the CPU composes rms_norm_rope and write_kv instead"
        )
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        qkv: &candle_core::CudaStorage,
        ql: &Layout,
        cs: &candle_core::CudaStorage,
        csl: &Layout,
        slots: &candle_core::CudaStorage,
        sl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::qkv_norm_rope_write(self, qkv, ql, cs, csl, slots, sl)
    }
}
