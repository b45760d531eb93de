//! Programmatic edges while a CUDA graph is captured.
//!
//! Stream capture turns a launch with programmatic stream serialization (launch.rs) into a
//! programmatic edge only when the kernel directly follows another kernel. In a candle forward
//! pass it rarely does: each op allocates its output, and candle frees dead tensors, with
//! stream-ordered calls that are captured as memory nodes between the kernels (an H200 capture
//! of a batch-1 decode step: 261 kernels, 630 memory nodes, 0 programmatic edges). A captured
//! graph with memory nodes cannot lose edges afterwards (CUDA_ERROR_NOT_SUPPORTED), so the
//! edges are chosen while capturing, by setting the capture's dependencies:
//!
//! - [`hoisted_alloc`]: an op's output buffers are allocated depending on what the last kernel
//!   (A) depended on, not on A, so the allocations never wait for A;
//! - [`Launch::launch`](super::launch::Launch::launch): the kernel (B) then depends on A through
//!   a programmatic edge and on its hoisted allocations, not on the frees recorded after A
//!   (they stay after A, on a branch of their own).
//!
//! Why that is safe: B reads or writes nothing but weights before `pdl_enter`, which returns
//! after A, and so everything before A, has finished. Every free stays after the last use of
//! its buffer and after its allocation (an allocation is an ancestor of its first user, which
//! is an ancestor of everything after it); the graph allocator places buffers by the final
//! topology, so a hoisted allocation reuses only memory freed before it in that topology.

use candle_core::cuda_backend::cudarc::driver::sys::{self, CUgraphDependencyType, CUgraphNodeType, CUstreamCaptureStatus};
use candle_core::cuda_backend::cudarc::driver::CudaStream;
use candle_core::cuda_backend::WrapErr;
use candle_core::Result;
use std::cell::RefCell;

thread_local! {
    /// Allocation nodes hoisted for the next kernel launched by this crate on this thread.
    static HOISTED: RefCell<Vec<sys::CUgraphNode>> = const { RefCell::new(Vec::new()) };
}

type Deps = Vec<(sys::CUgraphNode, sys::CUgraphEdgeData)>;

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

/// The capture's current dependencies, or `None` when `stream` is not capturing.
fn capture_deps(stream: &CudaStream) -> Result<Option<Deps>> {
    let (mut status, mut id, mut graph) = (CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE, 0u64, std::ptr::null_mut());
    let (mut deps, mut data, mut n) = (std::ptr::null(), std::ptr::null(), 0usize);
    // SAFETY: out-pointers to locals; the returned arrays are copied before any other call.
    unsafe {
        sys::cuStreamGetCaptureInfo_v3(stream.cu_stream(), &mut status, &mut id, &mut graph, &mut deps, &mut data, &mut n).result().w()?;
        if status != CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_ACTIVE {
            return Ok(None);
        }
        Ok(Some((0..n).map(|i| (*deps.add(i), if data.is_null() { plain() } else { *data.add(i) })).collect()))
    }
}

fn set_capture_deps(stream: &CudaStream, deps: &Deps) -> Result<()> {
    let mut nodes: Vec<sys::CUgraphNode> = deps.iter().map(|d| d.0).collect();
    let data: Vec<sys::CUgraphEdgeData> = deps.iter().map(|d| d.1).collect();
    let set = sys::CUstreamUpdateCaptureDependencies_flags::CU_STREAM_SET_CAPTURE_DEPENDENCIES as u32;
    // SAFETY: nodes of the graph being captured on `stream`.
    unsafe { sys::cuStreamUpdateCaptureDependencies_v2(stream.cu_stream(), nodes.as_mut_ptr(), data.as_ptr(), nodes.len(), set) }.result().w()
}

fn predecessors(node: sys::CUgraphNode) -> Result<Deps> {
    let mut n = 0usize;
    // SAFETY: count first, then that many entries.
    unsafe {
        sys::cuGraphNodeGetDependencies_v2(node, std::ptr::null_mut(), std::ptr::null_mut(), &mut n).result().w()?;
        let (mut nodes, mut data) = (vec![std::ptr::null_mut(); n], vec![plain(); n]);
        sys::cuGraphNodeGetDependencies_v2(node, nodes.as_mut_ptr(), data.as_mut_ptr(), &mut n).result().w()?;
        Ok(nodes.into_iter().zip(data).take(n).collect())
    }
}

/// The kernel the capture's dependencies lead back to through memory nodes only, one at a time.
fn last_kernel(deps: &Deps) -> Result<Option<sys::CUgraphNode>> {
    let [(mut node, _)] = deps[..] else { return Ok(None) };
    loop {
        let mut t = CUgraphNodeType::CU_GRAPH_NODE_TYPE_EMPTY;
        // SAFETY: a node of the graph being captured.
        unsafe { sys::cuGraphNodeGetType(node, &mut t) }.result().w()?;
        match t {
            CUgraphNodeType::CU_GRAPH_NODE_TYPE_KERNEL => return Ok(Some(node)),
            CUgraphNodeType::CU_GRAPH_NODE_TYPE_MEM_ALLOC | CUgraphNodeType::CU_GRAPH_NODE_TYPE_MEM_FREE => match predecessors(node)?[..] {
                [(p, _)] => node = p,
                _ => return Ok(None),
            },
            _ => return Ok(None),
        }
    }
}

/// Runs `alloc` (an op's allocations for its next launch) so that, while a graph is captured
/// with programmatic launches on, its allocation nodes depend on what the last kernel depended
/// on rather than on that kernel. Elsewhere it just runs `alloc`.
pub(crate) fn hoisted_alloc<R>(stream: &CudaStream, alloc: impl FnOnce() -> Result<R>) -> Result<R> {
    if !super::launch::pdl_enabled(stream) {
        return alloc();
    }
    let Some(deps) = capture_deps(stream)? else { return alloc() };
    let Some(a) = last_kernel(&deps)? else { return alloc() };
    let before_a: Deps = predecessors(a)?.into_iter().map(|(p, _)| (p, plain())).collect();
    set_capture_deps(stream, &before_a)?;
    let out = alloc();
    let after = capture_deps(stream)?.unwrap_or_default();
    // Nothing was recorded (no allocation): `after` is `before_a` again.
    let new: Vec<sys::CUgraphNode> = after.iter().map(|d| d.0).filter(|n| !before_a.iter().any(|b| b.0 == *n)).collect();
    HOISTED.with(|h| h.borrow_mut().extend(new));
    set_capture_deps(stream, &deps)?;
    out
}

/// Before a launch: while capturing, a launch with programmatic serialization (`programmatic`)
/// depends on the last kernel through a programmatic edge and on its hoisted allocations, and on
/// nothing else; any other launch keeps the recorded order and adds the hoisted allocations.
pub(crate) fn link_before_launch(stream: &CudaStream, programmatic_launch: bool) -> Result<()> {
    let hoisted = HOISTED.with(|h| std::mem::take(&mut *h.borrow_mut()));
    let Some(deps) = capture_deps(stream)? else { return Ok(()) };
    let last = if programmatic_launch { last_kernel(&deps)? } else { None };
    let Some(a) = last else {
        // Something other than memory nodes since the last kernel: keep the recorded order,
        // and the hoisted allocations before this kernel.
        let mut all = deps;
        all.extend(hoisted.into_iter().map(|n| (n, plain())));
        return set_capture_deps(stream, &all);
    };
    let mut linked: Deps = vec![(a, programmatic())];
    linked.extend(hoisted.into_iter().map(|n| (n, plain())));
    set_capture_deps(stream, &linked)
}
