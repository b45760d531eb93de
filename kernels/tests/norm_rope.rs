//! The fused norm + RoPE op against candle's separate rms_norm and rope, on a strided slice.

use candle_core::{DType, Device, Tensor};
use nanohost_kernels::rms_norm_rope;

#[test]
fn fused_norm_rope_matches_the_composed_ops() {
    let dev = Device::Cpu;
    let (tokens, heads, d) = (7, 3, 64);
    // A fused projection [tokens, 5 heads]; the op reads heads 1..4 as a strided column slice.
    let proj = Tensor::randn(0f32, 1.0, (tokens, 5 * d), &dev).unwrap();
    let x = proj.narrow(1, d, heads * d).unwrap();
    let w = Tensor::randn(1f32, 0.1, d, &dev).unwrap();
    let angles = Tensor::randn(0f32, 2.0, (tokens, d / 2), &dev).unwrap();
    let (cos, sin) = (angles.cos().unwrap(), angles.sin().unwrap());
    let got = rms_norm_rope(&x, heads, &w, &Tensor::cat(&[&cos, &sin], 1).unwrap(), 1e-6).unwrap();
    let normed = candle_nn::ops::rms_norm(
        &x.contiguous().unwrap().reshape((tokens, heads, d)).unwrap(),
        &w,
        1e-6,
    )
    .unwrap();
    let want = candle_nn::rotary_emb::rope_thd(&normed.unsqueeze(0).unwrap(), &cos, &sin)
        .unwrap()
        .squeeze(0)
        .unwrap();
    let diff = (got - want)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff < 1e-5, "fused op differs by {diff}");
    let bf = rms_norm_rope(
        &x.to_dtype(DType::BF16).unwrap(),
        heads,
        &w.to_dtype(DType::BF16).unwrap(),
        &Tensor::cat(&[&cos, &sin], 1)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap(),
        1e-6,
    );
    assert!(bf.is_ok());
}

#[test]
fn silu_mul_is_the_swiglu_gate() {
    let x = Tensor::randn(0f32, 2.0, (4, 2 * 6), &Device::Cpu).unwrap();
    let (g, u) = (x.narrow(1, 0, 6).unwrap(), x.narrow(1, 6, 6).unwrap());
    let want = (candle_nn::ops::silu(&g).unwrap() * u).unwrap();
    let diff = (nanohost_kernels::silu_mul(&x).unwrap() - want)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff < 1e-5, "{diff}");
}
