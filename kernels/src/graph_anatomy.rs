//! What a captured decode graph is made of: its kernels, its memory nodes (candle allocates
//! and frees each op's output inside the capture) and how its nodes are joined. A programmatic
//! edge lets a kernel start before the one it follows has finished (programmatic dependent
//! launch, cuda/launch.rs); a plain edge makes it wait for the end. Result files report the
//! counts so that a run says whether PDL reached the graph, and the capture-links test checks
//! them.

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct GraphAnatomy {
    pub kernel_nodes: usize,
    /// Allocation and free nodes.
    pub memory_nodes: usize,
    pub other_nodes: usize,
    pub edges: usize,
    pub programmatic_edges: usize,
}

/// Counts the nodes and edges of `graph`.
///
/// # Safety
/// `graph` must be a live graph handle.
#[cfg(feature = "cuda")]
pub unsafe fn anatomy(
    graph: candle_core::cuda_backend::cudarc::driver::sys::CUgraph,
) -> candle_core::Result<GraphAnatomy> {
    use candle_core::cuda_backend::cudarc::driver::sys::{
        self, CUgraphDependencyType, CUgraphNodeType,
    };
    use candle_core::cuda_backend::WrapErr;
    let mut a = GraphAnatomy::default();
    // SAFETY: a live graph (the caller's promise); each query is asked first for its count,
    // then for that many entries.
    unsafe {
        let mut n = 0usize;
        sys::cuGraphGetNodes(graph, std::ptr::null_mut(), &mut n)
            .result()
            .w()?;
        let mut nodes = vec![std::ptr::null_mut(); n];
        sys::cuGraphGetNodes(graph, nodes.as_mut_ptr(), &mut n)
            .result()
            .w()?;
        for &node in &nodes[..n] {
            let mut t = CUgraphNodeType::CU_GRAPH_NODE_TYPE_EMPTY;
            sys::cuGraphNodeGetType(node, &mut t).result().w()?;
            match t {
                CUgraphNodeType::CU_GRAPH_NODE_TYPE_KERNEL => a.kernel_nodes += 1,
                CUgraphNodeType::CU_GRAPH_NODE_TYPE_MEM_ALLOC
                | CUgraphNodeType::CU_GRAPH_NODE_TYPE_MEM_FREE => a.memory_nodes += 1,
                _ => a.other_nodes += 1,
            }
        }
        let mut e = 0usize;
        sys::cuGraphGetEdges_v2(
            graph,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut e,
        )
        .result()
        .w()?;
        let (mut from, mut to) = (vec![std::ptr::null_mut(); e], vec![std::ptr::null_mut(); e]);
        let mut data: Vec<sys::CUgraphEdgeData> = vec![std::mem::zeroed(); e];
        sys::cuGraphGetEdges_v2(
            graph,
            from.as_mut_ptr(),
            to.as_mut_ptr(),
            data.as_mut_ptr(),
            &mut e,
        )
        .result()
        .w()?;
        a.edges = e;
        a.programmatic_edges = data[..e]
            .iter()
            .filter(|d| {
                d.type_ == CUgraphDependencyType::CU_GRAPH_DEPENDENCY_TYPE_PROGRAMMATIC as u8
            })
            .count();
    }
    Ok(a)
}
