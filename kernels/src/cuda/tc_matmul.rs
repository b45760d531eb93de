//! Launching the tensor-core decode matmul (tc_matmul.cuh): clusters of blocks that split k,
//! summed through distributed shared memory.

use super::launch::sm90;
use super::matmul_args::MatmulArgs;
use super::{kernel, suffix};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::LaunchConfig;
use candle_core::{CudaDevice, CudaStorage, DType, Layout, Result, Shape};
use std::sync::OnceLock;

/// Output columns per cluster, and the unit k's slices come in (tc_matmul.cuh: TC_COLS; 64 of
/// k keep shared-memory rows 64 bytes off a multiple of 128).
const COLS: usize = 64;
/// Elements after each shared-memory row (tc_matmul.cuh: TC_PAD).
const PAD: usize = 32;
/// The longest slice of k a block takes: (64 + 64) rows of 544 bf16 are 139 KB of shared memory.
const MAX_SLICE: usize = 512;

/// Blocks per cluster (1, 2, 4 or 8: the portable cluster sizes) for k: the fewest that cut k
/// into slices of at most `NANOHOST_TC_MATMUL_SLICE` (128, 256 or 512; default 256, read once)
/// in whole 64s, else the most that cut it into slices of at most 512. More blocks make more of
/// them to stream the weight at once, and a longer sum across the cluster at the end.
pub(crate) fn tc_matmul_split(k: usize) -> Option<usize> {
    static SLICE: OnceLock<usize> = OnceLock::new();
    let slice = crate::knob::knob(
        &SLICE,
        "NANOHOST_TC_MATMUL_SLICE",
        256,
        |v| [128, 256, 512].contains(v),
        "128, 256 or 512",
    );
    let whole = |c: usize| k.is_multiple_of(COLS * c);
    [1, 2, 4, 8]
        .into_iter()
        .find(|&c| whole(c) && k / c <= slice)
        .or_else(|| {
            [8, 4, 2, 1]
                .into_iter()
                .find(|&c| whole(c) && k / c <= MAX_SLICE)
        })
}

/// Floats in a row of a block's partial tile (tc_matmul.cuh: TC_PART_STRIDE).
const PART_STRIDE: usize = 68;

/// Warps that split a block's slice of k (tc_matmul.cuh: WK): 2 from 4 tiles of 8 rows of x.
fn warps_k(tiles: usize) -> usize {
    if tiles >= 4 {
        2
    } else {
        1
    }
}

/// Outputs per cluster: 64 columns, or under swiglu 32 outputs from their 32 gate and 32 up rows.
fn outputs_per_cluster(swiglu: bool) -> usize {
    if swiglu {
        COLS / 2
    } else {
        COLS
    }
}

/// Whether the kernel takes these shapes on `dev` (tc_matmul.rs at the crate root says which);
/// `n` counts outputs.
pub(crate) fn tc_matmul_fits(
    dev: &CudaDevice,
    dtype: DType,
    rows: usize,
    n: usize,
    k: usize,
    swiglu: bool,
) -> bool {
    matches!(dtype, DType::BF16 | DType::F16)
        && (1..=crate::TC_MATMUL_MAX_ROWS).contains(&rows)
        && n.is_multiple_of(outputs_per_cluster(swiglu))
        && n > 0
        && tc_matmul_split(k).is_some()
        && sm90(&dev.cuda_stream())
}

pub(crate) fn tc_matmul(
    x: &CudaStorage,
    xl: &Layout,
    w: &CudaStorage,
    wl: &Layout,
    swiglu: bool,
) -> Result<(CudaStorage, Shape)> {
    let dev = x.device().clone();
    let args = MatmulArgs::new("tc_matmul", xl, wl, swiglu)?;
    let (rows, n, k) = (args.rows, args.n, args.k);
    let Some(split) = tc_matmul_split(k) else {
        candle_core::bail!(
            "tc_matmul (cuda): k = {k} is not a multiple of 64 with a slice of at most {MAX_SLICE}"
        )
    };
    let (tiles, slice) = (rows.div_ceil(8).next_power_of_two(), k / split);
    let wk = warps_k(tiles);
    let name = format!(
        "tc_matmul{}_{}_t{tiles}",
        if swiglu { "_glu" } else { "" },
        suffix(x.dtype())?
    );
    let operands = (COLS + 8 * tiles) * (slice + PAD) * x.dtype().size_in_bytes();
    let smem = operands.max(wk * 8 * tiles * PART_STRIDE * std::mem::size_of::<f32>());
    let func = kernel(&dev, &name, smem)?;
    let cfg = LaunchConfig {
        grid_dim: (split as u32, (n / outputs_per_cluster(swiglu)) as u32, 1),
        block_dim: (128 * wk as u32, 1, 1),
        shared_mem_bytes: smem as u32,
    };
    // SAFETY: shapes checked by tc_matmul_fits: n % 64 == 0 (32 under swiglu), k % (64 split)
    // == 0, rows <= 8 tiles, the block 128 wk threads as the kernel of `tiles` tiles is built,
    // and the grid's x is the cluster; each cluster writes its outputs of every row.
    unsafe { args.launch(x, w, &func, cfg, Some(split as u32)) }
}
