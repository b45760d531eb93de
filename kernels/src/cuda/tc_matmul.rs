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

/// How a block's warps share its 64 weight rows and its slice of k (tc_matmul.cuh: MA, WK) for
/// `tiles` tiles of 8 rows of x: (16-row weight tiles a warp takes, warps across k). One warp
/// of 16 weight rows per scheduler left the multiply at 64 rows latency-bound, and every warp
/// reads all of x from shared memory once per weight tile. From 33 rows,
/// `NANOHOST_TC_MATMUL_WARP_ROWS` (16 or 32; default 32) and `NANOHOST_TC_MATMUL_WARPS_K` (1, 2
/// or 4; default 2), read once; 4 only where the slice is a multiple of 128, and at least 2
/// under 32 rows. 17-32 rows: 16 and 2; up to 16 rows: 16 and 1.
fn warp_layout(tiles: usize, slice: usize) -> (usize, usize) {
    static ROWS: OnceLock<usize> = OnceLock::new();
    static WARPS: OnceLock<usize> = OnceLock::new();
    match tiles {
        8 => {
            let ma = crate::knob::knob(
                &ROWS,
                "NANOHOST_TC_MATMUL_WARP_ROWS",
                32,
                |v| [16, 32].contains(v),
                "16 or 32",
            ) / 16;
            let wk = crate::knob::knob(
                &WARPS,
                "NANOHOST_TC_MATMUL_WARPS_K",
                2,
                |v| [1, 2, 4].contains(v),
                "1, 2 or 4",
            );
            let wk = if wk == 4 && !slice.is_multiple_of(128) {
                2
            } else {
                wk
            };
            (ma, if ma == 2 { wk.max(2) } else { wk })
        }
        4 => (1, 2),
        _ => (1, 1),
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
    let (ma, wk) = warp_layout(tiles, slice);
    let name = format!(
        "tc_matmul{}_{}_t{tiles}_m{ma}_k{wk}",
        if swiglu { "_glu" } else { "" },
        suffix(x.dtype())?
    );
    let operands = (COLS + 8 * tiles) * (slice + PAD) * x.dtype().size_in_bytes();
    let smem = operands.max(wk * 8 * tiles * PART_STRIDE * std::mem::size_of::<f32>());
    let func = kernel(&dev, &name, smem)?;
    let cfg = LaunchConfig {
        grid_dim: (split as u32, (n / outputs_per_cluster(swiglu)) as u32, 1),
        block_dim: ((128 / ma * wk) as u32, 1, 1),
        shared_mem_bytes: smem as u32,
    };
    // SAFETY: shapes checked by tc_matmul_fits: n % 64 == 0 (32 under swiglu), k % (64 split)
    // == 0, rows <= 8 tiles, the slice a multiple of 32 wk (warp_layout), and the grid's x is the
    // cluster; each cluster writes its outputs of every row.
    unsafe { args.launch(x, w, &func, cfg, Some(split as u32)) }
}
