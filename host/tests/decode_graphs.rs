//! Decode steps the way CUDA graphs run them (padded to a bucket, inputs staged in fixed
//! buffers, attention metadata widened), checked on the CPU in `staged` mode, which does all
//! of it but the capture: the same tokens and logits as plain eager steps.

mod common;

use candle_core::{DType, Device};
use nanohost::engine::kv_pool::{KvPool, PoolSize};
use nanohost::engine::scheduler::SchedulerConfig;
use nanohost::engine::sequence::SamplingParams;
use nanohost::engine::Engine;
use nanohost::model::{DecodeGraphs, GraphMode, LoadedModel, ModelSource, Preset};

fn tiny() -> LoadedModel {
    ModelSource::Preset {
        preset: Preset::Tiny,
        seed: 0,
    }
    .load(&Device::Cpu, DType::F32)
    .unwrap()
}

struct Run {
    outputs: Vec<Vec<u32>>,
    logits: Vec<(u64, usize, Vec<f32>)>,
    graph_steps: usize,
    decode_steps: usize,
    /// Decode steps planned while the device ran the step before (engine/ahead.rs), and those
    /// of them also queued behind it before its tokens were read.
    ahead_steps: usize,
    launched_steps: usize,
}

/// Three requests of different lengths and output counts (the batch shrinks 3 -> 2 -> 1).
fn run(
    m: &LoadedModel,
    mode: GraphMode,
    max_batch: usize,
    temperature: f32,
) -> (Run, nanohost::model::GraphStats) {
    run_after(m, mode, max_batch, temperature, true, |_, _| {})
}

/// `run`, with `before` given the graphs and the pool ahead of the first request; with every
/// step's logits kept where `keep_logits` (which leaves the logits of each step on the device
/// until read, so no step is queued behind the one before).
fn run_after(
    m: &LoadedModel,
    mode: GraphMode,
    max_batch: usize,
    temperature: f32,
    keep_logits: bool,
    before: impl FnOnce(&DecodeGraphs, &KvPool),
) -> (Run, nanohost::model::GraphStats) {
    let pool = KvPool::new(
        m.model.config(),
        PoolSize::Blocks(64),
        16,
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let graphs = DecodeGraphs::new(&m.model, max_batch, mode);
    before(&graphs, &pool);
    let mut engine = Engine::new(
        &m.model,
        &pool,
        common::standard_policy(&pool),
        SchedulerConfig::default(),
        7,
    )
    .with_graphs(&graphs);
    engine.logits = keep_logits.then(Vec::new);
    for (len, max_tokens) in [(37u32, 6), (20, 10), (53, 14)] {
        let prompt = (0..len).map(|i| (i * 7919 + len * 31) % 10_000).collect();
        engine
            .add_request(
                prompt,
                SamplingParams {
                    temperature,
                    max_tokens,
                    ignore_eos: true,
                },
            )
            .unwrap();
    }
    let done = engine.run_to_completion().unwrap();
    let run = Run {
        outputs: done.iter().map(|s| s.output().to_vec()).collect(),
        logits: engine.logits.take().unwrap_or_default(),
        graph_steps: engine.steps.iter().filter(|s| s.graph).count(),
        decode_steps: engine.steps.iter().filter(|s| !s.prefill).count(),
        ahead_steps: engine.steps.iter().filter(|s| s.prepared_ahead).count(),
        launched_steps: engine.steps.iter().filter(|s| s.launched_ahead).count(),
    };
    (run, graphs.stats())
}

fn assert_same(a: &Run, b: &Run) {
    assert_eq!(a.outputs, b.outputs);
    assert_eq!(a.logits.len(), b.logits.len());
    for ((ia, ka, la), (ib, kb, lb)) in a.logits.iter().zip(&b.logits) {
        assert_eq!((ia, ka), (ib, kb));
        let diff = la
            .iter()
            .zip(lb)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(
            diff < 1e-4,
            "sequence {ia} output {ka}: logits differ by {diff}"
        );
    }
}

#[test]
fn staged_decode_steps_give_the_eager_tokens_and_logits() {
    let m = tiny();
    for temperature in [0.0, 0.8] {
        let (eager, off) = run(&m, GraphMode::Off, 256, temperature);
        let (staged, stats) = run(&m, GraphMode::Staged, 256, temperature);
        assert_same(&eager, &staged);
        assert_eq!(eager.graph_steps, 0);
        assert_eq!(off.replays, 0);
        // Every decode step (13 of them: 5 of 3 rows padded to 4, 4 of 2, 4 of 1) is staged.
        assert_eq!(staged.decode_steps, 13);
        assert_eq!(staged.graph_steps, 13);
        assert_eq!(stats.replays, 13);
        assert_eq!(stats.eager_decode_steps, 0);
        // A decode step is planned during the one before when that one was a decode step after
        // which no sequence finishes: all but the first after the prefill and the one after
        // each finishing step (outputs of 6, 10 and 14 tokens end at decode steps 5, 9, 13).
        assert_eq!(eager.ahead_steps, 0);
        assert_eq!(staged.ahead_steps, 10);
        assert_eq!(
            staged.launched_steps, 0,
            "a step was queued while the logits were kept"
        );
        // One shape per bucket (contexts stay within one row-key bucket): what a graph is
        // captured for, so replays outnumber captures.
        assert_eq!(stats.shapes, 3);
    }
}

/// A step planned during the one before is also queued behind it when their rows match, its
/// tokens copied from that step's sampling on the device, not filled in by the host: the same
/// tokens as eager steps.
#[test]
fn steps_queued_behind_the_step_before_give_the_eager_tokens() {
    let m = tiny();
    for temperature in [0.0, 0.8] {
        let (eager, _) = run_after(&m, GraphMode::Off, 256, temperature, false, |_, _| {});
        let (queued, stats) = run_after(&m, GraphMode::Staged, 256, temperature, false, |_, _| {});
        assert_eq!(eager.outputs, queued.outputs);
        assert_eq!((eager.ahead_steps, eager.launched_steps), (0, 0));
        // Every step planned ahead has the rows of the step before (nothing is preempted, and
        // a step after which a sequence finishes plans nothing ahead), and its shape was run
        // before (the first step of each bucket is not planned ahead).
        assert_eq!((queued.ahead_steps, queued.launched_steps), (10, 10));
        assert_eq!(stats.replays, 13);
    }
}

/// Pre-capture runs exactly the shapes the run then meets (buckets 4, 2, 1 at the 256-key
/// bucket: the longest context is 53 + 14 keys), and its dummy steps change no token.
#[test]
fn precaptured_shapes_are_the_shapes_the_run_meets() {
    let m = tiny();
    let (eager, _) = run(&m, GraphMode::Off, 256, 0.8);
    let (staged, stats) = run_after(&m, GraphMode::Staged, 256, 0.8, true, |g, pool| {
        assert_eq!(g.precapture(&m.model, pool, 3, 53 + 14).unwrap(), 3);
        assert_eq!(g.stats().shapes, 3);
    });
    assert_same(&eager, &staged);
    assert_eq!(
        stats.shapes, 3,
        "the run met a shape that was not precaptured"
    );
    assert_eq!(stats.replays, 3 + 13);
}

/// Two 10-token prompts in a pool of 3 blocks of 16: the step computing their 17th entries
/// needs a block for each, one is there. Planned during the step before (which samples both
/// sequences' 16th token), growing the second context preempts it while its token is still on
/// the device; it is recomputed with that token, and the tokens are those of steps planned
/// after sampling.
#[test]
fn preempting_while_planning_ahead_gives_the_eager_tokens() {
    let m = tiny();
    let run = |mode: GraphMode| {
        let pool = KvPool::new(
            m.model.config(),
            PoolSize::Blocks(3),
            16,
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        let graphs = DecodeGraphs::new(&m.model, 256, mode);
        let mut engine = Engine::new(
            &m.model,
            &pool,
            common::standard_policy(&pool),
            SchedulerConfig::default(),
            7,
        )
        .with_graphs(&graphs);
        for seed in [3u32, 5] {
            let prompt = (0..10).map(|i| (i * 7919 + seed * 31) % 10_000).collect();
            engine
                .add_request(
                    prompt,
                    SamplingParams {
                        temperature: 0.8,
                        max_tokens: 12,
                        ignore_eos: true,
                    },
                )
                .unwrap();
        }
        let done = engine.run_to_completion().unwrap();
        let ahead = engine.steps.iter().filter(|s| s.prepared_ahead).count();
        (
            done.iter().map(|s| s.output().to_vec()).collect::<Vec<_>>(),
            engine.preemptions(),
            ahead,
        )
    };
    let (eager, eager_preempted, eager_ahead) = run(GraphMode::Off);
    let (staged, staged_preempted, staged_ahead) = run(GraphMode::Staged);
    assert_eq!(eager, staged);
    assert_eq!((eager_preempted, eager_ahead), (1, 0));
    assert_eq!(staged_preempted, 1);
    assert!(staged_ahead > 0);
}

#[test]
fn batches_over_the_largest_bucket_run_eagerly() {
    let m = tiny();
    let (eager, _) = run(&m, GraphMode::Off, 256, 0.0);
    let (capped, stats) = run(&m, GraphMode::Staged, 2, 0.0);
    assert_same(&eager, &capped);
    // The 5 steps of 3 rows are eager; the 8 of 2 and 1 rows staged.
    assert_eq!(stats.eager_decode_steps, 5);
    assert_eq!(stats.replays, 8);
}

#[test]
fn graphs_are_off_on_the_cpu() {
    let m = tiny();
    assert_eq!(
        DecodeGraphs::new(&m.model, 4, GraphMode::On).mode(),
        GraphMode::Off
    );
    assert_eq!(
        DecodeGraphs::new(&m.model, 4, GraphMode::Staged).mode(),
        GraphMode::Staged
    );
}
