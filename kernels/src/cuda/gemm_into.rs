//! `matmul_t_into` on the GPU: cuBLAS, on candle's handle and stream, writing straight into the
//! destination's rows.

use crate::elem::contiguous_range;
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::cublas::{result::gemm_strided_batched_ex, sys};
use candle_core::cuda_backend::cudarc::driver::{DevicePtr, DevicePtrMut};
use candle_core::cuda_backend::WrapErr;
use candle_core::{CudaStorage, DType, Layout, Result};

pub(crate) fn matmul_t_into(
    o: &mut CudaStorage,
    ol: &Layout,
    x: &CudaStorage,
    xl: &Layout,
    w: &CudaStorage,
    wl: &Layout,
) -> Result<()> {
    let dev = x.device().clone();
    let (rows, k) = xl.shape().dims2()?;
    let n = wl.dims()[0];
    let ((x0, x1), (w0, w1)) = (
        contiguous_range(xl, "x")?,
        contiguous_range(wl, "the weight")?,
    );
    let o0 = ol.start_offset();
    let blas = dev.cublas_handle();
    let stream = dev.cuda_stream();
    // candle's matmul of x [rows, k] by w.t(): column-major C [n, rows] = op_T(W [k, n]) . X [k, rows],
    // with f32 accumulation unless candle was told to allow reduced precision.
    // f16 with reduced precision allowed accumulates in f16, and then takes f16 scalars.
    let (alpha, beta) = (1f32, 0f32);
    let (alpha16, beta16) = (half::f16::ONE, half::f16::ZERO);
    use candle_core::cuda_backend as cb;
    use std::ffi::c_void;
    use sys::cublasComputeType_t as C;
    let f32s = (
        &alpha as *const f32 as *const c_void,
        &beta as *const f32 as *const c_void,
    );
    let (compute, scalars) = match x.dtype() {
        DType::BF16 if cb::gemm_reduced_precision_bf16() => (C::CUBLAS_COMPUTE_32F_FAST_16BF, f32s),
        DType::F16 if cb::gemm_reduced_precision_f16() => (
            C::CUBLAS_COMPUTE_16F,
            (
                &alpha16 as *const half::f16 as *const c_void,
                &beta16 as *const half::f16 as *const c_void,
            ),
        ),
        DType::F32 if cb::gemm_reduced_precision_f32() => (C::CUBLAS_COMPUTE_32F_FAST_TF32, f32s),
        _ => (C::CUBLAS_COMPUTE_32F, f32s),
    };
    macro_rules! gemm {
        ($t:ty, $cuda:ident) => {{
            let xs = x.as_cuda_slice::<$t>()?.slice(x0..x1);
            let ws = w.as_cuda_slice::<$t>()?.slice(w0..w1);
            let mut os = o.as_cuda_slice_mut::<$t>()?.slice_mut(o0..o0 + rows * n);
            let ((xp, _gx), (wp, _gw), (op, _go)) = (
                xs.device_ptr(&stream),
                ws.device_ptr(&stream),
                os.device_ptr_mut(&stream),
            );
            let (m, nn, kk) = (n as i32, rows as i32, k as i32);
            // SAFETY: the three ranges hold [rows, k], [n, k] and [rows, n] elements (checked by
            // matmul_t_into), and the handle runs on their stream.
            unsafe {
                gemm_strided_batched_ex(
                    *blas.handle(),
                    sys::cublasOperation_t::CUBLAS_OP_T,
                    sys::cublasOperation_t::CUBLAS_OP_N,
                    m,
                    nn,
                    kk,
                    scalars.0,
                    wp as *const _,
                    sys::cudaDataType_t::$cuda,
                    kk,
                    (n * k) as i64,
                    xp as *const _,
                    sys::cudaDataType_t::$cuda,
                    kk,
                    (rows * k) as i64,
                    scalars.1,
                    op as *mut _,
                    sys::cudaDataType_t::$cuda,
                    m,
                    (rows * n) as i64,
                    1,
                    compute,
                    sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT_TENSOR_OP,
                )
            }
            .w()
        }};
    }
    match x.dtype() {
        DType::BF16 => gemm!(half::bf16, CUDA_R_16BF),
        DType::F16 => gemm!(half::f16, CUDA_R_16F),
        DType::F32 => gemm!(f32, CUDA_R_32F),
        other => Err(crate::elem::unsupported("matmul_t_into", other)),
    }
}
