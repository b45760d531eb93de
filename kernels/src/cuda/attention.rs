//! Launching the attention kernels (per-row, tiled prefill, cascade's shared pass) and sizing
//! their split-KV.

use super::launch::Launch;
use super::{alloc_out, kernel, raw_ptr, sm_count};
use crate::elem::contiguous_range;
use crate::paged_attention::PagedAttention;
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaStorageSlice, WrapErr};
use candle_core::{CudaDevice, CudaStorage, Layout, Result, Shape, Storage, Tensor};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// The u32 metadata tensor's device slice.
fn with_u32<R>(
    t: &Tensor,
    f: impl FnOnce(&candle_core::cuda_backend::cudarc::driver::CudaSlice<u32>, usize) -> Result<R>,
) -> Result<R> {
    let (s, l) = t.storage_and_layout();
    let Storage::Cuda(c) = &*s else {
        candle_core::bail!("metadata is not on the GPU")
    };
    f(c.as_cuda_slice::<u32>()?, l.start_offset())
}

/// The fused input side of the per-row kernel: what qkv_norm_rope_write takes besides the QKV
/// rows and the pools.
pub(crate) struct QkvInput<'a> {
    pub heads: usize,
    pub q_norm: &'a Tensor,
    pub k_norm: &'a Tensor,
    pub cos_sin: &'a Tensor,
    pub slots: &'a Tensor,
    pub eps: f32,
}

/// Tile sizes of `cascade_shared` in tiled_attention.cuh (they size its shared memory).
const QV_TILE: usize = 64;
const KEY_TILE: usize = 32 * 2;
/// Keys per block below which split-KV does not pay for its merge.
const MIN_SPLIT_KEYS: usize = 64;

/// Blocks of the per-row attention kernel resident per SM: it is built with
/// `__launch_bounds__(128, 4)` and takes about 41 KB of shared memory (paged_attention.cuh).
const ATTENTION_BLOCKS_PER_SM: usize = 4;

/// Completion counters, one zeroed buffer per device: the last block of a split row counts
/// itself done here and merges the row (split-KV in paged_attention.cuh, one counter per (row,
/// KV head); split sampling in sample.cuh, one per row). Kernels leave them at zero, so the
/// buffer serves every launch and every CUDA graph replay; it is never freed (a graph keeps its
/// address). Kernels of one stream never run their merges at once (each waits for the one
/// before), so they share it. Attention splits only while it fills at most half the GPU's
/// block slots, so [`completion_capacity`] counters always suffice for it.
pub(super) fn completion_counters(dev: &CudaDevice, needed: usize) -> Result<u64> {
    use candle_core::cuda_backend::cudarc::driver::DevicePtr;
    static COUNTERS: OnceLock<Mutex<HashMap<usize, (u64, usize)>>> = OnceLock::new();
    let ordinal = dev.cuda_stream().context().ordinal();
    let mut map = COUNTERS
        .get_or_init(Default::default)
        .lock()
        .expect("completion counters");
    let (ptr, len) = match map.get(&ordinal) {
        Some(&counters) => counters,
        None => {
            let stream = dev.cuda_stream();
            // Made inside a capture, the buffer would belong to the graph: its allocation
            // never freed there, the graph could not be launched twice.
            if super::capture_links::capturing(&stream)? {
                candle_core::bail!("the completion counters of split attention and sampling are made on first use, which must not be inside a CUDA graph capture: run the op once before capturing it");
            }
            let len = completion_capacity(dev)?;
            let buf = stream.alloc_zeros::<u32>(len).w()?;
            let (ptr, _sync) = buf.device_ptr(&stream);
            drop(_sync);
            std::mem::forget(buf);
            map.insert(ordinal, (ptr, len));
            (ptr, len)
        }
    };
    if needed > len {
        candle_core::bail!("{needed} completion counters asked for, {len} exist");
    }
    Ok(ptr)
}

/// How many completion counters there are (`ATTENTION_BLOCKS_PER_SM` per SM): a launch that
/// would need more does not split.
pub(super) fn completion_capacity(dev: &CudaDevice) -> Result<usize> {
    Ok(ATTENTION_BLOCKS_PER_SM * sm_count(dev)?)
}

/// How many blocks share each row's keys: splitting pays only while rows and KV heads alone do
/// not fill the GPU's block slots (the per-row pass is bound by memory latency, so it needs every
/// slot busy); a batch that fills one wave of slots is not split, which saves the merge.
/// Never below MIN_SPLIT_KEYS keys per block.
fn kv_splits(blocks: usize, max_row_keys: usize, sms: usize) -> usize {
    let by_keys = max_row_keys / MIN_SPLIT_KEYS;
    let by_occupancy = (ATTENTION_BLOCKS_PER_SM * sms) / blocks.max(1);
    by_keys.min(by_occupancy).clamp(1, 64)
}

/// `q` is the queries `[rows, heads, head_dim]`, or with `fused` the fused QKV projection's rows
/// `[rows, (heads + 2 kv_heads) head_dim]`, from which the kernel makes them and writes the
/// step's keys and values (paged_attention.cuh: FusedInput).
#[allow(clippy::too_many_arguments)]
pub(crate) fn paged_attention(
    op: &PagedAttention,
    q: &CudaStorage,
    ql: &Layout,
    k: &CudaStorage,
    kl: &Layout,
    v: &CudaStorage,
    vl: &Layout,
    fused: Option<&QkvInput>,
) -> Result<(CudaStorage, Shape)> {
    let dev: &CudaDevice = q.device();
    let (qd, kd) = (ql.dims(), kl.dims());
    let (rows, heads, head_dim, kv_heads) = match fused {
        Some(f) => (qd[0], f.heads, kd[3], kd[2]),
        None => (qd[0], qd[1], qd[2], kd[2]),
    };
    if fused.is_some() && !crate::qkv_attention::fuses(&op.layout, head_dim) {
        candle_core::bail!("paged_attention (cuda): the fused input side needs one query row per sequence, no shared group, and head_dim 64, 128 or 256");
    }
    if ![32, 64, 128, 256].contains(&head_dim) {
        candle_core::bail!(
            "paged_attention (cuda): head_dim {head_dim} is not built; 32, 64, 128 and 256 are"
        );
    }
    let group = heads / kv_heads;
    if ![1, 2, 4, 8].contains(&group) {
        candle_core::bail!("paged_attention (cuda): {heads} query heads over {kv_heads} KV heads; groups of 1, 2, 4 or 8 are built");
    }
    let lay = op.layout;
    let o = lay.offsets();
    let sfx = super::suffix(q.dtype())?;
    // The per-row kernel's rows: all, or those the tiled prefill does not take (row_list).
    let per_row = if lay.num_tiled > 0 {
        lay.row_list
    } else {
        rows
    };
    let splits = if per_row == 0 {
        1
    } else {
        kv_splits(per_row * kv_heads, lay.max_row_keys, sm_count(dev)?)
    };
    // Partial softmaxes per (row, query head): the shared pass's chunks, then the splits.
    // Only rows in a group read chunks and only a split pass writes splits; a batch with neither
    // (most decode steps) passes null pointers and allocates nothing.
    let parts = lay.max_chunks + splits;
    let partials = if lay.num_groups > 0 || splits > 1 {
        let n = rows * heads * parts;
        // SAFETY: every partial that is read was written before (shared pass, then split pass).
        Some(unsafe {
            (
                alloc_out::<f32>(dev, n * head_dim)?,
                alloc_out::<f32>(dev, n * 2)?,
            )
        })
    } else {
        None
    };
    let null = 0u64;
    // One block per (query row, KV head, split) serves the whole GQA group: K and V are read once.
    // Batches with shifted spans get the variant that re-rotates keys (and holds its cache).
    let shifted = if lay.shifted { "_shifted" } else { "" };
    let func = kernel(
        dev,
        &format!("paged_attention_{sfx}_g{group}_p{}{shifted}", head_dim / 32),
        0,
    )?;
    let counters = if splits > 1 {
        completion_counters(dev, per_row * kv_heads)?
    } else {
        0u64
    };
    let stream = dev.cuda_stream();
    let (q0, q1) = contiguous_range(ql, "q")?;
    let (k0, k1) = contiguous_range(kl, "the K pool")?;
    let (v0, v1) = contiguous_range(vl, "the V pool")?;
    let cfg = LaunchConfig {
        grid_dim: (per_row as u32, kv_heads as u32, splits as u32),
        block_dim: (128, 1, 1),
        shared_mem_bytes: 0,
    };
    let chunk = crate::SHARED_CHUNK as u32;
    macro_rules! launch {
        ($t:ty, $wrap:ident) => {{
            let (q, k, v) = (
                q.as_cuda_slice::<$t>()?.slice(q0..q1),
                k.as_cuda_slice::<$t>()?.slice(k0..k1),
                v.as_cuda_slice::<$t>()?.slice(v0..v1),
            );
            // SAFETY: every element is written by the kernel.
            let out = unsafe { alloc_out::<$t>(dev, rows * heads * head_dim)? };
            with_u32(&op.meta, |meta, m0| {
                let sec = |a: usize, b: usize| meta.slice(m0 + a..m0 + b);
                let (seq_start, slots) = (
                    sec(o.seq_start, o.group_row_start),
                    meta.slice(m0 + o.slots..),
                );
                let row_skip = sec(o.row_skip, o.seq_start);
                let elem = std::mem::size_of::<$t>();
                // Shared memory of attend_tile (cascade's shared pass, tiled prefill), with
                // padded row strides as in tiled_attention.cuh (row_ld, out_ld, P_LD, S_LD).
                let (row_ld, out_ld, p_ld, s_ld) =
                    (head_dim + 8, head_dim + 4, KEY_TILE + 8, KEY_TILE + 4);
                let smem = (QV_TILE * row_ld + 2 * KEY_TILE * row_ld + QV_TILE * p_ld) * elem
                    + (QV_TILE * s_ld + QV_TILE * out_ld + QV_TILE) * 4;
                let row_visible = sec(o.row_visible, o.row_skip);
                if lay.num_tiled > 0 {
                    let tiles = kernel(dev, &format!("prefill_tiles_{sfx}"), smem)?;
                    let per_tile = (QV_TILE / group) as u32;
                    let cfg = LaunchConfig {
                        grid_dim: (
                            lay.num_tiled as u32,
                            (lay.max_tiled_rows as u32).div_ceil(per_tile),
                            kv_heads as u32,
                        ),
                        block_dim: (128, 1, 1),
                        shared_mem_bytes: smem as u32,
                    };
                    let tiled = sec(o.tiled, o.row_list);
                    let mut b = Launch::new(&stream, &tiles);
                    b.arg(&q)
                        .arg(&k)
                        .arg(&v)
                        .arg(&out)
                        .arg(&row_visible)
                        .arg(&seq_start)
                        .arg(&slots);
                    // Per-slot shifts (reused chunks), or a null pointer when no span is shifted.
                    let shifts = meta.slice(m0 + o.shifts..);
                    if lay.shifted {
                        b.arg(&shifts);
                    } else {
                        b.arg(&null);
                    }
                    b.arg(&tiled);
                    candle_core::builder_arg!(
                        b,
                        heads as u32,
                        kv_heads as u32,
                        head_dim as u32,
                        group as u32,
                        op.softmax_scale,
                        op.rope_theta
                    );
                    // SAFETY: the tiled sequences and their rows were validated with the batch.
                    unsafe { b.launch(cfg) }?;
                }
                if let (true, Some((part_o, part_ml))) = (lay.num_groups > 0, &partials) {
                    let shared = kernel(dev, &format!("cascade_shared_{sfx}"), smem)?;
                    let tiles = (lay.max_group_rows * group).div_ceil(QV_TILE) as u32;
                    let cfg = LaunchConfig {
                        grid_dim: (lay.num_items as u32, kv_heads as u32, tiles),
                        block_dim: (128, 1, 1),
                        shared_mem_bytes: smem as u32,
                    };
                    let (grs, gseq, glen, items, grows) = (
                        sec(o.group_row_start, o.group_seq),
                        sec(o.group_seq, o.group_len),
                        sec(o.group_len, o.items),
                        sec(o.items, o.group_rows),
                        sec(o.group_rows, o.slots),
                    );
                    let mut b = Launch::new(&stream, &shared);
                    b.arg(&q)
                        .arg(&k)
                        .arg(&v)
                        .arg(part_o)
                        .arg(part_ml)
                        .arg(&seq_start)
                        .arg(&slots)
                        .arg(&grs)
                        .arg(&gseq)
                        .arg(&glen)
                        .arg(&items)
                        .arg(&grows);
                    candle_core::builder_arg!(
                        b,
                        parts as u32,
                        chunk,
                        heads as u32,
                        kv_heads as u32,
                        head_dim as u32,
                        group as u32,
                        op.softmax_scale
                    );
                    // SAFETY: the groups were validated against the sequences and the pool.
                    unsafe { b.launch(cfg) }?;
                }
                if per_row == 0 {
                    return Ok(());
                }
                let row_seq = sec(o.row_seq, o.row_visible);
                let mut b = Launch::new(&stream, &func);
                b.arg(&q).arg(&k).arg(&v).arg(&out);
                // The rows to run over, or a null pointer for all of them.
                let row_list = sec(o.row_list, o.slots);
                if lay.num_tiled > 0 {
                    b.arg(&row_list);
                } else {
                    b.arg(&null);
                }
                b.arg(&row_seq)
                    .arg(&row_visible)
                    .arg(&row_skip)
                    .arg(&seq_start)
                    .arg(&slots);
                // Per-slot shifts, or a null pointer when no span is shifted.
                let shifts = meta.slice(m0 + o.shifts..);
                if lay.shifted {
                    b.arg(&shifts);
                } else {
                    b.arg(&null);
                }
                match &partials {
                    Some((part_o, part_ml)) => b.arg(part_o).arg(part_ml),
                    None => b.arg(&null).arg(&null),
                };
                b.arg(&counters);
                candle_core::builder_arg!(
                    b,
                    lay.max_chunks as u32,
                    splits as u32,
                    chunk,
                    heads as u32,
                    kv_heads as u32,
                    head_dim as u32,
                    op.softmax_scale,
                    op.rope_theta
                );
                let fused_ptrs = match fused {
                    Some(f) => {
                        let capacity = (k1 - k0) / (kv_heads * head_dim);
                        let (qw, kw) = (
                            raw_ptr::<$t>(f.q_norm, "the q norm weight")?.0,
                            raw_ptr::<$t>(f.k_norm, "the k norm weight")?.0,
                        );
                        let (cs, new_slots) = (
                            raw_ptr::<$t>(f.cos_sin, "cos_sin")?.0,
                            raw_ptr::<u32>(f.slots, "the new slots")?.0,
                        );
                        b.arg(&q);
                        Some((qw, kw, cs, new_slots, capacity as u32, f.eps))
                    }
                    None => {
                        b.arg(&null);
                        None
                    }
                };
                let (qw, kw, cs, new_slots, capacity, eps) =
                    fused_ptrs.unwrap_or((0, 0, 0, 0, 0, 0.0));
                candle_core::builder_arg!(b, qw, kw, cs, new_slots, capacity, eps);
                // SAFETY: shapes checked above; the metadata was validated against the pool.
                unsafe { b.launch(cfg) }?;
                Ok(())
            })?;
            CudaStorageSlice::$wrap(out)
        }};
    }
    let slice = per_float_dtype!(q.dtype(), "paged_attention", launch);
    Ok((
        CudaStorage {
            slice,
            device: dev.clone(),
        },
        Shape::from((rows, heads, head_dim)),
    ))
}
