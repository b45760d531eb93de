//! Rotary position embedding tables, gathered per token so a packed batch can mix positions.

use anyhow::Result;
use candle_core::{DType, Device, Tensor};

/// One table, each position's cos row then its sin row, so that a step gathers its tokens'
/// rows with one kernel (two gathers and a concatenation were four, about 7 us of a decode
/// step's device time on an H200).
pub struct Rope {
    cos_sin: Tensor,
}

impl Rope {
    /// Tables `[max_positions, head_dim / 2]` computed in f32 (angles lose precision in bf16),
    /// then stored in the model dtype.
    pub fn new(
        head_dim: usize,
        theta: f64,
        max_positions: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let inv_freq: Vec<f32> = (0..head_dim)
            .step_by(2)
            .map(|i| 1f32 / theta.powf(i as f64 / head_dim as f64) as f32)
            .collect();
        let half = inv_freq.len();
        let inv_freq = Tensor::from_vec(inv_freq, (1, half), device)?;
        let t = Tensor::arange(0u32, max_positions as u32, device)?
            .to_dtype(DType::F32)?
            .reshape((max_positions, 1))?;
        let freqs = t.matmul(&inv_freq)?;
        Ok(Rope {
            cos_sin: Tensor::cat(&[freqs.cos()?, freqs.sin()?], 1)?.to_dtype(dtype)?,
        })
    }

    /// Each token's cos row then sin row, `[tokens, head_dim]`, gathered once per step for
    /// all layers (the layout `nanohost_kernels::rms_norm_rope` reads).
    pub fn gather(&self, positions: &Tensor) -> Result<Tensor> {
        Ok(self.cos_sin.index_select(positions, 0)?)
    }

    /// The whole table, `[max_positions, head_dim]`: each position's cos row then sin row.
    pub fn table(&self) -> &Tensor {
        &self.cos_sin
    }

    pub fn max_positions(&self) -> usize {
        self.cos_sin.dim(0).unwrap_or(0)
    }
}
