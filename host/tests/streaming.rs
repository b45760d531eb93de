//! The streaming plugin (StreamingLLM) on the tiny model: a 4,096-token prompt prefilled in
//! pieces and decoded within sinks + window, with the evictions the host counts following from
//! the lengths; with a window that holds everything it is the standard strategy, token for token.

mod common;

use candle_core::{DType, Device};
use common::{loaded_plugin, options, policy_with, standard_policy};
use nanohost::engine::kv_pool::{KvPool, PoolSize};
use nanohost::engine::scheduler::SchedulerConfig;
use nanohost::engine::sequence::SamplingParams;
use nanohost::engine::Engine;
use nanohost::model::{LoadedModel, ModelSource, Preset};
use nanohost::plugin::PluginPolicy;
use nanohost::rng::Rng;

fn tiny() -> LoadedModel {
    ModelSource::Preset {
        preset: Preset::Tiny,
        seed: 0,
    }
    .load(&Device::Cpu, DType::F32)
    .unwrap()
}

fn prompts(n: usize, len: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = Rng::derive(seed, "streaming-test");
    (0..n)
        .map(|_| {
            (0..len)
                .map(|_| rng.range_inclusive(0, 5000) as u32)
                .collect()
        })
        .collect()
}

struct Run {
    outputs: Vec<Vec<u32>>,
    peak_blocks: usize,
    evicted: (u64, u64),
    prefill_steps: usize,
}

fn run(
    m: &LoadedModel,
    blocks: usize,
    prompts: &[Vec<u32>],
    max_tokens: usize,
    make: &dyn Fn(&KvPool) -> Box<PluginPolicy>,
) -> Run {
    let pool = KvPool::new(
        m.model.config(),
        PoolSize::Blocks(blocks),
        16,
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let mut engine = Engine::new(&m.model, &pool, make(&pool), SchedulerConfig::default(), 42);
    for p in prompts {
        engine
            .add_request(
                p.clone(),
                SamplingParams {
                    temperature: 0.0,
                    max_tokens,
                    ignore_eos: true,
                },
            )
            .unwrap();
    }
    let done = engine.run_to_completion().unwrap();
    let c = engine.policy().host_counters();
    Run {
        outputs: done.iter().map(|s| s.output().to_vec()).collect(),
        peak_blocks: engine.peak_blocks,
        evicted: (c.tokens_evicted, c.blocks_evicted),
        prefill_steps: engine.steps.iter().filter(|s| s.prefill).count(),
    }
}

#[test]
fn a_long_prompt_is_held_in_sinks_and_a_window() {
    let m = tiny();
    let plugin = loaded_plugin("nanohost-plugin-streaming", "streaming");
    let (len, out) = (4096, 6);
    let r = run(&m, 300, &prompts(1, len, 1), out, &|pool| {
        policy_with(&plugin, pool, &[]).unwrap()
    });
    assert_eq!(r.outputs[0].len(), out);
    // Sinks 4 and a window of 1020: 1024 slots, 64 blocks of 16, within sinks + window.
    assert_eq!(r.peak_blocks, 64);
    // Placed: the prompt and every output but the last; held at the end: 4 + 1020.
    assert_eq!(r.evicted, ((len + out - 1 - 1024) as u64, 0));
    // The admission (1024 tokens), then (4096 - 1024) / 256 = 12 pieces.
    assert_eq!(r.prefill_steps, 13);
}

#[test]
fn with_a_window_that_holds_everything_it_is_standard() {
    let m = tiny();
    let plugin = loaded_plugin("nanohost-plugin-streaming", "streaming");
    let ps = prompts(3, 120, 2);
    let standard = run(&m, 64, &ps, 10, &|pool| standard_policy(pool));
    let wide = run(&m, 64, &ps, 10, &|pool| {
        policy_with(&plugin, pool, &options(&[("window", 512)])).unwrap()
    });
    assert_eq!(wide.outputs, standard.outputs);
    assert_eq!(wide.evicted, (0, 0));
    // A small window evicts and (on random weights) decodes something else, within its budget.
    let small = run(&m, 64, &ps, 10, &|pool| {
        policy_with(
            &plugin,
            pool,
            &options(&[("sinks", 4), ("window", 32), ("piece", 8)]),
        )
        .unwrap()
    });
    assert_eq!(
        small.outputs.iter().map(Vec::len).collect::<Vec<_>>(),
        [10, 10, 10]
    );
    assert_eq!(small.peak_blocks, 3 * 3); // 36 slots of sinks and window in 3 blocks each
    assert_eq!(small.evicted.0, 3 * (120 + 9 - 36));
}

#[test]
fn bad_options_are_the_plugins_errors() {
    let m = tiny();
    let plugin = loaded_plugin("nanohost-plugin-streaming", "streaming");
    let pool = KvPool::new(
        m.model.config(),
        PoolSize::Blocks(100),
        16,
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let err = policy_with(&plugin, &pool, &options(&[("windw", 3)]))
        .err()
        .unwrap();
    assert!(err.contains("plugin `streaming` failed to create a strategy: unknown option `windw`; it takes: sinks, window, piece"), "{err}");
    let err = policy_with(&plugin, &pool, &options(&[("window", 0)]))
        .err()
        .unwrap();
    assert!(
        err.contains("sinks, window and piece must be at least 1"),
        "{err}"
    );
}
