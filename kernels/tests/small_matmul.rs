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
