//! The cascade plugin's prefix sharing and cascade attention on the prototype's shared-prefix
//! workload (tiny, f32): the same tokens and logits (within 1e-4) as the standard plugin, one
//! cascade group per decode step, and exactly the blocks sharing predicts. Both plugins
//! are loaded from their built libraries into this one process (abi_stable's header API).

mod common;

use candle_core::{DType, Device};
use nanohost::bench::config::BenchConfig;
use nanohost::engine::kv_pool::{KvPool, PoolSize};
use nanohost::engine::scheduler::SchedulerConfig;
use nanohost::engine::sequence::SamplingParams;
use nanohost::engine::Engine;
use nanohost::model::{LoadedModel, ModelSource, Preset};
use nanohost::plugin::{load_plugin, PluginPolicy};
use nanohost::workload::{self, Point};

struct Run {
    outputs: Vec<Vec<u32>>,
    peak_blocks: usize,
    reused: usize,
    logits: Vec<(u64, usize, Vec<f32>)>,
    groups_per_step: Vec<(bool, usize)>,
}

/// The tiny model (f32, CPU) and the shared-prefix workload's point of `batch` requests over a
/// 200-token prefix.
fn tiny_and_prefix_point(batch: usize) -> (LoadedModel, Point) {
    let m = ModelSource::Preset {
        preset: Preset::Tiny,
        seed: 0,
    }
    .load(&Device::Cpu, DType::F32)
    .unwrap();
    let cfg = BenchConfig {
        batch_sizes: vec![batch],
        ..BenchConfig::default()
    };
    let tok = nanohost::model::tokenizer::byte_level_tokenizer().unwrap();
    let points = workload::by_name("shared-prefix")
        .unwrap()
        .points(&cfg, 10_240, &tok)
        .unwrap();
    let point = points
        .into_iter()
        .find(|p| p.extra["shared_prefix_len"] == 200)
        .unwrap();
    (m, point)
}

#[test]
fn shared_prefix_is_stored_once_and_changes_no_token() {
    let (m, point) = tiny_and_prefix_point(4);
    let max_tokens = 8;
    let standard_lib = load_plugin(&common::standard_plugin()).unwrap();
    let cascade_lib =
        load_plugin(&common::built_plugin("nanohost-plugin-cascade", "cascade")).unwrap();
    let run = |make: &dyn Fn(&KvPool) -> Box<PluginPolicy>| {
        let pool = KvPool::new(
            m.model.config(),
            PoolSize::Blocks(128),
            16,
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        let mut engine = Engine::new(&m.model, &pool, make(&pool), SchedulerConfig::default(), 42);
        engine.logits = Some(Vec::new());
        for p in &point.prompts {
            engine
                .add_request(
                    p.tokens.clone(),
                    SamplingParams {
                        temperature: 0.0,
                        max_tokens,
                        ignore_eos: true,
                    },
                )
                .unwrap();
        }
        let done = engine.run_to_completion().unwrap();
        Run {
            outputs: done.iter().map(|s| s.output().to_vec()).collect(),
            peak_blocks: engine.peak_blocks,
            reused: done.iter().map(|s| s.cached_at_admission).sum(),
            logits: engine.logits.take().unwrap(),
            groups_per_step: engine
                .steps
                .iter()
                .map(|s| (s.prefill, s.cascade_groups))
                .collect(),
        }
    };
    let standard = run(&|pool| Box::new(standard_lib.new_policy(pool, &[]).unwrap()));
    let cascade = run(&|pool| Box::new(cascade_lib.new_policy(pool, &[]).unwrap()));
    assert_eq!(
        (
            standard_lib.info.name.as_str(),
            cascade_lib.info.name.as_str()
        ),
        ("standard", "cascade")
    );
    assert_eq!(
        cascade.outputs, standard.outputs,
        "prefix sharing changed greedy tokens"
    );
    assert_eq!(cascade.logits.len(), standard.logits.len());
    let mut worst = 0f32;
    for ((id_c, i_c, c), (id_s, i_s, s)) in cascade.logits.iter().zip(&standard.logits) {
        assert_eq!((id_c, i_c), (id_s, i_s));
        worst = c
            .iter()
            .zip(s)
            .map(|(a, b)| (a - b).abs())
            .fold(worst, f32::max);
    }
    assert!(
        worst < 1e-4,
        "cascade logits differ from standard by {worst}"
    );
    // One prefill step (the first sequence computes the prefix; the other three are grouped
    // over its 12 blocks for their suffixes), then 7 decode steps with the four in one group.
    assert_eq!(
        cascade.groups_per_step,
        [(true, 1)]
            .into_iter()
            .chain([(false, 1); 7])
            .collect::<Vec<_>>()
    );
    assert!(
        standard.groups_per_step.iter().all(|&(_, g)| g == 0),
        "the standard plugin asks for flat attention"
    );

    // All four live at the last step, each holding prompt + 7 decoded tokens. Standard: one
    // private run each. Sharing: the 12 full blocks of the 200-token prefix (192 tokens) once;
    // block 12 mixes prefix and suffix tokens, so it is not shared.
    let n = point.prompts.len();
    let standard_blocks: usize = point
        .prompts
        .iter()
        .map(|p| (p.tokens.len() + max_tokens - 1).div_ceil(16))
        .sum();
    assert_eq!(standard.peak_blocks, standard_blocks);
    assert_eq!(cascade.peak_blocks, standard_blocks - 12 * (n - 1));
    assert_eq!(standard.reused, 0);
    assert_eq!(
        cascade.reused,
        192 * (n - 1),
        "every sequence after the first reuses the 12 prefix blocks"
    );
}

/// Cascade decode steps the way a CUDA graph would run them (`staged`: padded, staged in the
/// fixed buffers, metadata widened, group structure part of the shape), on the CPU: the same
/// tokens and logits as eager cascade steps. With cascade graphs off they run eagerly.
#[test]
fn cascade_steps_staged_as_graphs_give_the_eager_tokens() {
    use nanohost::model::{DecodeGraphs, GraphMode};
    let (m, point) = tiny_and_prefix_point(3);
    let cascade_lib =
        load_plugin(&common::built_plugin("nanohost-plugin-cascade", "cascade")).unwrap();
    let run = |mode: GraphMode, cascade_graphs: bool| {
        let pool = KvPool::new(
            m.model.config(),
            PoolSize::Blocks(128),
            16,
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        let graphs = DecodeGraphs::new(&m.model, 4, mode).with_cascade(cascade_graphs);
        let mut engine = Engine::new(
            &m.model,
            &pool,
            Box::new(cascade_lib.new_policy(&pool, &[]).unwrap()),
            SchedulerConfig::default(),
            42,
        )
        .with_graphs(&graphs);
        engine.logits = Some(Vec::new());
        for p in &point.prompts {
            engine
                .add_request(
                    p.tokens.clone(),
                    SamplingParams {
                        temperature: 0.0,
                        max_tokens: 8,
                        ignore_eos: true,
                    },
                )
                .unwrap();
        }
        let done = engine.run_to_completion().unwrap();
        let outputs: Vec<Vec<u32>> = done.iter().map(|s| s.output().to_vec()).collect();
        let grouped_graph_steps = engine
            .steps
            .iter()
            .filter(|s| s.graph && s.cascade_groups > 0)
            .count();
        (
            outputs,
            engine.logits.take().unwrap(),
            grouped_graph_steps,
            graphs.stats(),
        )
    };
    let (eager, eager_logits, _, _) = run(GraphMode::Off, false);
    let (staged, staged_logits, grouped, stats) = run(GraphMode::Staged, true);
    assert_eq!(staged, eager);
    assert_eq!(staged_logits.len(), eager_logits.len());
    for ((ia, ka, a), (ib, kb, b)) in staged_logits.iter().zip(&eager_logits) {
        assert_eq!((ia, ka), (ib, kb));
        let d = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(d == 0.0, "sequence {ia} output {ka}: logits differ by {d}");
    }
    // Three sequences in one group for 7 decode steps, padded to 4 rows: one shape, 7 replays.
    assert_eq!(
        (
            grouped,
            stats.replays,
            stats.shapes,
            stats.eager_decode_steps
        ),
        (7, 7, 1, 0)
    );
    let (_, _, grouped_off, stats_off) = run(GraphMode::Staged, false);
    assert_eq!(
        (grouped_off, stats_off.replays, stats_off.eager_decode_steps),
        (0, 0, 7)
    );
}
