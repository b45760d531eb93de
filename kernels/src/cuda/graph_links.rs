//! Programmatic edges in a captured CUDA graph.
//!
//! Stream capture turns a launch with programmatic stream serialization (launch.rs) into a
//! programmatic edge only when the kernel directly follows another kernel. In a candle forward
//! pass it rarely does: candle allocates each op's output and frees dead tensors with
//! stream-ordered calls, which are captured as memory nodes between the kernels (an H200
//! capture of a batch-1 decode step: 261 kernels, 630 memory nodes, no programmatic edge). So,
//! before the graph is instantiated, [`link_programmatic`] rewires each stretch
//! `kernel A -> memory nodes -> kernel B of this crate` into:
//!
//! - `A -> B`, programmatic: B's blocks start while A runs and wait for it in `pdl_enter`;
//! - `A -> frees`: what the stretch frees was last used by A or before, so it is freed after A;
//! - `base -> allocations -> B`: B's outputs are allocated before B, starting from the frees of
//!   the stretch before A (`base`), or from the kernel before A. So an allocation never waits
//!   for A, and it may reuse only memory whose last user finished before the kernel before B
//!   did: B writes nothing before its wait, which is after A (and so everything before) ends.
//!
//! The graph allocator places allocations by the final topology, and every free stays after
//! its allocation and after the allocation's last user. Graphs that are not one chain (as a
//! single-stream capture is) are left as they are.

use candle_core::cuda_backend::cudarc::driver::sys::{self, CUgraphDependencyType, CUgraphNodeType};
use candle_core::cuda_backend::WrapErr;
use candle_core::{CudaDevice, Result};
use std::collections::HashMap;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// A kernel; `true` for this crate's (they all wait in `pdl_enter`).
    Kernel(bool),
    Alloc,
    Free,
    Other,
}

fn edge(kind: CUgraphDependencyType) -> sys::CUgraphEdgeData {
    // SAFETY: plain data; zero is the default edge.
    let mut e: sys::CUgraphEdgeData = unsafe { std::mem::zeroed() };
    if kind == CUgraphDependencyType::CU_GRAPH_DEPENDENCY_TYPE_PROGRAMMATIC {
        e.type_ = kind as u8;
        e.from_port = sys::CU_GRAPH_KERNEL_NODE_PORT_PROGRAMMATIC as u8;
    }
    e
}

/// Rewires `graph` (captured, not yet instantiated) as the module doc says; returns how many
/// programmatic edges it holds afterwards.
pub fn link_programmatic(dev: &CudaDevice, graph: sys::CUgraph) -> Result<usize> {
    let ours = our_module(dev)?;
    // SAFETY: every query is asked for its count first, then for that many entries; nodes are
    // only those of `graph`.
    unsafe {
        let mut n = 0usize;
        sys::cuGraphGetNodes(graph, std::ptr::null_mut(), &mut n).result().w()?;
        let mut nodes = vec![std::ptr::null_mut(); n];
        sys::cuGraphGetNodes(graph, nodes.as_mut_ptr(), &mut n).result().w()?;
        let mut e = 0usize;
        sys::cuGraphGetEdges_v2(graph, std::ptr::null_mut(), std::ptr::null_mut(), std::ptr::null_mut(), &mut e).result().w()?;
        let (mut from, mut to) = (vec![std::ptr::null_mut(); e], vec![std::ptr::null_mut(); e]);
        let mut data: Vec<sys::CUgraphEdgeData> = vec![std::mem::zeroed(); e];
        sys::cuGraphGetEdges_v2(graph, from.as_mut_ptr(), to.as_mut_ptr(), data.as_mut_ptr(), &mut e).result().w()?;
        // One chain: one root, every node at most one edge in and one out.
        let index: HashMap<sys::CUgraphNode, usize> = nodes.iter().enumerate().map(|(i, &p)| (p, i)).collect();
        let (mut next, mut preds) = (vec![None; n], vec![0usize; n]);
        for (f, t) in from.iter().zip(&to) {
            let (f, t) = (index[f], index[t]);
            if next[f].replace(t).is_some() {
                return Ok(count_programmatic(&data));
            }
            preds[t] += 1;
        }
        let roots: Vec<usize> = (0..n).filter(|&i| preds[i] == 0).collect();
        if roots.len() != 1 || preds.iter().any(|&p| p > 1) {
            return Ok(count_programmatic(&data));
        }
        let order: Vec<usize> = std::iter::successors(Some(roots[0]), |&i| next[i]).collect();
        let kinds: Vec<Kind> = order.iter().map(|&i| kind(nodes[i], ours)).collect::<Result<_>>()?;
        let node = |k: usize| nodes[order[k]];
        let anchors: Vec<usize> = (0..order.len()).filter(|&k| !matches!(kinds[k], Kind::Alloc | Kind::Free)).collect();
        let (mut remove, mut add): (Vec<(sys::CUgraphNode, sys::CUgraphNode, sys::CUgraphEdgeData)>, Vec<_>) = (Vec::new(), Vec::new());
        let programmatic = edge(CUgraphDependencyType::CU_GRAPH_DEPENDENCY_TYPE_PROGRAMMATIC);
        let plain = edge(CUgraphDependencyType::CU_GRAPH_DEPENDENCY_TYPE_DEFAULT);
        // Where the previous rewired stretch's frees end: the next stretch's allocations start there.
        let mut frees_tail: Option<sys::CUgraphNode> = None;
        for w in 1..anchors.len() {
            let (a, b) = (anchors[w - 1], anchors[w]);
            if !(kinds[b] == Kind::Kernel(true) && matches!(kinds[a], Kind::Kernel(_))) {
                frees_tail = None;
                continue;
            }
            // The chain's edges from A to B go; A -> B comes back programmatic.
            for k in a..b {
                remove.push((node(k), node(k + 1), data_of(&from, &to, &data, node(k), node(k + 1))));
            }
            add.push((node(a), node(b), programmatic));
            let mut tail = node(a);
            for k in (a + 1..b).filter(|&k| kinds[k] == Kind::Free) {
                add.push((tail, node(k), plain));
                tail = node(k);
            }
            let base = frees_tail.or_else(|| (w >= 2).then(|| node(anchors[w - 2])));
            let mut tail_alloc = base;
            for k in (a + 1..b).filter(|&k| kinds[k] == Kind::Alloc) {
                if let Some(t) = tail_alloc {
                    add.push((t, node(k), plain));
                }
                tail_alloc = Some(node(k));
            }
            if let Some(t) = tail_alloc.filter(|_| (a + 1..b).any(|k| kinds[k] == Kind::Alloc)) {
                add.push((t, node(b), plain));
            }
            frees_tail = (tail != node(a)).then_some(tail);
        }
        apply(graph, &remove, sys::cuGraphRemoveDependencies_v2)?;
        apply(graph, &add, sys::cuGraphAddDependencies_v2)?;
        let mut e = 0usize;
        sys::cuGraphGetEdges_v2(graph, std::ptr::null_mut(), std::ptr::null_mut(), std::ptr::null_mut(), &mut e).result().w()?;
        let mut data: Vec<sys::CUgraphEdgeData> = vec![std::mem::zeroed(); e];
        let (mut from, mut to) = (vec![std::ptr::null_mut(); e], vec![std::ptr::null_mut(); e]);
        sys::cuGraphGetEdges_v2(graph, from.as_mut_ptr(), to.as_mut_ptr(), data.as_mut_ptr(), &mut e).result().w()?;
        Ok(count_programmatic(&data[..e]))
    }
}

type EdgeFn = unsafe fn(sys::CUgraph, *const sys::CUgraphNode, *const sys::CUgraphNode, *const sys::CUgraphEdgeData, usize) -> sys::CUresult;

/// Removes or adds `edges` in one call.
unsafe fn apply(graph: sys::CUgraph, edges: &[(sys::CUgraphNode, sys::CUgraphNode, sys::CUgraphEdgeData)], f: EdgeFn) -> Result<()> {
    if edges.is_empty() {
        return Ok(());
    }
    let from: Vec<_> = edges.iter().map(|e| e.0).collect();
    let to: Vec<_> = edges.iter().map(|e| e.1).collect();
    let data: Vec<_> = edges.iter().map(|e| e.2).collect();
    f(graph, from.as_ptr(), to.as_ptr(), data.as_ptr(), edges.len()).result().w()
}

fn data_of(from: &[sys::CUgraphNode], to: &[sys::CUgraphNode], data: &[sys::CUgraphEdgeData], f: sys::CUgraphNode, t: sys::CUgraphNode) -> sys::CUgraphEdgeData {
    from.iter().zip(to).position(|(&a, &b)| a == f && b == t).map(|i| data[i]).expect("a chain edge of the graph")
}

fn count_programmatic(data: &[sys::CUgraphEdgeData]) -> usize {
    data.iter().filter(|d| d.type_ == CUgraphDependencyType::CU_GRAPH_DEPENDENCY_TYPE_PROGRAMMATIC as u8).count()
}

/// The module nanohost.cu is loaded as on `dev`.
fn our_module(dev: &CudaDevice) -> Result<sys::CUmodule> {
    let f = super::kernel(dev, "silu_mul_f32", 0)?;
    let mut m = std::ptr::null_mut();
    // SAFETY: a function handle loaded from that module.
    unsafe { sys::cuFuncGetModule(&mut m, f.cu_function()) }.result().w()?;
    Ok(m)
}

unsafe fn kind(node: sys::CUgraphNode, ours: sys::CUmodule) -> Result<Kind> {
    let mut t = CUgraphNodeType::CU_GRAPH_NODE_TYPE_EMPTY;
    sys::cuGraphNodeGetType(node, &mut t).result().w()?;
    Ok(match t {
        CUgraphNodeType::CU_GRAPH_NODE_TYPE_MEM_ALLOC => Kind::Alloc,
        CUgraphNodeType::CU_GRAPH_NODE_TYPE_MEM_FREE => Kind::Free,
        CUgraphNodeType::CU_GRAPH_NODE_TYPE_KERNEL => {
            let mut p: sys::CUDA_KERNEL_NODE_PARAMS = std::mem::zeroed();
            sys::cuGraphKernelNodeGetParams_v2(node, &mut p).result().w()?;
            let mut m = std::ptr::null_mut();
            // Kernels of libraries (cuBLAS) may come as CUkernel handles without a CUfunction.
            let mine = !p.func.is_null() && sys::cuFuncGetModule(&mut m, p.func).result().is_ok() && m == ours;
            Kind::Kernel(mine)
        }
        _ => Kind::Other,
    })
}
