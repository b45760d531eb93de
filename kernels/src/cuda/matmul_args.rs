//! What the two decode matmul kernels (small_matmul.cuh, tc_matmul.cuh) share: one signature,
//! `(x, w, out, rows, n, k)`, and one contract on their operands.

use super::alloc_out;
use super::launch::Launch;
use crate::elem::contiguous_range;
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{CudaFunction, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::CudaStorageSlice;
use candle_core::{CudaStorage, Layout, Result, Shape};
use std::ops::Range;

/// `x` `[rows, k]` and the weight, `n` rows (under `swiglu`, 2 `n`: gate rows then up rows),
/// both contiguous and starting 16-byte aligned (the kernels load 16 bytes at a time); the
/// output is `[rows, n]`.
pub(super) struct MatmulArgs {
    pub rows: usize,
    pub n: usize,
    pub k: usize,
    x: Range<usize>,
    w: Range<usize>,
}

impl MatmulArgs {
    /// `op` names the kernel in errors.
    pub fn new(op: &str, xl: &Layout, wl: &Layout, swiglu: bool) -> Result<Self> {
        let (rows, k) = xl.shape().dims2()?;
        let n = if swiglu {
            wl.dims()[0] / 2
        } else {
            wl.dims()[0]
        };
        let ((x0, x1), (w0, w1)) = (
            contiguous_range(xl, "x")?,
            contiguous_range(wl, "the weight")?,
        );
        if x0 % 8 != 0 || w0 % 8 != 0 {
            candle_core::bail!("{op} (cuda): x and the weight must start 16-byte aligned");
        }
        Ok(MatmulArgs {
            rows,
            n,
            k,
            x: x0..x1,
            w: w0..w1,
        })
    }

    /// Launches `func` with `cfg` (its blocks in clusters of `cluster` along x, where given) on
    /// `x` and `w`, into a new `[rows, n]` output.
    ///
    /// # Safety
    /// `func` is one of the two kernels, `cfg` a grid it accepts for these shapes, and it writes
    /// every output element.
    pub unsafe fn launch(
        &self,
        x: &CudaStorage,
        w: &CudaStorage,
        func: &CudaFunction,
        cfg: LaunchConfig,
        cluster: Option<u32>,
    ) -> Result<(CudaStorage, Shape)> {
        let dev = x.device().clone();
        let stream = dev.cuda_stream();
        let (rows, n, k) = (self.rows, self.n, self.k);
        macro_rules! launch {
            ($t:ty, $wrap:ident) => {{
                let (xs, ws) = (
                    x.as_cuda_slice::<$t>()?.slice(self.x.clone()),
                    w.as_cuda_slice::<$t>()?.slice(self.w.clone()),
                );
                // SAFETY: the kernel writes every element (the caller's contract).
                let out = unsafe { alloc_out::<$t>(&dev, rows * n)? };
                let mut b = Launch::new(&stream, func);
                b.arg(&xs).arg(&ws).arg(&out);
                if let Some(c) = cluster {
                    b.cluster_x(c);
                }
                candle_core::builder_arg!(b, rows as u32, n as u32, k as u32);
                // SAFETY: the caller's contract.
                unsafe { b.launch(cfg) }?;
                CudaStorageSlice::$wrap(out)
            }};
        }
        let slice = per_float_dtype!(x.dtype(), "decode matmul", launch);
        Ok((CudaStorage { slice, device: dev }, Shape::from((rows, n))))
    }
}
