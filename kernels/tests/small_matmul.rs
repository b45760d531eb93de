//! The few-rows matmul against candle's matmul (CPU; the CUDA kernel is checked against this
//! implementation in cuda_ops).

use candle_core::{Device, Tensor};

#[test]
fn small_matmul_equals_x_times_w_transposed() {
    let dev = Device::Cpu;
    for rows in [1, 3, 8] {
        let x = Tensor::randn(0f32, 1.0, (rows, 64), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (37, 64), &dev).unwrap();
        let got = nanohost_kernels::small_matmul(&x, &w).unwrap();
        let want = x.matmul(&w.t().unwrap()).unwrap();
        let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-4, "{rows} rows: {diff}");
    }
    let x = Tensor::randn(0f32, 1.0, (9, 64), &dev).unwrap();
    let w = Tensor::randn(0f32, 1.0, (37, 64), &dev).unwrap();
    assert!(nanohost_kernels::small_matmul(&x, &w).unwrap_err().to_string().contains("at most 8 rows"));
    assert!(nanohost_kernels::small_matmul(&x.narrow(0, 0, 2).unwrap().narrow(1, 0, 60).unwrap(), &w.narrow(1, 0, 60).unwrap()).is_err());
}

/// The fused ops equal their parts one after the other (the CPU oracle the GPU kernels are
/// checked against in cuda_ops): new residual, projection, and the SwiGLU'd projection.
#[test]
fn fused_prologue_matmuls_equal_their_parts() {
    let dev = Device::Cpu;
    for rows in [1, 2, 5] {
        let x = Tensor::randn(0f32, 1.0, (rows, 64), &dev).unwrap();
        let d = Tensor::randn(0f32, 1.0, (rows, 64), &dev).unwrap();
        let norm = Tensor::randn(1f32, 0.1, 64, &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (40, 64), &dev).unwrap();
        let (sum, proj) = nanohost_kernels::add_norm_matmul(&x, &d, &norm, 1e-6, &w).unwrap();
        let (want_sum, h) = nanohost_kernels::add_rms_norm(&x, &d, &norm, 1e-6).unwrap();
        let want = nanohost_kernels::small_matmul(&h, &w).unwrap();
        assert_eq!(sum.to_vec2::<f32>().unwrap(), want_sum.to_vec2::<f32>().unwrap());
        assert_eq!(proj.to_vec2::<f32>().unwrap(), want.to_vec2::<f32>().unwrap());
        let gate_up = Tensor::randn(0f32, 1.0, (rows, 128), &dev).unwrap();
        let got = nanohost_kernels::silu_matmul(&gate_up, &w).unwrap();
        let want = nanohost_kernels::small_matmul(&nanohost_kernels::silu_mul(&gate_up).unwrap(), &w).unwrap();
        assert_eq!(got.to_vec2::<f32>().unwrap(), want.to_vec2::<f32>().unwrap());
    }
    let x = Tensor::zeros((9, 64), candle_core::DType::F32, &dev).unwrap();
    let w = Tensor::zeros((4, 64), candle_core::DType::F32, &dev).unwrap();
    assert!(nanohost_kernels::add_norm_matmul(&x, &x, &x.narrow(0, 0, 1).unwrap().squeeze(0).unwrap(), 1e-6, &w).is_err());
    assert!(nanohost_kernels::silu_matmul(&x.narrow(0, 0, 2).unwrap(), &w).is_err());
}
