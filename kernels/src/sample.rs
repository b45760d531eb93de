//! Next-token choice per row of logits, on the device that holds them, so only token ids
//! cross to the host. Greedy at temperature 0; otherwise the inverse CDF of
//! softmax(logits / temperature) at a uniform draw the caller supplies per row.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

/// The first index of the largest value.
pub fn argmax(xs: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best as u32
}

/// The index where `u` in [0, 1) falls in the cumulative softmax(xs * inv_temp).
pub fn inverse_cdf(xs: &[f32], inv_temp: f32, u: f32) -> u32 {
    let max = xs.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let w = |x: f32| ((x as f64 - max) * inv_temp as f64).exp();
    let total: f64 = xs.iter().map(|&x| w(x)).sum();
    let target = u as f64 * total;
    let mut c = 0.0;
    for (i, &x) in xs.iter().enumerate() {
        c += w(x);
        if target < c {
            return i as u32;
        }
    }
    argmax(xs)
}

pub struct SampleRows {
    inv_temp: f32,
}

/// One token per row of `logits` (`[rows, vocab]`, any float dtype: on the GPU they are read
/// as they are, on the CPU as f32); `uniforms` has one draw in [0, 1) per row and is ignored
/// when `temperature` is 0.
pub fn sample_rows(logits: &Tensor, uniforms: &[f32], temperature: f32) -> Result<Vec<u32>> {
    sample_rows_async(logits, uniforms, temperature)?.to_vec1::<u32>()
}

/// [`sample_rows`] left on the device: the `[rows]` u32 token ids, queued behind the work that
/// writes the logits, so that the host can do other work before it waits for them (`to_vec1`).
pub fn sample_rows_async(logits: &Tensor, uniforms: &[f32], temperature: f32) -> Result<Tensor> {
    let (rows, _) = logits.dims2()?;
    if uniforms.len() != rows {
        candle_core::bail!(
            "sample_rows: {rows} rows but {} uniform draws",
            uniforms.len()
        );
    }
    let inv_temp = if temperature > 0.0 {
        1.0 / temperature
    } else {
        0.0
    };
    let u = Tensor::from_slice(uniforms, rows, logits.device())?;
    let logits = if logits.device().is_cuda() {
        logits.contiguous()?
    } else {
        logits.to_dtype(candle_core::DType::F32)?.contiguous()?
    };
    logits.apply_op2_no_bwd(&u, &SampleRows { inv_temp })
}

impl CustomOp2 for SampleRows {
    fn name(&self) -> &'static str {
        "sample-rows"
    }

    fn cpu_fwd(
        &self,
        logits: &CpuStorage,
        ll: &Layout,
        u: &CpuStorage,
        ul: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (rows, vocab) = ll.shape().dims2()?;
        let (l0, l1) = crate::elem::contiguous_range(ll, "sample_rows: logits")?;
        let (u0, _) = crate::elem::contiguous_range(ul, "sample_rows: draws")?;
        let x = &logits.as_slice::<f32>()?[l0..l1];
        let u = &u.as_slice::<f32>()?[u0..];
        let out = (0..rows)
            .map(|r| {
                let row = &x[r * vocab..(r + 1) * vocab];
                if self.inv_temp == 0.0 {
                    argmax(row)
                } else {
                    inverse_cdf(row, self.inv_temp, u[r])
                }
            })
            .collect();
        Ok((CpuStorage::U32(out), Shape::from(rows)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        logits: &candle_core::CudaStorage,
        ll: &Layout,
        u: &candle_core::CudaStorage,
        ul: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::sample_rows(logits, ll, u, ul, self.inv_temp)
    }
}
