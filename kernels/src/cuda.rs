//! Launching the CUDA kernels (src/cuda/*.cuh, one PTX module through nanohost.cu) on
//! candle's device and stream.

use crate::elem::contiguous_range;
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute};
use candle_core::cuda_backend::cudarc::driver::{CudaFunction, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaStorageSlice, WrapErr};
use candle_core::{CudaDevice, CudaStorage, DType, Layout, Result, Shape, Storage, Tensor};
use launch::Launch;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

mod capture_links;
mod launch;

/// An op's output buffer, allocated so that in a captured graph the op's kernel can start
/// before the kernel before it ends (capture_links.rs).
///
/// # Safety
/// As `CudaDevice::alloc`: the buffer is uninitialised.
unsafe fn alloc_out<T: candle_core::cuda_backend::cudarc::driver::DeviceRepr>(
    dev: &CudaDevice,
    n: usize,
) -> Result<candle_core::cuda_backend::cudarc::driver::CudaSlice<T>> {
    capture_links::hoisted_alloc(&dev.cuda_stream(), || dev.alloc::<T>(n))
}

pub(crate) fn pdl_enabled(dev: &CudaDevice) -> bool {
    launch::pdl_enabled(&dev.cuda_stream())
}

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/nanohost.ptx"));
const MODULE: &str = "nanohost";

fn suffix(d: DType) -> Result<&'static str> {
    match d {
        DType::F32 => Ok("f32"),
        DType::BF16 => Ok("bf16"),
        DType::F16 => Ok("f16"),
        other => Err(crate::elem::unsupported("cuda op", other)),
    }
}

/// Runs `$launch!(element type, CudaStorageSlice variant)` for the float dtypes the kernels are
/// built for; any other dtype is an error naming `$op`.
macro_rules! per_float_dtype {
    ($dtype:expr, $op:literal, $launch:ident) => {
        match $dtype {
            candle_core::DType::F32 => $launch!(f32, F32),
            candle_core::DType::BF16 => $launch!(half::bf16, BF16),
            candle_core::DType::F16 => $launch!(half::f16, F16),
            other => return Err(crate::elem::unsupported($op, other)),
        }
    };
}

// After the macro, which it uses.
mod attention;
pub(crate) use attention::{paged_attention, QkvInput};
mod matmul_args;
mod small_matmul;
pub(crate) use small_matmul::small_matmul;
mod gemm_into;
pub(crate) use gemm_into::matmul_t_into;
mod tc_matmul;
pub(crate) use tc_matmul::{tc_matmul, tc_matmul_fits};
mod stage;
pub(crate) use stage::PinnedStage;

/// Blocks of `func` (with `block` threads) that fit on one SM at once, asked once per kernel.
pub(crate) fn blocks_per_sm(name: &str, func: &CudaFunction, block: u32) -> Result<usize> {
    static CACHE: OnceLock<Mutex<HashMap<String, usize>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(&b) = cache.lock().expect("occupancy cache").get(name) {
        return Ok(b);
    }
    let b = (func
        .occupancy_max_active_blocks_per_multiprocessor(block, 0, None)
        .w()? as usize)
        .max(1);
    cache
        .lock()
        .expect("occupancy cache")
        .insert(name.to_string(), b);
    Ok(b)
}

/// A kernel of nanohost.cu, looked up once per (device, name) and opened up once to the dynamic
/// shared memory it asks for: a lookup or attribute call per launch costs host time that a decode
/// step (hundreds of launches) feels.
fn kernel(dev: &CudaDevice, name: &str, dynamic_smem: usize) -> Result<CudaFunction> {
    type Cache = HashMap<(usize, String), (CudaFunction, usize)>;
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = (dev.cuda_stream().context().ordinal(), name.to_string());
    if let Some((f, opened)) = cache.lock().expect("kernel cache").get(&key) {
        if *opened >= dynamic_smem {
            return Ok(f.clone());
        }
    }
    let f = dev
        .get_or_load_custom_func(name, MODULE, PTX)?
        .into_cuda_function();
    if dynamic_smem > 48 * 1024 {
        let max = dev
            .cuda_stream()
            .context()
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
            .w()? as usize;
        if dynamic_smem > max {
            candle_core::bail!("{name} needs {dynamic_smem} bytes of shared memory per block; this GPU allows {max}");
        }
        f.set_attribute(
            CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            dynamic_smem as i32,
        )
        .w()?;
    }
    if name.starts_with("paged_attention") || name.starts_with("tc_matmul") {
        // Their cp.async copies land in shared memory: ask for the largest carveout so that
        // as many blocks fit as it allows, whatever the driver would pick by default.
        f.set_attribute(
            CUfunction_attribute::CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT,
            100,
        )
        .w()?;
    }
    cache
        .lock()
        .expect("kernel cache")
        .insert(key, (f.clone(), dynamic_smem));
    Ok(f)
}

/// Streaming multiprocessors of the device (asked once; one model runs on one GPU).
fn sm_count(dev: &CudaDevice) -> Result<usize> {
    static SMS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    if let Some(&n) = SMS.get() {
        return Ok(n);
    }
    let n = dev
        .cuda_stream()
        .context()
        .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        .w()? as usize;
    Ok(*SMS.get_or_init(|| n))
}

pub(crate) fn write_kv(
    pool: &mut CudaStorage,
    pl: &Layout,
    src: &CudaStorage,
    sl: &Layout,
    slots: &CudaStorage,
    il: &Layout,
) -> Result<()> {
    let dev = pool.device().clone();
    let dims = pl.dims();
    let row = dims[2] * dims[3];
    let capacity = dims[0] * dims[1];
    let (p0, p1) = contiguous_range(pl, "the pool")?;
    let (s0, s_stride) = crate::norm_rope::rows_of(sl);
    let (i0, i1) = contiguous_range(il, "the slots")?;
    let tokens = i1 - i0;
    if tokens == 0 {
        return Ok(());
    }
    let func = kernel(&dev, &format!("write_kv_{}", suffix(pool.dtype())?), 0)?;
    let stream = dev.cuda_stream();
    let cfg = LaunchConfig {
        grid_dim: (tokens as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let slots = slots.as_cuda_slice::<u32>()?.slice(i0..i1);
    macro_rules! launch {
        ($t:ty, $_wrap:ident) => {{
            let src = src.as_cuda_slice::<$t>()?.slice(s0..);
            let mut pool = pool.as_cuda_slice_mut::<$t>()?.slice_mut(p0..p1);
            let mut b = Launch::new(&stream, &func);
            b.arg(&mut pool).arg(&src).arg(&slots);
            candle_core::builder_arg!(b, row as u32, s_stride as u32, capacity as u32);
            // SAFETY: the kernel skips slots at or beyond `capacity`.
            unsafe { b.launch(cfg) }
        }};
    }
    per_float_dtype!(pool.dtype(), "write_kv", launch)?;
    Ok(())
}

pub(crate) fn sample_rows(
    logits: &CudaStorage,
    ll: &Layout,
    u: &CudaStorage,
    ul: &Layout,
    inv_temp: f32,
) -> Result<(CudaStorage, Shape)> {
    let dev = logits.device().clone();
    let (rows, vocab) = ll.shape().dims2()?;
    let (l0, l1) = contiguous_range(ll, "logits")?;
    let (u0, u1) = contiguous_range(ul, "uniforms")?;
    let name = format!("sample_rows_{}", suffix(logits.dtype())?);
    let func = kernel(&dev, &name, 0)?;
    let stream = dev.cuda_stream();
    // Blocks per row (sample.cuh): as many as fit on the device at once, in one wave (eight
    // per SM, rounded up, made a second wave of 32 blocks at batch 64 on an H200, and the
    // kernel fits 6 by registers), chunks of at least 1,024 logits, at most 64
    // (SAMPLE_MAX_PARTS: the merge gives a lane of one warp two). Two per SM left batch 64 with 5
    // blocks a row, each walking 60 KB: 42 us for 19 MB of logits in a replayed step on an H200
    // (results/gpu-h200-2026-11-28-timeline/).
    let resident = blocks_per_sm(&name, &func, 256)? * sm_count(&dev)?;
    // A batch of more rows than there are completion counters samples one block per row.
    let parts = if rows > attention::completion_capacity(&dev)? {
        1
    } else {
        (resident / rows).min(vocab / 1024).clamp(1, 64)
    };
    let done = if parts > 1 {
        attention::completion_counters(&dev, rows)?
    } else {
        0u64
    };
    let out = unsafe { alloc_out::<u32>(&dev, rows)? };
    // SAFETY: each block writes its own partial before the row's last block reads them all.
    let (part_max, part_arg, part_sum) = unsafe {
        (
            alloc_out::<f32>(&dev, rows * parts)?,
            alloc_out::<u32>(&dev, rows * parts)?,
            alloc_out::<f64>(&dev, rows * parts)?,
        )
    };
    let u = u.as_cuda_slice::<f32>()?.slice(u0..u1);
    let cfg = LaunchConfig {
        grid_dim: (parts as u32, rows as u32, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    macro_rules! launch {
        ($t:ty, $_wrap:ident) => {{
            let x = logits.as_cuda_slice::<$t>()?.slice(l0..l1);
            let mut b = Launch::new(&stream, &func);
            b.arg(&x)
                .arg(&u)
                .arg(&out)
                .arg(&part_max)
                .arg(&part_arg)
                .arg(&part_sum)
                .arg(&done);
            candle_core::builder_arg!(b, vocab as u32, inv_temp);
            // SAFETY: `parts` blocks per row of a contiguous [rows, vocab] tensor; `rows`
            // counters exist when parts > 1.
            unsafe { b.launch(cfg) }?
        }};
    }
    per_float_dtype!(logits.dtype(), "sample_rows", launch);
    Ok((
        CudaStorage {
            slice: CudaStorageSlice::U32(out),
            device: dev,
        },
        Shape::from(rows),
    ))
}

pub(crate) fn rms_norm_rope(
    op: &crate::norm_rope::RmsNormRope,
    x: &CudaStorage,
    xl: &Layout,
    w: &CudaStorage,
    wl: &Layout,
    cs: &CudaStorage,
    csl: &Layout,
) -> Result<(CudaStorage, Shape)> {
    let dev = x.device().clone();
    let (tokens, width) = xl.shape().dims2()?;
    let head_dim = width / op.heads;
    if ![64, 128, 256].contains(&head_dim) {
        candle_core::bail!(
            "rms_norm_rope (cuda): head_dim {head_dim} is not built; 64, 128 and 256 are"
        );
    }
    let (x0, x_stride) = crate::norm_rope::rows_of(xl);
    let (w0, w1) = contiguous_range(wl, "the norm weight")?;
    let (c0, c1) = contiguous_range(csl, "cos_sin")?;
    let func = kernel(
        &dev,
        &format!("rms_norm_rope_{}_p{}", suffix(x.dtype())?, head_dim / 32),
        0,
    )?;
    let stream = dev.cuda_stream();
    let warps = 4u32;
    let cfg = LaunchConfig {
        grid_dim: (tokens as u32, (op.heads as u32).div_ceil(warps), 1),
        block_dim: (32 * warps, 1, 1),
        shared_mem_bytes: 0,
    };
    macro_rules! launch {
        ($t:ty, $wrap:ident) => {{
            let xs = x.as_cuda_slice::<$t>()?.slice(x0..);
            let ws = w.as_cuda_slice::<$t>()?.slice(w0..w1);
            let css = cs.as_cuda_slice::<$t>()?.slice(c0..c1);
            // SAFETY: every element is written by the kernel.
            let out = unsafe { alloc_out::<$t>(&dev, tokens * width)? };
            let mut b = Launch::new(&stream, &func);
            b.arg(&xs).arg(&ws).arg(&css).arg(&out);
            candle_core::builder_arg!(
                b,
                tokens as u32,
                op.heads as u32,
                head_dim as u32,
                x_stride as u32,
                op.eps
            );
            // SAFETY: shapes checked by rms_norm_rope.
            unsafe { b.launch(cfg) }?;
            CudaStorageSlice::$wrap(out)
        }};
    }
    let slice = per_float_dtype!(x.dtype(), "rms_norm_rope", launch);
    Ok((
        CudaStorage { slice, device: dev },
        Shape::from((tokens, width)),
    ))
}

pub(crate) fn silu_mul(x: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
    let dev = x.device().clone();
    let (tokens, w2) = l.shape().dims2()?;
    let width = w2 / 2;
    let (a, b) = contiguous_range(l, "silu_mul input")?;
    let func = kernel(&dev, &format!("silu_mul_{}", suffix(x.dtype())?), 0)?;
    let stream = dev.cuda_stream();
    if tokens * width >= 1 << 32 {
        candle_core::bail!(
            "silu_mul (cuda): {tokens} x {width} outputs are more than a launch indexes (2^32)"
        );
    }
    // 16-byte vectors of outputs where the rows allow (norm.cuh).
    let v = 16 / x.dtype().size_in_bytes();
    let vec = width % v == 0 && a % v == 0;
    let n = (tokens * width / if vec { v } else { 1 }) as u32;
    let cfg = LaunchConfig {
        grid_dim: (n.div_ceil(256).min(65_535), 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    macro_rules! launch {
        ($t:ty, $wrap:ident) => {{
            let xs = x.as_cuda_slice::<$t>()?.slice(a..b);
            // SAFETY: every element is written by the kernel.
            let out = unsafe { alloc_out::<$t>(&dev, tokens * width)? };
            let mut bld = Launch::new(&stream, &func);
            bld.arg(&xs).arg(&out);
            candle_core::builder_arg!(bld, tokens as u32, width as u32, vec as u32);
            // SAFETY: grid-stride loop over exactly tokens * width outputs.
            unsafe { bld.launch(cfg) }?;
            CudaStorageSlice::$wrap(out)
        }};
    }
    let slice = per_float_dtype!(x.dtype(), "silu_mul", launch);
    Ok((
        CudaStorage { slice, device: dev },
        Shape::from((tokens, width)),
    ))
}

/// Threads a block for norm.cuh's `norm_row` (add_rms_norm, embed_rms_norm_rope): two 16-byte
/// vectors of a row each, in whole warps. `offsets` is the inputs' start offsets or'ed together:
/// each must fall on 16 bytes.
fn norm_row_threads(op: &str, dtype: DType, hidden: usize, offsets: usize) -> Result<u32> {
    let v = 16 / dtype.size_in_bytes();
    if !hidden.is_multiple_of(v) || hidden > 2 * 1024 * v || !offsets.is_multiple_of(v) {
        candle_core::bail!("{op} (cuda): hidden {hidden} must be a multiple of {v} and at most {}, rows 16-byte aligned", 2 * 1024 * v);
    }
    Ok((hidden.div_ceil(2 * v) as u32).next_multiple_of(32))
}

pub(crate) fn add_rms_norm(
    op: &crate::add_norm::AddRmsNorm,
    x: &CudaStorage,
    xl: &Layout,
    d: &CudaStorage,
    dl: &Layout,
    w: &CudaStorage,
    wl: &Layout,
) -> Result<(CudaStorage, Shape)> {
    let dev = x.device().clone();
    let (tokens, hidden) = xl.shape().dims2()?;
    let ((x0, x1), (d0, d1), (w0, w1)) = (
        contiguous_range(xl, "x")?,
        contiguous_range(dl, "delta")?,
        contiguous_range(wl, "the norm weight")?,
    );
    let threads = norm_row_threads("add_rms_norm", x.dtype(), hidden, x0 | d0 | w0)?;
    let func = kernel(&dev, &format!("add_rms_norm_{}", suffix(x.dtype())?), 0)?;
    let stream = dev.cuda_stream();
    let cfg = LaunchConfig {
        grid_dim: (tokens as u32, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    };
    macro_rules! launch {
        ($t:ty, $wrap:ident) => {{
            let (xs, ds, ws) = (
                x.as_cuda_slice::<$t>()?.slice(x0..x1),
                d.as_cuda_slice::<$t>()?.slice(d0..d1),
                w.as_cuda_slice::<$t>()?.slice(w0..w1),
            );
            // SAFETY: every element is written by the kernel (one block per row, both halves).
            let out = unsafe { alloc_out::<$t>(&dev, 2 * tokens * hidden)? };
            let mut b = Launch::new(&stream, &func);
            b.arg(&xs).arg(&ds).arg(&ws).arg(&out);
            candle_core::builder_arg!(b, tokens as u32, hidden as u32, op.eps);
            // SAFETY: contiguous [tokens, hidden] inputs, checked by add_rms_norm.
            unsafe { b.launch(cfg) }?;
            CudaStorageSlice::$wrap(out)
        }};
    }
    let slice = per_float_dtype!(x.dtype(), "add_rms_norm", launch);
    Ok((
        CudaStorage { slice, device: dev },
        Shape::from((2 * tokens, hidden)),
    ))
}

pub(crate) fn embed_rms_norm_rope(
    op: &crate::embed_norm::EmbedRmsNormRope,
    e: &CudaStorage,
    el: &Layout,
    i: &CudaStorage,
    il: &Layout,
    w: &CudaStorage,
    wl: &Layout,
) -> Result<(CudaStorage, Shape)> {
    let dev = e.device().clone();
    let (vocab, hidden) = el.shape().dims2()?;
    let (positions, head_dim) = op.rope.dims2()?;
    let tokens = il.shape().dims1()? / 2;
    let ((e0, e1), (i0, i1), (w0, w1)) = (
        contiguous_range(el, "the embedding")?,
        contiguous_range(il, "ids and positions")?,
        contiguous_range(wl, "the norm weight")?,
    );
    let threads = norm_row_threads("embed_rms_norm_rope", e.dtype(), hidden, e0 | w0)?;
    let func = kernel(
        &dev,
        &format!("embed_rms_norm_rope_{}", suffix(e.dtype())?),
        0,
    )?;
    let stream = dev.cuda_stream();
    let cfg = LaunchConfig {
        grid_dim: (tokens as u32, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    };
    let ids = i.as_cuda_slice::<u32>()?.slice(i0..i1);
    macro_rules! launch {
        ($t:ty, $wrap:ident) => {{
            let (es, ws) = (
                e.as_cuda_slice::<$t>()?.slice(e0..e1),
                w.as_cuda_slice::<$t>()?.slice(w0..w1),
            );
            let (table, _) = raw_ptr::<$t>(&op.rope, "the RoPE table")?;
            // SAFETY: every element is written by the kernel (one block per token: its two rows
            // and its RoPE row).
            let out = unsafe { alloc_out::<$t>(&dev, tokens * (2 * hidden + head_dim))? };
            let mut b = Launch::new(&stream, &func);
            b.arg(&es).arg(&ids).arg(&ws).arg(&table).arg(&out);
            candle_core::builder_arg!(
                b,
                tokens as u32,
                hidden as u32,
                vocab as u32,
                head_dim as u32,
                positions as u32,
                op.eps
            );
            // SAFETY: contiguous inputs of the sizes passed; ids and positions past the tables
            // read as zeros in the kernel.
            unsafe { b.launch(cfg) }?;
            CudaStorageSlice::$wrap(out)
        }};
    }
    let slice = per_float_dtype!(e.dtype(), "embed_rms_norm_rope", launch);
    Ok((
        CudaStorage { slice, device: dev },
        Shape::from(tokens * (2 * hidden + head_dim)),
    ))
}

/// The device pointer of a tensor's storage at its layout's start, for the pools the fused QKV
/// op writes while candle holds only its three arguments.
fn raw_ptr<
    T: candle_core::cuda_backend::CudaDType + candle_core::cuda_backend::cudarc::driver::DeviceRepr,
>(
    t: &Tensor,
    what: &str,
) -> Result<(u64, usize)> {
    use candle_core::cuda_backend::cudarc::driver::DevicePtr;
    let (s, l) = t.storage_and_layout();
    let Storage::Cuda(c) = &*s else {
        candle_core::bail!("{what} is not on the GPU")
    };
    let (a, b) = contiguous_range(l, what)?;
    let slice = c.as_cuda_slice::<T>()?;
    let stream = c.device().cuda_stream();
    let (ptr, _sync) = slice.device_ptr(&stream);
    Ok((ptr + (a * std::mem::size_of::<T>()) as u64, b - a))
}

pub(crate) fn qkv_norm_rope_write(
    op: &crate::qkv_write::QkvNormRopeWrite,
    qkv: &CudaStorage,
    ql: &Layout,
    cs: &CudaStorage,
    csl: &Layout,
    slots: &CudaStorage,
    sl: &Layout,
) -> Result<(CudaStorage, Shape)> {
    let dev = qkv.device().clone();
    let (tokens, _) = ql.shape().dims2()?;
    let head_dim = op.q_norm.dims1()?;
    if ![64, 128, 256].contains(&head_dim) {
        candle_core::bail!(
            "qkv_norm_rope_write (cuda): head_dim {head_dim} is not built; 64, 128 and 256 are"
        );
    }
    let (q0, q1) = contiguous_range(ql, "qkv")?;
    let (c0, c1) = contiguous_range(csl, "cos_sin")?;
    let (s0, s1) = contiguous_range(sl, "the slots")?;
    let func = kernel(
        &dev,
        &format!(
            "qkv_norm_rope_write_{}_p{}",
            suffix(qkv.dtype())?,
            head_dim / 32
        ),
        0,
    )?;
    let stream = dev.cuda_stream();
    let warps = 4u32;
    let heads_all = (op.heads + 2 * op.kv_heads) as u32;
    let cfg = LaunchConfig {
        grid_dim: (tokens as u32, heads_all.div_ceil(warps), 1),
        block_dim: (32 * warps, 1, 1),
        shared_mem_bytes: 0,
    };
    let slot_ids = slots.as_cuda_slice::<u32>()?.slice(s0..s1);
    macro_rules! launch {
        ($t:ty, $wrap:ident) => {{
            let (qs, css) = (
                qkv.as_cuda_slice::<$t>()?.slice(q0..q1),
                cs.as_cuda_slice::<$t>()?.slice(c0..c1),
            );
            let (qw, _) = raw_ptr::<$t>(&op.q_norm, "the q norm weight")?;
            let (kw, _) = raw_ptr::<$t>(&op.k_norm, "the k norm weight")?;
            let (kp, k_len) = raw_ptr::<$t>(&op.k_pool, "the K pool")?;
            let (vp, _) = raw_ptr::<$t>(&op.v_pool, "the V pool")?;
            let capacity = (k_len / (op.kv_heads * head_dim)) as u32;
            // SAFETY: every element is written by the kernel (one warp per q head).
            let out = unsafe { alloc_out::<$t>(&dev, tokens * op.heads * head_dim)? };
            let mut b = Launch::new(&stream, &func);
            b.arg(&qs)
                .arg(&qw)
                .arg(&kw)
                .arg(&css)
                .arg(&out)
                .arg(&kp)
                .arg(&vp)
                .arg(&slot_ids);
            candle_core::builder_arg!(
                b,
                tokens as u32,
                op.heads as u32,
                op.kv_heads as u32,
                head_dim as u32,
                capacity,
                op.eps
            );
            // SAFETY: shapes checked by qkv_norm_rope_write; slots at or beyond the pool's
            // capacity are skipped by the kernel; the pools are written only by this stream.
            unsafe { b.launch(cfg) }?;
            CudaStorageSlice::$wrap(out)
        }};
    }
    let slice = per_float_dtype!(qkv.dtype(), "qkv_norm_rope_write", launch);
    Ok((
        CudaStorage { slice, device: dev },
        Shape::from((tokens, op.heads * head_dim)),
    ))
}
