//! The SwiGLU gate: `silu(gate) * up` from one fused gate/up projection, in one kernel.

use crate::elem::{unsupported, Elem};
use candle_core::{backend::BackendStorage, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

/// `x` is `[tokens, 2 * width]`: the gate columns then the up columns. Returns
/// `[tokens, width]` = `silu(gate) * up`, computed in f32.
pub fn silu_mul(x: &Tensor) -> Result<Tensor> {
    let (_, w2) = x.dims2()?;
    if w2 % 2 != 0 {
        candle_core::bail!("silu_mul: {w2} columns are not gate and up halves");
    }
    x.contiguous()?.apply_op1_no_bwd(&SiluMul)
}

pub struct SiluMul;

/// `silu(g) * u` in f32: the SwiGLU gate, here and in the matmuls that end in it.
pub(crate) fn silu_times(g: f32, u: f32) -> f32 {
    g / (1.0 + (-g).exp()) * u
}

fn run<T: Elem>(x: &[T], tokens: usize, width: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(tokens * width);
    for t in 0..tokens {
        let row = &x[t * 2 * width..(t + 1) * 2 * width];
        let (gate, up) = row.split_at(width);
        out.extend(
            gate.iter()
                .zip(up)
                .map(|(g, u)| T::from_f32(silu_times(g.to_f32(), u.to_f32()))),
        );
    }
    out
}

impl CustomOp1 for SiluMul {
    fn name(&self) -> &'static str {
        "silu-mul"
    }

    fn cpu_fwd(&self, x: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (tokens, w2) = l.shape().dims2()?;
        let (a, b) = l.contiguous_offsets().expect("made contiguous");
        let width = w2 / 2;
        let out = match x {
            CpuStorage::F32(x) => CpuStorage::F32(run(&x[a..b], tokens, width)),
            CpuStorage::BF16(x) => CpuStorage::BF16(run(&x[a..b], tokens, width)),
            CpuStorage::F16(x) => CpuStorage::F16(run(&x[a..b], tokens, width)),
            x => return Err(unsupported("silu_mul", x.dtype())),
        };
        Ok((out, Shape::from((tokens, width))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::silu_mul(x, l)
    }
}
