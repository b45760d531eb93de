//! The radix plugin on the tiny model: the standard strategy's tokens on every seed workload,
//! the whole shared prefix reused token by token (not only its full blocks), and a conversation
//! reusing every earlier turn, replies included, by sharing or by copying the partial block.

mod common;

use candle_core::{DType, Device};
use common::{loaded_plugin, policy_with, standard_policy};
use nanohost::bench::config::BenchConfig;
use nanohost::bench::waves::run_waves;
use nanohost::engine::kv_pool::{KvPool, PoolSize};
use nanohost::engine::scheduler::SchedulerConfig;
use nanohost::engine::sequence::{SamplingParams, Sequence};
use nanohost::engine::Engine;
use nanohost::model::{LoadedModel, ModelSource, Preset};
use nanohost::plugin::PluginPolicy;
use nanohost::workload::{self, Point};
use nanohost_strategy_api::{OptionValue, PluginOption};

fn tiny() -> LoadedModel {
    ModelSource::Preset {
        preset: Preset::Tiny,
        seed: 0,
    }
    .load(&Device::Cpu, DType::F32)
    .unwrap()
}

fn points(name: &str, batch: usize) -> Vec<Point> {
    let cfg = BenchConfig {
        batch_sizes: vec![batch],
        max_output_len: 8,
        ..BenchConfig::default()
    };
    let tok = nanohost::model::tokenizer::byte_level_tokenizer().unwrap();
    workload::by_name(name)
        .unwrap()
        .points(&cfg, 10_240, &tok)
        .unwrap()
}

fn run(
    m: &LoadedModel,
    point: &Point,
    make: &dyn Fn(&KvPool) -> Box<PluginPolicy>,
) -> (Vec<Sequence>, Vec<(String, u64)>) {
    let pool = KvPool::new(
        m.model.config(),
        PoolSize::Blocks(512),
        16,
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let mut engine = Engine::new(&m.model, &pool, make(&pool), SchedulerConfig::default(), 42);
    let params = SamplingParams {
        temperature: 0.0,
        max_tokens: 8,
        ignore_eos: true,
    };
    let done = run_waves(&mut engine, &point.prompts, params, |_, _, _| Ok(())).unwrap();
    let counters = engine.policy().counters().unwrap();
    (done, counters)
}

fn outputs(seqs: &[Sequence]) -> Vec<Vec<u32>> {
    seqs.iter().map(|s| s.output().to_vec()).collect()
}

fn radix<'a>(
    plugin: &'a nanohost::plugin::Plugin,
    partial: &'a str,
) -> impl Fn(&KvPool) -> Box<PluginPolicy> + 'a {
    move |pool| {
        policy_with(
            plugin,
            pool,
            &[PluginOption {
                key: "partial".into(),
                value: OptionValue::Text(partial.into()),
            }],
        )
        .unwrap()
    }
}

#[test]
fn radix_decodes_the_standard_tokens_on_every_seed_workload() {
    let m = tiny();
    let plugin = loaded_plugin("nanohost-plugin-radix", "radix");
    for name in [
        "standard",
        "shared-prefix",
        "chunked",
        "chunked-reuse",
        "conversation",
    ] {
        for point in points(name, 3) {
            let (standard, _) = run(&m, &point, &|pool| standard_policy(pool));
            let (cached, _) = run(&m, &point, &radix(&plugin, "share"));
            assert_eq!(
                outputs(&cached),
                outputs(&standard),
                "{name} {:?}",
                point.extra
            );
        }
    }
}

#[test]
fn a_shared_prefix_is_reused_to_its_last_token() {
    let m = tiny();
    let plugin = loaded_plugin("nanohost-plugin-radix", "radix");
    for point in points("shared-prefix", 4) {
        let prefix = point.extra["shared_prefix_len"].as_u64().unwrap() as usize;
        let (seqs, counters) = run(&m, &point, &radix(&plugin, "share"));
        // The first request computes the prefix; the other three reuse all of it, 50 of 50
        // included (3 full blocks and 2 tokens of the fourth), whatever their suffixes share.
        assert_eq!(seqs[0].cached_at_admission, 0);
        for s in &seqs[1..] {
            assert!(
                s.cached_at_admission >= prefix,
                "prefix {prefix}: sequence {} reused {}",
                s.id,
                s.cached_at_admission
            );
        }
        let hits = counters
            .iter()
            .find(|(k, _)| k == "cache_hit_tokens")
            .unwrap()
            .1;
        assert_eq!(
            hits as usize,
            seqs.iter().map(|s| s.cached_at_admission).sum::<usize>()
        );
    }
}

#[test]
fn a_conversation_reuses_every_earlier_turn_replies_included() {
    let m = tiny();
    let plugin = loaded_plugin("nanohost-plugin-radix", "radix");
    let point = &points("conversation", 2)[0];
    let (standard, _) = run(&m, point, &|pool| standard_policy(pool));
    for partial in ["share", "copy"] {
        let (seqs, counters) = run(&m, point, &radix(&plugin, partial));
        assert_eq!(outputs(&seqs), outputs(&standard), "partial={partial}");
        for (i, p) in point.prompts.iter().enumerate() {
            let Some(j) = p.continues else { continue };
            // Everything but the earlier turn's last token, which never went through the model.
            let history = seqs[j].len();
            assert!(
                seqs[i].cached_at_admission >= history - 1,
                "partial={partial}: turn {i} reused {} of a {history}-token history",
                seqs[i].cached_at_admission
            );
        }
        let copied = counters
            .iter()
            .find(|(k, _)| k == "cache_copied_tokens")
            .unwrap()
            .1;
        assert_eq!(
            copied > 0,
            partial == "copy",
            "partial={partial}: {copied} tokens copied"
        );
    }
}
