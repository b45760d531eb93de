//! Ops inside captured CUDA graphs, and the step's tokens on their way to the host.

use super::{common::max_diff, gpu, matmul::tc_matmul_runs};
use candle_core::{DType, Device, Tensor};
use nanohost_kernels::silu_mul;

/// `chain` on `x`, run once eagerly, then captured into a graph whose replay writes the chain's
/// result into `out` (made outside the capture): (the eager result, out, the graph).
fn capture_chain(
    cuda: &candle_core::CudaDevice,
    x: &Tensor,
    chain: &dyn Fn(&Tensor) -> Tensor,
) -> (
    Tensor,
    Tensor,
    candle_core::cuda_backend::cudarc::driver::CudaGraph,
) {
    use candle_core::cuda_backend::cudarc::driver::sys;
    let eager = chain(x);
    let out = eager.zeros_like().unwrap();
    let stream = cuda.cuda_stream();
    stream.synchronize().unwrap();
    stream
        .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
        .unwrap();
    let recorded = chain(x);
    out.slice_set(&recorded, 0, 0).unwrap();
    drop(recorded);
    let graph = stream
        .end_capture(sys::CUgraphInstantiate_flags(0))
        .unwrap()
        .expect("a graph");
    (eager, out, graph)
}

/// Replays `graph` twice, the second time after `x` is rewritten with `other`: each replay's
/// `out` is exactly what `chain` computes eagerly on `x` then.
fn assert_replays_like_eager(
    cuda: &candle_core::CudaDevice,
    graph: &candle_core::cuda_backend::cudarc::driver::CudaGraph,
    x: &Tensor,
    other: &Tensor,
    out: &Tensor,
    chain: &dyn Fn(&Tensor) -> Tensor,
) {
    for round in 0..2 {
        if round == 1 {
            x.slice_set(other, 0, 0).unwrap();
        }
        graph.launch().unwrap();
        cuda.cuda_stream().synchronize().unwrap();
        assert_eq!(
            max_diff(&chain(x), out),
            0.0,
            "replay {round} differs from the eager chain"
        );
    }
}

/// The cluster launch of tc_matmul inside a captured graph, linked to its neighbours by
/// programmatic edges: the replay computes what the eager ops compute.
#[test]
fn captured_tc_matmul_replays_like_eager() {
    let dev = gpu();
    if !tc_matmul_runs(&dev) {
        return;
    }
    let Device::Cuda(cuda) = &dev else {
        unreachable!()
    };
    let bf = |t: Tensor| t.to_dtype(DType::BF16).unwrap().to_device(&dev).unwrap();
    let (w_up, w_down) = (
        bf(Tensor::randn(0f32, 0.05, (4096, 1024), &Device::Cpu).unwrap()),
        bf(Tensor::randn(0f32, 0.05, (1024, 2048), &Device::Cpu).unwrap()),
    );
    let chain = |x: &Tensor| {
        nanohost_kernels::tc_matmul(
            &silu_mul(&nanohost_kernels::tc_matmul(x, &w_up).unwrap()).unwrap(),
            &w_down,
        )
        .unwrap()
    };
    let x = bf(Tensor::randn(0f32, 1.0, (20, 1024), &Device::Cpu).unwrap());
    let (_, out, graph) = capture_chain(cuda, &x, &chain);
    assert_replays_like_eager(
        cuda,
        &graph,
        &x,
        &bf(Tensor::randn(0f32, 1.0, (20, 1024), &Device::Cpu).unwrap()),
        &out,
        &chain,
    );
}

/// Programmatic edges in a captured graph (launch.rs, capture_links.rs): a chain of nanohost ops,
/// with candle allocating and freeing between them, captured and replayed. Each kernel after the
/// first is linked to the one before it (on sm_90 and later), and the replay computes exactly
/// what the eager ops compute, also after the input buffer is rewritten. The capture begins with
/// an allocation, a root node: asking the driver for a root's (no) predecessors with empty arrays
/// was an invalid argument, and this test's segmentation fault (results/gpu-h200-2026-11-28-pdl/).
#[test]
fn captured_chain_is_linked_programmatically_and_replays_like_eager() {
    let dev = gpu();
    let Device::Cuda(cuda) = &dev else {
        unreachable!()
    };
    let bf = |t: Tensor| t.to_dtype(DType::BF16).unwrap().to_device(&dev).unwrap();
    let (w_up, w_down, norm) = (
        bf(Tensor::randn(0f32, 0.05, (4096, 1024), &Device::Cpu).unwrap()),
        bf(Tensor::randn(0f32, 0.05, (1024, 2048), &Device::Cpu).unwrap()),
        bf(Tensor::randn(1f32, 0.1, 1024, &Device::Cpu).unwrap()),
    );
    // small_matmul -> silu_mul -> small_matmul -> add_rms_norm -> small_matmul: five kernels.
    let chain = |x: &Tensor| {
        let a = silu_mul(&nanohost_kernels::small_matmul(x, &w_up).unwrap()).unwrap();
        let d = nanohost_kernels::small_matmul(&a, &w_down).unwrap();
        let (_, h) = nanohost_kernels::add_rms_norm(x, &d, &norm, 1e-6).unwrap();
        nanohost_kernels::small_matmul(&h, &w_up).unwrap()
    };
    let input = bf(Tensor::randn(0f32, 1.0, (1, 1024), &Device::Cpu).unwrap());
    let x = input.zeros_like().unwrap();
    x.slice_set(&input, 0, 0).unwrap();
    let (eager, out, graph) = capture_chain(cuda, &x, &chain);
    // SAFETY: the graph is alive.
    let programmatic = unsafe { nanohost_kernels::graph_anatomy::anatomy(graph.cu_graph()) }
        .unwrap()
        .programmatic_edges;
    if nanohost_kernels::programmatic_launch(&dev) {
        assert!(
            programmatic >= 4,
            "5 chained nanohost kernels, {programmatic} programmatic edges"
        );
    } else {
        assert_eq!(programmatic, 0);
    }
    assert_replays_like_eager(
        cuda,
        &graph,
        &x,
        &bf(Tensor::randn(0f32, 1.0, (1, 1024), &Device::Cpu).unwrap()),
        &out,
        &chain,
    );
    assert_eq!(max_diff(&eager, &chain(&input)), 0.0);
}

#[test]
fn tokens_move_on_the_device_and_come_back_while_later_work_is_queued() {
    // What a decode step queued behind the one before does with that step's sampled tokens:
    // StepStage's kernel puts the step's inputs (from mapped page-locked memory) and the tokens
    // in the next step's input buffer on the device, and the tokens on the host, without
    // waiting for what was queued after it (a large matmul here), which then still finishes
    // with its own result.
    let dev = gpu();
    let mut stage = nanohost_kernels::StepStage::default();
    let inputs = Tensor::zeros(8, DType::U32, &dev).unwrap();
    let ints = [1u32, 2, 3, 4, 5, 6];
    stage
        .stage(&inputs, &ints, &[(0..4, 0), (4..6, 6)], None)
        .unwrap();
    assert_eq!(inputs.to_vec1::<u32>().unwrap(), [1, 2, 3, 4, 0, 0, 5, 6]);
    let sampled = Tensor::new(&[7u32, 8, 9], &dev).unwrap();
    stage
        .stage(&inputs, &[10, 20, 30, 40], &[(0..4, 0)], Some(&sampled))
        .unwrap();
    let a = Tensor::ones((2048, 2048), DType::F32, &dev).unwrap();
    let later = a.matmul(&a).unwrap();
    assert_eq!(stage.tokens().unwrap(), [7, 8, 9]);
    assert!(
        stage.tokens().is_err(),
        "a second read with no tokens staged"
    );
    // Between the pieces, what the first image held there (the other image, the step before's,
    // is the one the second kernel read: 0 there).
    assert_eq!(inputs.to_vec1::<u32>().unwrap(), [7, 8, 9, 40, 0, 0, 5, 6]);
    assert_eq!(
        later
            .get(0)
            .unwrap()
            .get(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
        2048.0
    );
    // Longer steps grow the page-locked buffers; images alternate, each step complete.
    let big = Tensor::zeros(20_000, DType::U32, &dev).unwrap();
    for round in 0..3u32 {
        let ints: Vec<u32> = (0..20_000).map(|i| i * 3 + round).collect();
        let long = Tensor::arange(round, round + 1000, &dev).unwrap();
        stage
            .stage(&big, &ints, &[(0..20_000, 0)], Some(&long))
            .unwrap();
        assert_eq!(
            stage.tokens().unwrap(),
            (round..round + 1000).collect::<Vec<u32>>()
        );
        let got = big.to_vec1::<u32>().unwrap();
        assert_eq!(
            &got[..1000],
            (round..round + 1000).collect::<Vec<u32>>().as_slice()
        );
        assert_eq!(&got[1000..], &ints[1000..]);
    }
    assert!(stage
        .stage(&inputs, &ints, &[(0..6, 4)], None)
        .unwrap_err()
        .to_string()
        .contains("do not fit"));
}
