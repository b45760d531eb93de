//! Sampling on the GPU against the CPU's definition.

use super::gpu;
use candle_core::{DType, Device, Tensor};
use nanohost_kernels::sample_rows;

/// Rows split over many blocks (64 at one row, as many as fit at once over all rows at 64:
/// sample.cuh), merged by the last.
#[test]
fn sampling_matches_cpu() {
    for rows in [1, 3, 64] {
        sampling_matches_cpu_at(rows);
    }
}

fn sampling_matches_cpu_at(rows: usize) {
    let (cpu, gpu) = (Device::Cpu, gpu());
    let logits = (Tensor::randn(0f32, 1.0, (rows, 151_936), &cpu).unwrap() * 3.0).unwrap();
    let u: Vec<f32> = (0..rows)
        .map(|i| ((i + 1) as f32 * 0.618_034).fract())
        .collect();
    assert_eq!(
        sample_rows(&logits, &u, 0.0).unwrap(),
        sample_rows(&logits.to_device(&gpu).unwrap(), &u, 0.0).unwrap()
    );
    let a = sample_rows(&logits, &u, 0.6).unwrap();
    let b = sample_rows(&logits.to_device(&gpu).unwrap(), &u, 0.6).unwrap();
    let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
    // The sums are grouped differently (f64 both): at most one draw in 64 may fall on the
    // other side of a boundary.
    assert!(
        same + rows / 64 >= rows,
        "only {same} of {rows} draws agree: {a:?} vs {b:?}"
    );
    // bf16 logits are read as they are on the GPU and widened to f32 on the CPU: the same values.
    let half = logits.to_dtype(DType::BF16).unwrap();
    let on_gpu = half.to_device(&gpu).unwrap();
    assert_eq!(
        sample_rows(&half, &u, 0.0).unwrap(),
        sample_rows(&on_gpu, &u, 0.0).unwrap()
    );
    let (a, b) = (
        sample_rows(&half, &u, 0.6).unwrap(),
        sample_rows(&on_gpu, &u, 0.6).unwrap(),
    );
    let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
    assert!(
        same + rows / 64 >= rows,
        "bf16: only {same} of {rows} draws agree: {a:?} vs {b:?}"
    );
}

/// Rows whose length is no multiple of a 16-byte vector (every row but the first starts off
/// 16 bytes, so the kernel reads element by element), ties (the first index wins), and masked
/// logits (-inf weighs nothing, and a row of one finite logit draws it at any temperature).
#[test]
fn sampling_handles_odd_rows_ties_and_masks() {
    let (cpu, gpu) = (Device::Cpu, gpu());
    for vocab in [1001usize, 4099, 151_936] {
        let mut x: Vec<f32> = Tensor::randn(0f32, 1.0, (5, vocab), &cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        x[..vocab].iter_mut().for_each(|v| *v = 0.5); // row 0: all tied
        x[vocab + 300] = 9.0; // row 1: the maximum twice
        x[vocab + 700] = 9.0;
        x[2 * vocab..3 * vocab]
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| {
                if i % 97 != 5 {
                    *v = f32::NEG_INFINITY
                }
            });
        x[3 * vocab..4 * vocab]
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| {
                if i != vocab - 2 {
                    *v = f32::NEG_INFINITY
                }
            });
        let logits = Tensor::from_vec(x, (5, vocab), &cpu).unwrap();
        let u = [0.3f32, 0.9, 0.5, 0.99, 0.7];
        for dtype in [DType::F32, DType::BF16] {
            let l = logits.to_dtype(dtype).unwrap();
            let on_gpu = l.to_device(&gpu).unwrap();
            let greedy = sample_rows(&on_gpu, &u, 0.0).unwrap();
            assert_eq!(
                greedy,
                sample_rows(&l, &u, 0.0).unwrap(),
                "greedy, vocab {vocab} {dtype:?}"
            );
            assert_eq!(
                (greedy[0], greedy[1], greedy[3]),
                (0, 300, vocab as u32 - 2),
                "vocab {vocab} {dtype:?}"
            );
            let drawn = sample_rows(&on_gpu, &u, 0.6).unwrap();
            assert_eq!(
                drawn[..4],
                sample_rows(&l, &u, 0.6).unwrap()[..4],
                "temperature 0.6, vocab {vocab} {dtype:?}"
            );
            assert_eq!(
                drawn[2] % 97,
                5,
                "row 2 drew a masked logit, vocab {vocab} {dtype:?}"
            );
        }
    }
}
