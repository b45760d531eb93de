//! A few-row matmul fused with the op that produces its input: the residual add and RMSNorm
//! before a projection, or the SwiGLU before the down projection. At batch 1 a decode step is
//! bound by launches as much as by bytes; these take two of a layer's ten. The CPU runs the
//! separate ops' own code one after the other, which is what the GPU kernel must equal.

use crate::elem::{unsupported, Elem};
use crate::small_matmul::SMALL_MATMUL_MAX_ROWS;
use candle_core::{backend::BackendStorage, CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Storage, Tensor};

/// `(x + delta, small_matmul(rms_norm(x + delta) * norm, w))`: the new residual and the
/// projection of its norm, as [`crate::add_rms_norm`] then [`crate::small_matmul`] give them.
pub fn add_norm_matmul(x: &Tensor, delta: &Tensor, norm: &Tensor, eps: f32, w: &Tensor) -> Result<(Tensor, Tensor)> {
    let (rows, k) = x.dims2()?;
    let (n, wk) = w.dims2()?;
    if delta.dims() != x.dims() || norm.dims() != [k] || wk != k || rows == 0 || rows > SMALL_MATMUL_MAX_ROWS || k % 8 != 0 {
        candle_core::bail!("add_norm_matmul: x {:?}, delta {:?}, norm {:?}, w {:?} do not fit (at most {SMALL_MATMUL_MAX_ROWS} rows, k a multiple of 8)", x.dims(), delta.dims(), norm.dims(), w.dims());
    }
    let op = AddNormMatmul { eps, w: w.contiguous()? };
    let flat = x.contiguous()?.apply_op3_no_bwd(&delta.contiguous()?, &norm.contiguous()?, &op)?;
    Ok((flat.narrow(0, 0, rows * k)?.reshape((rows, k))?, flat.narrow(0, rows * k, rows * n)?.reshape((rows, n))?))
}

/// `small_matmul(silu(gate) * up, w)` for `[rows, 2 k]` rows of gate then up columns, as
/// [`crate::silu_mul`] then [`crate::small_matmul`] give it.
pub fn silu_matmul(gate_up: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (rows, k2) = gate_up.dims2()?;
    let (_, wk) = w.dims2()?;
    if k2 % 2 != 0 || wk * 2 != k2 || rows == 0 || rows > SMALL_MATMUL_MAX_ROWS || wk % 8 != 0 {
        candle_core::bail!("silu_matmul: gate_up {:?} and w {:?} do not fit (at most {SMALL_MATMUL_MAX_ROWS} rows)", gate_up.dims(), w.dims());
    }
    gate_up.contiguous()?.apply_op1_no_bwd(&SiluMatmul { w: w.contiguous()? })
}

pub struct AddNormMatmul {
    pub(crate) eps: f32,
    pub(crate) w: Tensor,
}

pub struct SiluMatmul {
    pub(crate) w: Tensor,
}

/// The CPU slice of a contiguous weight held by an op.
fn cpu_weight<T: candle_core::WithDType>(w: &Tensor, f: impl FnOnce(&[T]) -> Vec<T>) -> Result<Vec<T>> {
    let (s, l) = w.storage_and_layout();
    let Storage::Cpu(c) = &*s else { candle_core::bail!("the weight is not on the CPU") };
    let (a, b) = l.contiguous_offsets().expect("made contiguous");
    Ok(f(&c.as_slice::<T>()?[a..b]))
}

impl AddNormMatmul {
    fn run<T: Elem + candle_core::WithDType>(&self, x: &[T], d: &[T], nw: &[T]) -> Result<Vec<T>> {
        let k = nw.len();
        let mut both = crate::add_norm::AddRmsNorm { eps: self.eps }.run(x, d, nw);
        let out = cpu_weight(&self.w, |w| crate::small_matmul::run(&both[x.len()..], w, x.len() / k, k))?;
        both.truncate(x.len());
        both.extend(out);
        Ok(both)
    }
}

impl CustomOp3 for AddNormMatmul {
    fn name(&self) -> &'static str {
        "add-norm-matmul"
    }

    fn cpu_fwd(&self, x: &CpuStorage, xl: &Layout, d: &CpuStorage, dl: &Layout, nw: &CpuStorage, nl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (rows, k) = xl.shape().dims2()?;
        let n = self.w.dims()[0];
        let r = |l: &Layout| l.contiguous_offsets().expect("made contiguous");
        let ((x0, x1), (d0, d1), (n0, n1)) = (r(xl), r(dl), r(nl));
        let out = match (x, d, nw) {
            (CpuStorage::F32(x), CpuStorage::F32(d), CpuStorage::F32(w)) => CpuStorage::F32(self.run(&x[x0..x1], &d[d0..d1], &w[n0..n1])?),
            (CpuStorage::BF16(x), CpuStorage::BF16(d), CpuStorage::BF16(w)) => CpuStorage::BF16(self.run(&x[x0..x1], &d[d0..d1], &w[n0..n1])?),
            (CpuStorage::F16(x), CpuStorage::F16(d), CpuStorage::F16(w)) => CpuStorage::F16(self.run(&x[x0..x1], &d[d0..d1], &w[n0..n1])?),
            (x, _, _) => return Err(unsupported("add_norm_matmul", x.dtype())),
        };
        Ok((out, Shape::from(rows * (k + n))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        xl: &Layout,
        d: &candle_core::CudaStorage,
        dl: &Layout,
        nw: &candle_core::CudaStorage,
        nl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::add_norm_matmul(self, x, xl, d, dl, nw, nl)
    }
}

impl CustomOp1 for SiluMatmul {
    fn name(&self) -> &'static str {
        "silu-matmul"
    }

    fn cpu_fwd(&self, x: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (rows, k2) = l.shape().dims2()?;
        let (k, n) = (k2 / 2, self.w.dims()[0]);
        let (a, b) = l.contiguous_offsets().expect("made contiguous");
        macro_rules! run {
            ($x:expr) => {{
                let h = crate::silu_mul::run(&$x[a..b], rows, k);
                cpu_weight(&self.w, |w| crate::small_matmul::run(&h, w, rows, k))?
            }};
        }
        let out = match x {
            CpuStorage::F32(x) => CpuStorage::F32(run!(x)),
            CpuStorage::BF16(x) => CpuStorage::BF16(run!(x)),
            CpuStorage::F16(x) => CpuStorage::F16(run!(x)),
            x => return Err(unsupported("silu_matmul", x.dtype())),
        };
        Ok((out, Shape::from((rows, n))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, x: &candle_core::CudaStorage, l: &Layout) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::silu_matmul(self, x, l)
    }
}
