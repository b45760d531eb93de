//! Each CUDA op against its CPU implementation on random inputs. Runs only with the `cuda`
//! feature, on a machine with a GPU: `cargo test -p nanohost-kernels --features cuda --test cuda_ops`
//! (or the prebuilt binary that scripts/gpu/check.sh runs on the GPU machine).
#![cfg(feature = "cuda")]

#[path = "../common/mod.rs"]
mod common;

mod attention;
mod graphs;
mod matmul;
mod row_ops;
mod sampling;

use candle_core::{DType, Device, Tensor};

fn gpu() -> Device {
    Device::new_cuda(0).expect("these tests need a CUDA GPU")
}

/// The largest magnitude in `t` (the scale tolerances are taken against).
fn max_abs(t: &Tensor) -> f32 {
    t.to_dtype(DType::F32)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}
