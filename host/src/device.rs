//! Where the model runs: `cpu`, `cuda` or `cuda:N`. CPU computes in f32; CUDA keeps weights
//! and KV in bf16 (arithmetic inside the kernels is f32).

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};

/// cuBLAS without a workspace unless the user set one (`CUBLAS_WORKSPACE_CONFIG`): with one, it
/// ran decode's down_proj at batch 64 as a split-k kernel plus a reduce kernel (1.9 us a layer
/// on an H200); without, bench-decode at batch 64 took 1.712-1.721 -> 1.683-1.684 ms/step, batch
/// 1 unchanged (results/gpu-h200-2026-11-29-step-edges/call8/). cuBLAS reads the variable when a
/// handle is made, so this runs first thing in `main`, before any other thread exists (the
/// child processes of `run` inherit it).
pub fn prefer_cublas_without_workspace() {
    if std::env::var_os("CUBLAS_WORKSPACE_CONFIG").is_none() {
        std::env::set_var("CUBLAS_WORKSPACE_CONFIG", ":0:0");
    }
}

pub struct Compute {
    pub device: Device,
    pub dtype: DType,
    /// For logs and result files, e.g. "cpu" or "cuda:0 (NVIDIA H100 80GB HBM3)".
    pub name: String,
}

/// `None` picks CUDA device 0 when this binary was built with CUDA and a GPU answers, else the
/// CPU, and says which in one log line. `dtype` overrides the device's default (f32 on CPU,
/// bf16 on CUDA): f32, bf16 or f16.
pub fn select(spec: Option<&str>, dtype: Option<&str>) -> Result<Compute> {
    let compute = match spec {
        Some("cpu") => cpu(),
        Some(s) if s == "cuda" || s.starts_with("cuda:") => {
            let ordinal = match s.strip_prefix("cuda:") {
                Some(n) => n
                    .parse::<usize>()
                    .with_context(|| format!("device \"{s}\": the GPU index must be a number"))?,
                None => 0,
            };
            cuda(ordinal)?
        }
        Some(other) => bail!("unknown device \"{other}\"; use cpu, cuda or cuda:N"),
        None => match cuda(0) {
            Ok(c) => c,
            Err(why) => {
                if cfg!(feature = "cuda") {
                    tracing::info!("no usable GPU ({why:#}); running on the CPU");
                }
                cpu()
            }
        },
    };
    let mut compute = compute;
    if let Some(d) = dtype {
        compute.dtype = match d {
            "f32" => DType::F32,
            "bf16" => DType::BF16,
            "f16" => DType::F16,
            other => bail!("unknown dtype \"{other}\"; use f32, bf16 or f16"),
        };
    }
    tracing::info!(device = %compute.name, dtype = ?compute.dtype, "compute device");
    Ok(compute)
}

fn cpu() -> Compute {
    Compute {
        device: Device::Cpu,
        dtype: DType::F32,
        name: "cpu".into(),
    }
}

#[cfg(feature = "cuda")]
fn cuda(ordinal: usize) -> Result<Compute> {
    let device =
        Device::new_cuda(ordinal).with_context(|| format!("cannot open CUDA device {ordinal}"))?;
    let gpu = match &device {
        Device::Cuda(d) => {
            // All work runs on candle's one stream, so per-tensor cross-stream events only cost
            // time (an event record per op, which dominates decode at small batch).
            // SAFETY: no tensor is used on another stream.
            unsafe { d.disable_event_tracking() };
            d.cuda_stream()
                .context()
                .name()
                .unwrap_or_else(|_| "unknown GPU".into())
        }
        _ => unreachable!(),
    };
    Ok(Compute {
        device,
        dtype: DType::BF16,
        name: format!("cuda:{ordinal} ({gpu})"),
    })
}

#[cfg(not(feature = "cuda"))]
fn cuda(_ordinal: usize) -> Result<Compute> {
    bail!("this nanohost was built without CUDA; rebuild with `--features cuda` (README: Building for CUDA)")
}

/// The device's memory as the driver reports it, `None` on the CPU.
pub fn device_memory_total(device: &Device) -> Option<u64> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => d
            .cuda_stream()
            .context()
            .mem_get_info()
            .ok()
            .map(|(_, total)| total as u64),
        _ => None,
    }
}

/// Bytes in use on the device as the driver reports them (all processes), `None` on the CPU.
pub fn device_memory_in_use(device: &Device) -> Option<u64> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => d
            .cuda_stream()
            .context()
            .mem_get_info()
            .ok()
            .map(|(free, total)| (total - free) as u64),
        _ => None,
    }
}
