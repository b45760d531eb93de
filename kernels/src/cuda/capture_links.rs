//! Programmatic edges while a CUDA graph is captured.
//!
//! Stream capture turns a launch with programmatic stream serialization (launch.rs) into a
//! programmatic edge only when the kernel directly follows another kernel. In a candle forward
//! pass it rarely does: each op allocates its output, and candle frees dead tensors, with
//! stream-ordered calls that are captured as memory nodes between the kernels (an H200 capture
//! of a batch-1 decode step: 261 kernels, 630 memory nodes, no programmatic edge). A graph with
//! memory nodes cannot lose edges once captured (CUDA_ERROR_NOT_SUPPORTED), so the edges are
//! chosen while capturing, by setting the capture's dependencies. With A, B, C three kernels in
//! a row and C one of this crate's:
//!
//! - [`hoisted_alloc`]: C's output buffers are allocated after the memory nodes recorded before
//!   B (after A), not after B: the allocations never wait for B, and may reuse what was freed
//!   after A;
//! - [`link_before_launch`]: C depends on B through a programmatic edge, on its allocations,
//!   and on the memory nodes recorded before B; the frees recorded after B become dependencies
//!   of the kernel after C. Every node stays joined to the chain. (A first version left the
//!   frees on branches of their own: batch-1 replay took 7.4 ms a step instead of 1.4, with or
//!   without programmatic edges.)
//!
//! Why that is safe: C reads or writes nothing but weights before `pdl_enter`, which returns
//! after B, and so everything before B, has finished; A has finished before C may even launch
//! (B's blocks let C launch only after their own wait). Every free stays after the last use of
//! its buffer and after its allocation; the graph allocator places buffers by the final
//! topology, so an allocation reuses only memory freed before it in that topology.

use candle_core::cuda_backend::cudarc::driver::sys::{
    self, CUgraphDependencyType, CUgraphNodeType, CUstreamCaptureStatus,
};
use candle_core::cuda_backend::cudarc::driver::CudaStream;
use candle_core::cuda_backend::WrapErr;
use candle_core::Result;
use std::cell::RefCell;

// Each entry is tagged with the id of its capture: node handles of an earlier graph must never
// be taken for nodes of this one (the driver may hand out the same addresses again).
thread_local! {
    /// Allocation nodes hoisted for the next kernel launched by this crate on this thread.
    static HOISTED: RefCell<(CaptureId, Vec<sys::CUgraphNode>)> = const { RefCell::new((0, Vec::new())) };
    /// The capture's dependencies just before the launch being made.
    static PENDING: RefCell<Option<(CaptureId, Deps)>> = const { RefCell::new(None) };
    /// The last kernel this crate launched in the capture on this thread, with the capture's
    /// dependencies just before it (the memory nodes after the kernel before it).
    static LAST: RefCell<Option<(CaptureId, sys::CUgraphNode, Deps)>> = const { RefCell::new(None) };
}

type Deps = Vec<(sys::CUgraphNode, sys::CUgraphEdgeData)>;
/// The driver's id of a capture, unique within the process.
type CaptureId = u64;

fn plain() -> sys::CUgraphEdgeData {
    // SAFETY: plain data; all zero is the default edge.
    unsafe { std::mem::zeroed() }
}

fn programmatic() -> sys::CUgraphEdgeData {
    let mut e = plain();
    e.type_ = CUgraphDependencyType::CU_GRAPH_DEPENDENCY_TYPE_PROGRAMMATIC as u8;
    e.from_port = sys::CU_GRAPH_KERNEL_NODE_PORT_PROGRAMMATIC as u8;
    e
}

/// The capture's id and current dependencies, or `None` when `stream` is not capturing.
fn capture_deps(stream: &CudaStream) -> Result<Option<(CaptureId, Deps)>> {
    let (mut status, mut id, mut graph) = (
        CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE,
        0u64,
        std::ptr::null_mut(),
    );
    let (mut deps, mut data, mut n) = (std::ptr::null(), std::ptr::null(), 0usize);
    // SAFETY: out-pointers to locals; the returned arrays are copied before any other call.
    unsafe {
        sys::cuStreamGetCaptureInfo_v3(
            stream.cu_stream(),
            &mut status,
            &mut id,
            &mut graph,
            &mut deps,
            &mut data,
            &mut n,
        )
        .result()
        .w()?;
        if status != CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_ACTIVE {
            return Ok(None);
        }
        Ok(Some((
            id,
            (0..n)
                .map(|i| {
                    (
                        *deps.add(i),
                        if data.is_null() {
                            plain()
                        } else {
                            *data.add(i)
                        },
                    )
                })
                .collect(),
        )))
    }
}

fn set_capture_deps(stream: &CudaStream, deps: &Deps) -> Result<()> {
    let mut nodes: Vec<sys::CUgraphNode> = deps.iter().map(|d| d.0).collect();
    let data: Vec<sys::CUgraphEdgeData> = deps.iter().map(|d| d.1).collect();
    let set =
        sys::CUstreamUpdateCaptureDependencies_flags::CU_STREAM_SET_CAPTURE_DEPENDENCIES as u32;
    // SAFETY: nodes of the graph being captured on `stream`.
    unsafe {
        sys::cuStreamUpdateCaptureDependencies_v2(
            stream.cu_stream(),
            nodes.as_mut_ptr(),
            data.as_ptr(),
            nodes.len(),
            set,
        )
    }
    .result()
    .w()
}

fn predecessors(node: sys::CUgraphNode) -> Result<Deps> {
    let mut n = 0usize;
    // SAFETY: count first, then that many entries.
    unsafe {
        sys::cuGraphNodeGetDependencies_v2(
            node,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut n,
        )
        .result()
        .w()?;
        // A root (the capture's first allocation): asking again with empty arrays is an invalid
        // argument to the driver (an H200, CUDA 13.0).
        if n == 0 {
            return Ok(Vec::new());
        }
        let (mut nodes, mut data) = (vec![std::ptr::null_mut(); n], vec![plain(); n]);
        sys::cuGraphNodeGetDependencies_v2(node, nodes.as_mut_ptr(), data.as_mut_ptr(), &mut n)
            .result()
            .w()?;
        Ok(nodes.into_iter().zip(data).take(n).collect())
    }
}

/// Whether `stream` is capturing a graph.
pub(crate) fn capturing(stream: &CudaStream) -> Result<bool> {
    Ok(capture_deps(stream)?.is_some())
}

/// The kernel the capture's dependencies lead back to through memory nodes only, one at a time
/// (the frees and allocations candle recorded since that kernel).
fn last_kernel(deps: &Deps) -> Result<Option<sys::CUgraphNode>> {
    let [(mut node, _)] = deps[..] else {
        return Ok(None);
    };
    loop {
        let mut t = CUgraphNodeType::CU_GRAPH_NODE_TYPE_EMPTY;
        // SAFETY: a node of the graph being captured.
        unsafe { sys::cuGraphNodeGetType(node, &mut t) }
            .result()
            .w()?;
        match t {
            CUgraphNodeType::CU_GRAPH_NODE_TYPE_KERNEL => return Ok(Some(node)),
            CUgraphNodeType::CU_GRAPH_NODE_TYPE_MEM_ALLOC
            | CUgraphNodeType::CU_GRAPH_NODE_TYPE_MEM_FREE => match predecessors(node)?[..] {
                [(p, _)] => node = p,
                _ => return Ok(None),
            },
            _ => return Ok(None),
        }
    }
}

/// The capture's id and dependencies (`None`, and no remembered kernel, when `stream` is not
/// capturing): asked of the driver once per allocation and once per launch.
fn capture_deps_or_forget(stream: &CudaStream) -> Result<Option<(CaptureId, Deps)>> {
    let deps = capture_deps(stream)?;
    if deps.is_none() {
        LAST.with(|l| l.borrow_mut().take());
    }
    Ok(deps)
}

/// When only memory nodes were recorded since the last kernel (B), given the capture's
/// dependencies `deps`: B, and what B's successor may depend on without waiting for B (the
/// dependencies recorded before B: for a kernel of this crate, remembered at its launch; for
/// another (candle's, cuBLAS'), B's own predecessors).
fn after_last_kernel(id: CaptureId, deps: &Deps) -> Result<Option<(sys::CUgraphNode, Deps)>> {
    let Some(b) = last_kernel(deps)? else {
        return Ok(None);
    };
    let before_b = match LAST.with(|l| l.borrow().clone()) {
        Some((capture, ours, before)) if capture == id && ours == b => before,
        _ => predecessors(b)?,
    };
    Ok(Some((b, before_b)))
}

/// Runs `alloc` (an op's allocations for its next launch) so that, while a graph is captured
/// with programmatic launches on, its allocation nodes follow the memory nodes recorded after A
/// (the kernel before the last one, B) instead of B: they never wait for B, and they may reuse
/// what was freed after A. Elsewhere it just runs `alloc`.
pub(crate) fn hoisted_alloc<R>(
    stream: &CudaStream,
    alloc: impl FnOnce() -> Result<R>,
) -> Result<R> {
    if !super::launch::pdl_enabled(stream) {
        return alloc();
    }
    let Some((id, deps)) = capture_deps_or_forget(stream)? else {
        return alloc();
    };
    let Some((_, before_b)) = after_last_kernel(id, &deps)? else {
        return alloc();
    };
    let base: Deps = before_b.iter().map(|(n, _)| (*n, plain())).collect();
    set_capture_deps(stream, &base)?;
    let out = alloc();
    let after = capture_deps(stream)?.map(|(_, d)| d).unwrap_or_default();
    // Nothing was recorded (no allocation): `after` is `base` again.
    let new: Vec<sys::CUgraphNode> = after
        .iter()
        .map(|d| d.0)
        .filter(|n| !base.iter().any(|b| b.0 == *n))
        .collect();
    HOISTED.with(|h| {
        let mut h = h.borrow_mut();
        if h.0 != id {
            *h = (id, Vec::new());
        }
        h.1.extend(new)
    });
    set_capture_deps(stream, &deps)?;
    out
}

/// Before a launch of this crate's kernel (C) while capturing. When only memory nodes were
/// recorded since the last kernel (B): C depends on B through a programmatic edge, on its
/// hoisted allocations, and on the memory nodes recorded before B (they follow A, which has
/// ended by the time C may launch), not on those recorded after B, which C's successor picks
/// up in turn. Otherwise C keeps the recorded order, plus its hoisted allocations.
pub(crate) fn link_before_launch(stream: &CudaStream) -> Result<()> {
    let (hoisted_in, hoisted) = HOISTED.with(|h| std::mem::take(&mut *h.borrow_mut()));
    let Some((id, deps)) = capture_deps_or_forget(stream)? else {
        return Ok(());
    };
    let hoisted: Deps = if hoisted_in == id {
        hoisted.into_iter().map(|n| (n, plain())).collect()
    } else {
        Vec::new()
    };
    let linked = match after_last_kernel(id, &deps)? {
        Some((b, before_b)) => {
            let mut linked: Deps = vec![(b, programmatic())];
            linked.extend(hoisted);
            linked.extend(before_b.into_iter().map(|(n, _)| (n, plain())));
            linked
        }
        None => {
            let mut all = deps.clone();
            all.extend(hoisted);
            all
        }
    };
    set_capture_deps(stream, &linked)?;
    // The launch itself is recorded next; `remember_launch` stores it with `deps`.
    PENDING.with(|p| *p.borrow_mut() = Some((id, deps)));
    Ok(())
}

/// After a launch of this crate's kernel while capturing: remembers it as the last kernel.
pub(crate) fn remember_launch(stream: &CudaStream) -> Result<()> {
    let Some((id, before)) = PENDING.with(|p| p.borrow_mut().take()) else {
        return Ok(());
    };
    let Some((now_id, now)) = capture_deps(stream)? else {
        return Ok(());
    };
    if let ([(node, _)], true) = (&now[..], now_id == id) {
        LAST.with(|l| *l.borrow_mut() = Some((id, *node, before)));
    }
    Ok(())
}
