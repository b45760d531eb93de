//! `x @ w^T` for a few rows: decode at batch 1-8 multiplies a handful of rows by every weight
//! matrix, a pure read of the weights; cuBLAS's kernels for that shape reached about 1.1 TB/s on
//! an H200 (results/gpu-h200-2026-11-28-fused), a warp per output column streaming its weight
//! row with 16-byte loads gets much closer to the bandwidth.

use crate::elem::{unsupported, Elem};
use candle_core::{backend::BackendStorage, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

/// Most rows the kernel takes (one accumulator per row per lane).
pub const SMALL_MATMUL_MAX_ROWS: usize = 8;

/// `x` `[rows, k]` times `w` `[n, k]` transposed: `[rows, n]`, accumulated in f32. For at most
/// [`SMALL_MATMUL_MAX_ROWS`] rows and `k` a multiple of 8.
pub fn small_matmul(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    small_matmul_op(x, w, SmallMatmul { swiglu: false })
}

/// The MLP's gate and up projections and the SwiGLU gate in one kernel: `w` is `[2 n, k]`, the
/// gate rows then the up rows (one fused gate/up projection), and the result is `[rows, n]` =
/// `silu(x @ gate^T) * (x @ up^T)`, from the f32 sums (one rounding, where the separate ops
/// round the projection first). Shapes as [`small_matmul`].
pub fn small_matmul_swiglu(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if w.dim(0)? % 2 != 0 {
        candle_core::bail!(
            "small_matmul_swiglu: w {:?} is not gate and up halves",
            w.dims()
        );
    }
    small_matmul_op(x, w, SmallMatmul { swiglu: true })
}

fn small_matmul_op(x: &Tensor, w: &Tensor, op: SmallMatmul) -> Result<Tensor> {
    let (rows, k) = x.dims2()?;
    let (_, wk) = w.dims2()?;
    if wk != k || rows == 0 || rows > SMALL_MATMUL_MAX_ROWS || k % 8 != 0 || x.dtype() != w.dtype()
    {
        candle_core::bail!("small_matmul: x {:?} {:?} and w {:?} {:?} (at most {SMALL_MATMUL_MAX_ROWS} rows, k a multiple of 8)", x.dims(), x.dtype(), w.dims(), w.dtype());
    }
    x.contiguous()?.apply_op2_no_bwd(&w.contiguous()?, &op)
}

/// `swiglu`: the weight is gate and up halves and the output their SwiGLU gate.
pub struct SmallMatmul {
    pub swiglu: bool,
}

fn run<T: Elem>(x: &[T], w: &[T], rows: usize, k: usize, swiglu: bool) -> Vec<T> {
    let n = w.len() / k;
    let dot = |xr: &[T], c: usize| {
        xr.iter()
            .zip(&w[c * k..(c + 1) * k])
            .map(|(a, b)| a.to_f32() * b.to_f32())
            .sum::<f32>()
    };
    let mut out = Vec::with_capacity(rows * n);
    for r in 0..rows {
        let xr = &x[r * k..(r + 1) * k];
        if swiglu {
            out.extend(
                (0..n / 2).map(|c| {
                    T::from_f32(crate::silu_mul::silu_times(dot(xr, c), dot(xr, n / 2 + c)))
                }),
            );
        } else {
            out.extend((0..n).map(|c| T::from_f32(dot(xr, c))));
        }
    }
    out
}

impl CustomOp2 for SmallMatmul {
    fn name(&self) -> &'static str {
        "small-matmul"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (rows, k) = xl.shape().dims2()?;
        let n = if self.swiglu {
            wl.dims()[0] / 2
        } else {
            wl.dims()[0]
        };
        let r = |l: &Layout| l.contiguous_offsets().expect("made contiguous");
        let ((x0, x1), (w0, w1)) = (r(xl), r(wl));
        let out = match (x, w) {
            (CpuStorage::F32(x), CpuStorage::F32(w)) => {
                CpuStorage::F32(run(&x[x0..x1], &w[w0..w1], rows, k, self.swiglu))
            }
            (CpuStorage::BF16(x), CpuStorage::BF16(w)) => {
                CpuStorage::BF16(run(&x[x0..x1], &w[w0..w1], rows, k, self.swiglu))
            }
            (CpuStorage::F16(x), CpuStorage::F16(w)) => {
                CpuStorage::F16(run(&x[x0..x1], &w[w0..w1], rows, k, self.swiglu))
            }
            (x, _) => return Err(unsupported("small_matmul", x.dtype())),
        };
        Ok((out, Shape::from((rows, n))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        xl: &Layout,
        w: &candle_core::CudaStorage,
        wl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::small_matmul(x, xl, w, wl, self.swiglu)
    }
}
