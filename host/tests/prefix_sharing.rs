//! The cascade plugin's prefix sharing on the prototype's shared-prefix workload (tiny, f32):
//! the same tokens as the standard plugin, and exactly the blocks sharing predicts. Both plugins
//! are loaded from their built libraries into this one process (abi_stable's header API).

mod common;

use candle_core::{DType, Device};
use nanohost::bench::config::BenchConfig;
use nanohost::engine::kv_pool::{KvPool, PoolSize};
use nanohost::engine::scheduler::SchedulerConfig;
use nanohost::engine::sequence::SamplingParams;
use nanohost::engine::Engine;
use nanohost::model::{ModelSource, Preset};
use nanohost::plugin::{load_plugin, PluginPolicy};
use nanohost::workload;

struct Run {
    outputs: Vec<Vec<u32>>,
    peak_blocks: usize,
    reused: usize,
}

#[test]
fn shared_prefix_is_stored_once_and_changes_no_token() {
    let m = ModelSource::Preset { preset: Preset::Tiny, seed: 0 }.load(&Device::Cpu, DType::F32).unwrap();
    let cfg = BenchConfig { batch_sizes: vec![4], ..BenchConfig::default() };
    let tok = nanohost::model::tokenizer::byte_level_tokenizer().unwrap();
    let points = workload::by_name("shared-prefix").unwrap().points(&cfg, 10_240, &tok).unwrap();
    let point = points.iter().find(|p| p.extra["shared_prefix_len"] == 200).unwrap();
    let max_tokens = 8;
    let standard_lib = load_plugin(&common::standard_plugin()).unwrap();
    let cascade_lib = load_plugin(&common::built_plugin("nanohost-plugin-cascade", "cascade")).unwrap();
    let run = |make: &dyn Fn(&KvPool) -> Box<PluginPolicy>| {
        let pool = KvPool::new(m.model.config(), PoolSize::Blocks(128), 16, DType::F32, &Device::Cpu).unwrap();
        let mut engine = Engine::new(&m.model, &pool, make(&pool), SchedulerConfig::default(), 42);
        for p in &point.prompts {
            engine.add_request(p.tokens.clone(), SamplingParams { temperature: 0.0, max_tokens, ignore_eos: true }).unwrap();
        }
        let done = engine.run_to_completion().unwrap();
        Run {
            outputs: done.iter().map(|s| s.output().to_vec()).collect(),
            peak_blocks: engine.peak_blocks,
            reused: done.iter().map(|s| s.cached_at_admission).sum(),
        }
    };
    let standard = run(&|pool| Box::new(standard_lib.new_policy(pool).unwrap()));
    let cascade = run(&|pool| Box::new(cascade_lib.new_policy(pool).unwrap()));
    assert_eq!((standard_lib.info.name.as_str(), cascade_lib.info.name.as_str()), ("standard", "cascade"));
    assert_eq!(cascade.outputs, standard.outputs, "prefix sharing changed greedy tokens");

    // All four live at the last step, each holding prompt + 7 decoded tokens. Standard: one
    // private run each. Sharing: the 12 full blocks of the 200-token prefix (192 tokens) once;
    // block 12 mixes prefix and suffix tokens, so it is not shared.
    let n = point.prompts.len();
    let standard_blocks: usize = point.prompts.iter().map(|p| (p.tokens.len() + max_tokens - 1).div_ceil(16)).sum();
    assert_eq!(standard.peak_blocks, standard_blocks);
    assert_eq!(cascade.peak_blocks, standard_blocks - 12 * (n - 1));
    assert_eq!(standard.reused, 0);
    assert_eq!(cascade.reused, 192 * (n - 1), "every sequence after the first reuses the 12 prefix blocks");
}
