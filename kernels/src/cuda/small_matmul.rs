//! Launching the few-row matmul (small_matmul.cuh): its persistent grid and split-K, sized by
//! the kernel's residency.

use super::matmul_args::MatmulArgs;
use super::{blocks_per_sm, kernel, sm_count, suffix};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::LaunchConfig;
use candle_core::{CudaStorage, Layout, Result, Shape};
use std::sync::OnceLock;

/// Warps per output column of `small_matmul` (split-K: 1, 2, 4 or 8): doubled while each warp
/// still has at least one full pass of loads (`pass` elements of k: 32 lanes x 4 loads of 16
/// bytes) and the columns times the split stay under the warps the GPU holds (`resident`), capped
/// by `NANOHOST_SMALL_MATMUL_SPLIT` (1, 2, 4 or 8, read once; default 8). On an H200 (bench-chain,
/// results/gpu-h200-2026-11-28-chain/) a split of 2 made Qwen3-0.6B's o_proj (k = 2,048) and
/// down_proj (k = 3,072) at batch 1 faster (2.41 vs 2.69 us, 3.08 vs 4.64), while splitting
/// k = 1,024 made qkv_proj slower (6.15 vs 4.40): that is the one-pass floor.
fn small_matmul_split(n: usize, k: usize, pass: usize, resident: usize) -> usize {
    static CAP: OnceLock<usize> = OnceLock::new();
    let cap = crate::knob::knob(
        &CAP,
        "NANOHOST_SMALL_MATMUL_SPLIT",
        8,
        |v| [1, 2, 4, 8].contains(v),
        "1, 2, 4 or 8",
    );
    let mut s = 1;
    while s < cap && k / (2 * s) >= pass && n * 2 * s <= resident {
        s *= 2;
    }
    s
}

/// `swiglu`: the weight's rows are gate and up halves, and each output their SwiGLU gate
/// (small_matmul.cuh, GLU): n outputs from 2 n weight rows, a block's columns in pairs.
pub(crate) fn small_matmul(
    x: &CudaStorage,
    xl: &Layout,
    w: &CudaStorage,
    wl: &Layout,
    swiglu: bool,
) -> Result<(CudaStorage, Shape)> {
    let dev = x.device().clone();
    let args = MatmulArgs::new("small_matmul", xl, wl, swiglu)?;
    let (rows, n, k) = (args.rows, args.n, args.k);
    let mr = rows.next_power_of_two();
    let sms = sm_count(&dev)?;
    let warps = 8usize;
    // Split by the one-split kernel's residency (the split ones differ by a few registers).
    let plain = format!("small_matmul_{}_m{mr}_s1", suffix(x.dtype())?);
    let resident =
        blocks_per_sm(&plain, &kernel(&dev, &plain, 0)?, 32 * warps as u32)? * warps * sms;
    // Weight rows streamed: the gate and up rows of every output under swiglu. A block's 8
    // warps hold at least one gate/up pair: a split of at most 4.
    let columns = if swiglu { 2 * n } else { n };
    let split = small_matmul_split(columns, k, 2048 / x.dtype().size_in_bytes(), resident)
        .min(if swiglu { 4 } else { 8 });
    let name = format!(
        "small_matmul{}_{}_m{mr}_s{split}",
        if swiglu { "_glu" } else { "" },
        suffix(x.dtype())?
    );
    let func = kernel(&dev, &name, 0)?;
    // A persistent grid: at most the blocks that fit at once, each given the same number of
    // column groups (so that none runs a lone extra group at the end).
    let groups = n.div_ceil(if swiglu {
        warps / split / 2
    } else {
        warps / split
    });
    let capacity = blocks_per_sm(&name, &func, 32 * warps as u32)? * sms;
    let blocks = groups.div_ceil(groups.div_ceil(capacity));
    let cfg = LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (32 * warps as u32, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: shapes checked by small_matmul (k a multiple of 8, at most 8 rows); S warps per
    // column (pair) write every row of every output.
    unsafe { args.launch(x, w, &func, cfg, None) }
}
