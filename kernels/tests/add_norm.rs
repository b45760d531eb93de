//! The fused residual add + RMSNorm against the two ops it replaces (CPU; the CUDA kernel is
//! checked against this implementation in cuda_ops).

use candle_core::{DType, Device, Tensor};

#[test]
fn add_rms_norm_equals_add_then_rms_norm() {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1.0, (5, 96), &dev).unwrap();
    let d = Tensor::randn(0f32, 1.0, (5, 96), &dev).unwrap();
    let w = Tensor::randn(1f32, 0.2, 96, &dev).unwrap();
    // Up to two units in the last place of the largest output (bf16: 8 significant bits).
    for (dtype, ulps) in [(DType::F32, 2f32.powi(-20)), (DType::BF16, 2f32.powi(-7))] {
        let (x, d, w) = (x.to_dtype(dtype).unwrap(), d.to_dtype(dtype).unwrap(), w.to_dtype(dtype).unwrap());
        let (sum, normed) = nanohost_kernels::add_rms_norm(&x, &d, &w, 1e-6).unwrap();
        let want_sum = (&x + &d).unwrap();
        assert_eq!(sum.to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap(), want_sum.to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap());
        let want = candle_nn::ops::rms_norm(&want_sum, &w, 1e-6).unwrap();
        let tol = ulps * want.to_dtype(DType::F32).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        let diff = (normed.to_dtype(DType::F32).unwrap() - want.to_dtype(DType::F32).unwrap()).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff <= tol, "{dtype:?}: {diff}");
    }
    let bad = nanohost_kernels::add_rms_norm(&x, &x.narrow(0, 0, 4).unwrap(), &w, 1e-6).unwrap_err().to_string();
    assert!(bad.contains("add_rms_norm"), "{bad}");
}
