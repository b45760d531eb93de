//! The sampling op against its definition.

use candle_core::{Device, Tensor};
use nanohost_kernels::{argmax, sample_rows};

#[test]
fn greedy_rows_take_the_first_maximum() {
    let logits = Tensor::new(
        &[[0.1f32, 3.0, 3.0, -1.0], [5.0, 1.0, 2.0, 4.9]],
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(sample_rows(&logits, &[0.3, 0.9], 0.0).unwrap(), vec![1, 0]);
    assert_eq!(argmax(&[0.1, 3.0, 3.0]), 1);
}

#[test]
fn temperature_draws_follow_the_softmax() {
    // softmax at temperature 1 of [0, ln 3, -inf] = [0.25, 0.75, 0].
    let row = [0.0f32, 3f32.ln(), f32::NEG_INFINITY];
    let n = 400;
    let logits = Tensor::from_vec(row.repeat(n), (n, 3), &Device::Cpu).unwrap();
    let u: Vec<f32> = (0..n).map(|i| (i as f32 + 0.5) / n as f32).collect();
    let got = sample_rows(&logits, &u, 1.0).unwrap();
    // Inverse CDF: draws below 0.25 pick 0, the rest 1, never 2.
    for (i, t) in got.iter().enumerate() {
        assert_eq!(*t, if u[i] < 0.25 { 0 } else { 1 }, "draw {}", u[i]);
    }
    // Halving the temperature sharpens: P(0) = 1 / (1 + 9) = 0.1.
    let got = sample_rows(&logits, &u, 0.5).unwrap();
    assert_eq!(got.iter().filter(|&&t| t == 0).count(), n / 10);
}
