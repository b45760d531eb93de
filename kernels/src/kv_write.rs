//! Writing new keys or values into pool slots (the "reshape and cache" step of paged attention).

use crate::elem::{unsupported, Elem};
use candle_core::{backend::BackendStorage, CpuStorage, InplaceOp3, Layout, Result, Tensor};

/// Copies row `t` of `src` into pool slot `slots[t]` (a `u32` tensor), where slot `s` is block
/// `s / block_size`, offset `s % block_size` of the pool `[num_blocks, block_size, kv_heads,
/// head_dim]`. `src` is `[tokens, kv_heads * head_dim]` whose rows may be strided (a column
/// slice of a fused QKV projection), or `[tokens, kv_heads, head_dim]`.
pub struct WriteKv;

/// Writes `src` into `pool` in place at `slots`; the pool keeps its address.
pub fn write_kv(pool: &Tensor, src: &Tensor, slots: &Tensor) -> Result<()> {
    let (_, _, kv_heads, head_dim) = pool.dims4()?;
    let src = match src.rank() {
        3 => src.contiguous()?.flatten_from(1)?,
        _ => src.clone(),
    };
    let (tokens, width) = src.dims2()?;
    if width != kv_heads * head_dim || tokens != slots.dims1()? || src.stride()[1] != 1 {
        candle_core::bail!(
            "write_kv: {tokens} rows of {width} values (row-contiguous) for {} slots of [{kv_heads}, {head_dim}]",
            slots.dims1()?
        );
    }
    if pool.dtype() != src.dtype() {
        candle_core::bail!(
            "write_kv: pool is {:?} but the new rows are {:?}",
            pool.dtype(),
            src.dtype()
        );
    }
    pool.inplace_op3(&src, &slots.contiguous()?, &WriteKv)
}

fn write_rows<T: Elem>(
    pool: &mut [T],
    src: &[T],
    (s0, stride): (usize, usize),
    slots: &[u32],
    row: usize,
) -> Result<()> {
    let capacity = pool.len() / row;
    for (t, &slot) in slots.iter().enumerate() {
        let slot = slot as usize;
        if slot >= capacity {
            candle_core::bail!("write_kv: slot {slot} is outside the pool of {capacity} slots");
        }
        pool[slot * row..(slot + 1) * row].copy_from_slice(&src[s0 + t * stride..][..row]);
    }
    Ok(())
}

impl InplaceOp3 for WriteKv {
    fn name(&self) -> &'static str {
        "write-kv"
    }

    fn cpu_fwd(
        &self,
        pool: &mut CpuStorage,
        pool_l: &Layout,
        src: &CpuStorage,
        src_l: &Layout,
        slots: &CpuStorage,
        slots_l: &Layout,
    ) -> Result<()> {
        let (p0, p1) = crate::elem::contiguous_range(pool_l, "write_kv: the pool")?;
        let rows = crate::norm_rope::rows_of(src_l);
        let (i0, i1) = crate::elem::contiguous_range(slots_l, "write_kv: the slots")?;
        let slots = &slots.as_slice::<u32>()?[i0..i1];
        let dims = pool_l.dims();
        let row = dims[2] * dims[3];
        match (pool, src) {
            (CpuStorage::F32(p), CpuStorage::F32(s)) => {
                write_rows(&mut p[p0..p1], s, rows, slots, row)
            }
            (CpuStorage::BF16(p), CpuStorage::BF16(s)) => {
                write_rows(&mut p[p0..p1], s, rows, slots, row)
            }
            (CpuStorage::F16(p), CpuStorage::F16(s)) => {
                write_rows(&mut p[p0..p1], s, rows, slots, row)
            }
            (p, _) => Err(unsupported("write_kv", p.dtype())),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        pool: &mut candle_core::CudaStorage,
        pool_l: &Layout,
        src: &candle_core::CudaStorage,
        src_l: &Layout,
        slots: &candle_core::CudaStorage,
        slots_l: &Layout,
    ) -> Result<()> {
        crate::cuda::write_kv(pool, pool_l, src, src_l, slots, slots_l)
    }
}
