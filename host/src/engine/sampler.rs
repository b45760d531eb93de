//! Next-token choice: greedy at temperature 0, otherwise seeded sampling, on the device that
//! holds the logits (see `nanohost_kernels::sample_rows`).
//!
//! Each draw depends only on (seed, sequence id, output index), so a sequence that is preempted
//! and recomputed, or batched differently, draws the same random number.

use super::sequence::SeqId;
use crate::rng::Rng;
use anyhow::{bail, Result};
use candle_core::Tensor;

/// The uniform draw in [0, 1) for output `index` of sequence `seq`.
pub fn uniform(seed: u64, seq: SeqId, index: usize) -> f32 {
    // f32 has 24 bits of mantissa; keep the draw strictly below 1.
    (Rng::derive(seed, &format!("sample/{seq}/{index}")).next_f64() as f32).min(1.0 - f32::EPSILON)
}

/// One token per row of `logits`; rows are `(sequence, output index)` and all share one
/// temperature (a benchmark point has one). The token ids come back as a `[rows]` u32 tensor
/// queued on the logits' device, which the host reads (and so waits for) when it has nothing
/// else left to do.
pub fn sample(
    logits: &Tensor,
    rows: &[(SeqId, usize)],
    temperature: f32,
    seed: u64,
) -> Result<Tensor> {
    if temperature.is_nan() || temperature < 0.0 {
        bail!("temperature must be 0 (greedy) or positive, got {temperature}");
    }
    // Greedy rows draw nothing (deriving a draw hashes a string per row: host time per step).
    let u: Vec<f32> = if temperature == 0.0 {
        vec![0.0; rows.len()]
    } else {
        rows.iter()
            .map(|&(seq, index)| uniform(seed, seq, index))
            .collect()
    };
    Ok(nanohost_kernels::sample_rows_async(
        logits,
        &u,
        temperature,
    )?)
}

/// Log-probability of `token` in row `row` of `logits`, for each `(row, token)`.
pub fn logprobs(logits: &Tensor, picks: &[(usize, u32)]) -> Result<Vec<f32>> {
    if picks.is_empty() {
        return Ok(Vec::new());
    }
    let device = logits.device();
    let rows = Tensor::from_vec(
        picks.iter().map(|&(r, _)| r as u32).collect::<Vec<_>>(),
        picks.len(),
        device,
    )?;
    let tokens = Tensor::from_vec(
        picks.iter().map(|&(_, t)| t).collect::<Vec<_>>(),
        (picks.len(), 1),
        device,
    )?;
    let picked = logits
        .index_select(&rows, 0)?
        .to_dtype(candle_core::DType::F32)?;
    let logp = candle_nn::ops::log_softmax(&picked, candle_core::D::Minus1)?;
    Ok(logp.gather(&tokens, 1)?.squeeze(1)?.to_vec1::<f32>()?)
}

pub use nanohost_kernels::argmax;
