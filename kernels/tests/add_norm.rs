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
    for (dtype, ulps) in [(DType::F32, 2f32.powi(-20)), (DType::BF16, 2f32.powi(-6))] {
        let (x, d, w) = (
            x.to_dtype(dtype).unwrap(),
            d.to_dtype(dtype).unwrap(),
            w.to_dtype(dtype).unwrap(),
        );
        let (sum, normed) = nanohost_kernels::add_rms_norm(&x, &d, &w, 1e-6).unwrap();
        let want_sum = (&x + &d).unwrap();
        assert_eq!(
            sum.to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap(),
            want_sum
                .to_dtype(DType::F32)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap()
        );
        let want = candle_nn::ops::rms_norm(&want_sum, &w, 1e-6).unwrap();
        let tol = ulps
            * want
                .to_dtype(DType::F32)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
        let diff = (normed.to_dtype(DType::F32).unwrap() - want.to_dtype(DType::F32).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff <= tol, "{dtype:?}: {diff}");
    }
    let bad = nanohost_kernels::add_rms_norm(&x, &x.narrow(0, 0, 4).unwrap(), &w, 1e-6)
        .unwrap_err()
        .to_string();
    assert!(bad.contains("add_rms_norm"), "{bad}");
}

/// A step's first op (embed_norm.rs) against candle's three it replaces on the GPU: the
/// embedding gather (exact), rms_norm (two units in the last place), the RoPE rows (exact); and
/// an id past the embedding is an error that names it.
#[test]
fn embed_rms_norm_rope_equals_gathers_and_rms_norm() {
    let dev = Device::Cpu;
    let (vocab, hidden, positions, head_dim) = (50, 96, 40, 16);
    let embed = Tensor::randn(0f32, 1.0, (vocab, hidden), &dev).unwrap();
    let w = Tensor::randn(1f32, 0.2, hidden, &dev).unwrap();
    let table = Tensor::randn(0f32, 1.0, (positions, head_dim), &dev).unwrap();
    let (ids, pos) = ([7u32, 0, 49, 7], [0u32, 39, 3, 12]);
    let ids_pos = Tensor::new([ids, pos].concat().as_slice(), &dev).unwrap();
    for (dtype, ulps) in [(DType::F32, 2f32.powi(-20)), (DType::BF16, 2f32.powi(-6))] {
        let (embed, w, table) = (
            embed.to_dtype(dtype).unwrap(),
            w.to_dtype(dtype).unwrap(),
            table.to_dtype(dtype).unwrap(),
        );
        let (x, h, cs) =
            nanohost_kernels::embed_rms_norm_rope(&embed, &ids_pos, &w, &table, 1e-6).unwrap();
        let f = |t: &Tensor| t.to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap();
        let want_x = embed
            .index_select(&Tensor::new(&ids, &dev).unwrap(), 0)
            .unwrap();
        assert_eq!(f(&x), f(&want_x), "{dtype:?}: embedding rows");
        assert_eq!(
            f(&cs),
            f(&table
                .index_select(&Tensor::new(&pos, &dev).unwrap(), 0)
                .unwrap()),
            "{dtype:?}: RoPE rows"
        );
        let want = candle_nn::ops::rms_norm(&want_x, &w, 1e-6).unwrap();
        let tol = ulps
            * want
                .to_dtype(DType::F32)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
        let diff = (h.to_dtype(DType::F32).unwrap() - want.to_dtype(DType::F32).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff <= tol, "{dtype:?}: normed rows differ by {diff}");
    }
    let past = Tensor::new(&[50u32, 0], &dev).unwrap();
    let bad = nanohost_kernels::embed_rms_norm_rope(&embed, &past, &w, &table, 1e-6)
        .unwrap_err()
        .to_string();
    assert!(bad.contains("token 50"), "{bad}");
}
