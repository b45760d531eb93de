//! One captured decode step as an executable CUDA graph.
//!
//! cudarc's `end_capture` instantiates the graph at once; nanohost ends the capture itself so
//! that it can count the graph's nodes and edges first (whether its kernels were joined by
//! programmatic edges, see nanohost-kernels' cuda/capture_links.rs).

use super::qwen3::{Qwen3, StepShape};
use crate::engine::kv_pool::KvPool;
use anyhow::{Context, Result};
use candle_core::cuda_backend::cudarc::driver::{sys, CudaStream};
use candle_core::Tensor;
use nanohost_kernels::graph_anatomy::{anatomy, GraphAnatomy};
use std::sync::Arc;

pub struct CudaGraph {
    graph: sys::CUgraph,
    exec: sys::CUgraphExec,
    stream: Arc<CudaStream>,
    pub anatomy: GraphAnatomy,
}

impl CudaGraph {
    pub fn launch(&self) -> Result<()> {
        self.stream.context().bind_to_thread()?;
        // SAFETY: an instantiated graph of this stream's context.
        unsafe { sys::cuGraphLaunch(self.exec, self.stream.cu_stream()) }
            .result()
            .context("CUDA graph replay")
    }
}

impl Drop for CudaGraph {
    fn drop(&mut self) {
        // SAFETY: owned handles, destroyed once.
        unsafe {
            if !self.exec.is_null() {
                let _ = sys::cuGraphExecDestroy(self.exec);
            }
            let _ = sys::cuGraphDestroy(self.graph);
        }
    }
}

/// Records the forward pass of `shape` (inputs already in `inputs`) writing its logits into
/// `logits`, after an eager run of the same step.
pub fn capture(
    model: &Qwen3,
    inputs: &Tensor,
    logits: &Tensor,
    shape: &StepShape,
    pool: &KvPool,
) -> Result<CudaGraph> {
    let candle_core::Device::Cuda(dev) = model.device() else {
        anyhow::bail!("not a CUDA device")
    };
    // Small parameter uploads of candle's ops come from a cache while capturing; the warm-up
    // run, under the same guard, fills it.
    let _cache = dev.enable_cuda_graph_htod_cache();
    model.forward_prepared_into(inputs, shape, pool, logits)?;
    // Every tensor of the pass is allocated and freed inside the capture; only what the LM head
    // writes into the fixed `logits` buffer outlives it.
    record(&dev.cuda_stream(), || {
        model.forward_prepared_into(inputs, shape, pool, logits)
    })
}

/// Captures what `work` launches on `stream` into a graph, counts its nodes and edges, and
/// instantiates and uploads it. `work` must launch on `stream` only and read nothing back.
pub fn record(stream: &Arc<CudaStream>, work: impl FnOnce() -> Result<()>) -> Result<CudaGraph> {
    stream.synchronize()?;
    stream.begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)?;
    let recorded = work();
    let mut graph = std::ptr::null_mut();
    // SAFETY: ends the capture begun above on this stream.
    let ended = unsafe { sys::cuStreamEndCapture(stream.cu_stream(), &mut graph) }.result();
    recorded?;
    ended.context("ending the CUDA graph capture")?;
    anyhow::ensure!(!graph.is_null(), "the capture recorded nothing");
    let mut g = CudaGraph {
        graph,
        exec: std::ptr::null_mut(),
        stream: stream.clone(),
        anatomy: GraphAnatomy::default(),
    };
    // SAFETY: the graph just captured, owned by `g`.
    g.anatomy = unsafe { anatomy(g.graph)? };
    // SAFETY: a complete graph; the exec handle is owned by `g` from here.
    unsafe { sys::cuGraphInstantiateWithFlags(&mut g.exec, g.graph, 0) }
        .result()
        .context("instantiating the CUDA graph")?;
    // SAFETY: as launch.
    unsafe { sys::cuGraphUpload(g.exec, stream.cu_stream()) }
        .result()
        .context("uploading the CUDA graph")?;
    Ok(g)
}
