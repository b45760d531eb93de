//! The few-rows matmul against candle's matmul (CPU; the CUDA kernel is checked against this
//! implementation in cuda_ops).

use candle_core::{DType, Device, Tensor};

#[test]
fn small_matmul_equals_x_times_w_transposed() {
    let dev = Device::Cpu;
    for rows in [1, 3, 8] {
        let x = Tensor::randn(0f32, 1.0, (rows, 64), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (37, 64), &dev).unwrap();
        let got = nanohost_kernels::small_matmul(&x, &w).unwrap();
        let want = x.matmul(&w.t().unwrap()).unwrap();
        let diff = (got - want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-4, "{rows} rows: {diff}");
    }
    let x = Tensor::randn(0f32, 1.0, (9, 64), &dev).unwrap();
    let w = Tensor::randn(0f32, 1.0, (37, 64), &dev).unwrap();
    assert!(nanohost_kernels::small_matmul(&x, &w)
        .unwrap_err()
        .to_string()
        .contains("at most 8 rows"));
    assert!(nanohost_kernels::small_matmul(
        &x.narrow(0, 0, 2).unwrap().narrow(1, 0, 60).unwrap(),
        &w.narrow(1, 0, 60).unwrap()
    )
    .is_err());
}

#[test]
fn matmul_t_into_writes_the_first_rows_and_refuses_what_does_not_fit() {
    let x = Tensor::randn(0f32, 1.0, (3, 16), &Device::Cpu).unwrap();
    let w = Tensor::randn(0f32, 1.0, (5, 16), &Device::Cpu).unwrap();
    let out = Tensor::full(7f32, (4, 5), &Device::Cpu).unwrap();
    nanohost_kernels::matmul_t_into(&out, &x, &w).unwrap();
    let want = x.matmul(&w.t().unwrap()).unwrap();
    assert_eq!(
        out.narrow(0, 0, 3).unwrap().to_vec2::<f32>().unwrap(),
        want.to_vec2::<f32>().unwrap()
    );
    assert_eq!(
        out.narrow(0, 3, 1).unwrap().to_vec2::<f32>().unwrap(),
        vec![vec![7f32; 5]]
    );
    // More rows than the buffer, a wrong width, a dtype other than the buffer's: each refused,
    // and the buffer left as it was.
    let before = out.to_vec2::<f32>().unwrap();
    let tall = Tensor::zeros((5, 16), DType::F32, &Device::Cpu).unwrap();
    let narrow = Tensor::zeros((3, 8), DType::F32, &Device::Cpu).unwrap();
    for (x, w) in [
        (&tall, &w),
        (&narrow, &w),
        (
            &x.to_dtype(DType::BF16).unwrap(),
            &w.to_dtype(DType::BF16).unwrap(),
        ),
    ] {
        let e = nanohost_kernels::matmul_t_into(&out, x, w)
            .unwrap_err()
            .to_string();
        assert!(e.contains("matmul_t_into"), "{e}");
    }
    assert_eq!(out.to_vec2::<f32>().unwrap(), before);
}

#[test]
fn small_matmul_swiglu_is_the_projection_then_silu_mul() {
    // In f32 the fused op rounds nothing the separate ops keep: the same values to float error.
    for rows in [1, 5] {
        let x = Tensor::randn(0f32, 1.0, (rows, 64), &Device::Cpu).unwrap();
        let w = Tensor::randn(0f32, 0.3, (2 * 24, 64), &Device::Cpu).unwrap();
        let fused = nanohost_kernels::small_matmul_swiglu(&x, &w).unwrap();
        let apart =
            nanohost_kernels::silu_mul(&nanohost_kernels::small_matmul(&x, &w).unwrap()).unwrap();
        assert_eq!(fused.dims(), &[rows, 24]);
        let diff = (fused - apart)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-5, "{rows} rows: {diff}");
    }
    let x = Tensor::zeros((1, 64), DType::F32, &Device::Cpu).unwrap();
    let odd = Tensor::zeros((7, 64), DType::F32, &Device::Cpu).unwrap();
    assert!(nanohost_kernels::small_matmul_swiglu(&x, &odd)
        .unwrap_err()
        .to_string()
        .contains("gate and up halves"));
}
