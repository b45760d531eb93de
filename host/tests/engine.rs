//! The engine end to end on `tiny`: scheduling, preemption, sampling.

mod common;

use candle_core::{DType, Device};
use nanohost::engine::kv_pool::{KvPool, PoolSize};
use nanohost::engine::scheduler::SchedulerConfig;
use nanohost::engine::sequence::{FinishReason, SamplingParams};
use nanohost::engine::Engine;
use nanohost::model::{LoadedModel, ModelSource, Preset};

fn tiny() -> LoadedModel {
    ModelSource::Preset {
        preset: Preset::Tiny,
        seed: 0,
    }
    .load(&Device::Cpu, DType::F32)
    .unwrap()
}

fn prompts() -> Vec<Vec<u32>> {
    [40usize, 23, 57, 31]
        .iter()
        .enumerate()
        .map(|(s, &l)| {
            (0..l as u32)
                .map(|i| (i * 7919 + s as u32 * 131) % 10_000)
                .collect()
        })
        .collect()
}

struct Run {
    outputs: Vec<Vec<u32>>,
    preemptions: usize,
    peak_blocks: usize,
}

fn generate(m: &LoadedModel, blocks: usize, sched: SchedulerConfig, params: SamplingParams) -> Run {
    let pool = KvPool::new(
        m.model.config(),
        PoolSize::Blocks(blocks),
        16,
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let policy = common::standard_policy(&pool);
    let mut engine = Engine::new(&m.model, &pool, policy, sched, 42);
    for p in prompts() {
        engine.add_request(p, params).unwrap();
    }
    let done = engine.run_to_completion().unwrap();
    assert!(done
        .iter()
        .all(|s| s.finish == Some(FinishReason::MaxTokens)));
    Run {
        outputs: done.iter().map(|s| s.output().to_vec()).collect(),
        preemptions: engine.preemptions(),
        peak_blocks: engine.peak_blocks,
    }
}

const GREEDY: SamplingParams = SamplingParams {
    temperature: 0.0,
    max_tokens: 20,
    ignore_eos: true,
};

#[test]
fn preemption_by_recompute_gives_the_same_tokens() {
    let m = tiny();
    let roomy = generate(&m, 64, SchedulerConfig::default(), GREEDY);
    assert_eq!(roomy.preemptions, 0);
    assert!(roomy.outputs.iter().all(|o| o.len() == 20));
    // Prompts need 3+2+4+2 = 11 blocks; growing to 77 tokens needs 5 for the longest. 12 blocks
    // admit everyone but cannot hold them all as they grow.
    let tight = generate(&m, 12, SchedulerConfig::default(), GREEDY);
    assert!(tight.preemptions > 0, "the small pool never preempted");
    assert!(tight.peak_blocks <= 12);
    assert_eq!(roomy.outputs, tight.outputs);
}

#[test]
fn sampling_is_seeded_and_independent_of_batching() {
    let m = tiny();
    let params = SamplingParams {
        temperature: 0.6,
        max_tokens: 12,
        ignore_eos: true,
    };
    let batched = generate(&m, 64, SchedulerConfig::default(), params);
    let one_at_a_time = generate(
        &m,
        64,
        SchedulerConfig {
            max_num_seqs: 1,
            ..Default::default()
        },
        params,
    );
    assert_eq!(batched.outputs, one_at_a_time.outputs);
    let greedy = generate(
        &m,
        64,
        SchedulerConfig::default(),
        SamplingParams {
            max_tokens: 12,
            ..GREEDY
        },
    );
    assert_ne!(
        batched.outputs, greedy.outputs,
        "temperature 0.6 sampled exactly the greedy tokens"
    );
}

#[test]
fn token_budget_splits_prefill_and_peak_blocks_follow_the_workload() {
    let m = tiny();
    let pool = KvPool::new(
        m.model.config(),
        PoolSize::Blocks(64),
        16,
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let policy = common::standard_policy(&pool);
    let mut engine = Engine::new(
        &m.model,
        &pool,
        policy,
        SchedulerConfig {
            max_num_seqs: 8,
            max_num_batched_tokens: 64,
        },
        1,
    );
    for p in prompts() {
        engine
            .add_request(
                p,
                SamplingParams {
                    max_tokens: 3,
                    ..GREEDY
                },
            )
            .unwrap();
    }
    let first = engine.step().unwrap().unwrap();
    assert!(first.prefill);
    assert_eq!(
        first.tokens_computed, 63,
        "40 + 23 fit 64 tokens, 57 more would not"
    );
    let done = engine.run_to_completion().unwrap();
    assert_eq!(done.len(), 4);
    // Each sequence ends holding ceil((prompt + 2 decoded) / 16) blocks; all are live at once.
    assert_eq!(
        engine.peak_blocks,
        [42usize, 25, 59, 33]
            .iter()
            .map(|l| l.div_ceil(16))
            .sum::<usize>()
    );
}

#[test]
fn bad_requests_are_refused() {
    let m = tiny();
    let pool = KvPool::new(
        m.model.config(),
        PoolSize::Blocks(8),
        16,
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let policy = common::standard_policy(&pool);
    let mut engine = Engine::new(&m.model, &pool, policy, SchedulerConfig::default(), 0);
    assert!(
        engine.add_request(vec![], GREEDY).is_err(),
        "empty prompt accepted"
    );
    let e = engine
        .add_request(vec![99_999], GREEDY)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("99999 is outside the model's vocabulary of 10240"),
        "{e}"
    );
}

#[test]
fn eos_stops_generation_unless_ignored() {
    let (_tmp, dir) = common::tiny_dir();
    let prompt = vec![11, 12, 13];
    let run = |ignore_eos: bool| {
        let m = ModelSource::Dir(dir.clone())
            .load(&Device::Cpu, DType::F32)
            .unwrap();
        let pool = KvPool::new(
            m.model.config(),
            PoolSize::Blocks(8),
            16,
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        let policy = common::standard_policy(&pool);
        let mut engine = Engine::new(&m.model, &pool, policy, SchedulerConfig::default(), 0);
        engine
            .add_request(
                prompt.clone(),
                SamplingParams {
                    temperature: 0.0,
                    max_tokens: 30,
                    ignore_eos,
                },
            )
            .unwrap();
        engine.run_to_completion().unwrap().remove(0)
    };
    let free_run = run(true).output().to_vec();
    // Declare the first greedy token not seen before it as the model's end-of-sequence token.
    let k = (1..free_run.len())
        .find(|&k| !free_run[..k].contains(&free_run[k]))
        .unwrap();
    let path = dir.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg["eos_token_id"] = serde_json::json!(free_run[k]);
    std::fs::write(&path, cfg.to_string()).unwrap();
    let stopped = run(false);
    assert_eq!(stopped.finish, Some(FinishReason::Eos));
    assert_eq!(stopped.output(), &free_run[..=k]);
    let ignored = run(true);
    assert_eq!(ignored.finish, Some(FinishReason::MaxTokens));
    assert_eq!(ignored.output(), free_run.as_slice());
}

#[test]
fn forced_tokens_are_the_output_and_score_as_teacher_forcing_does() {
    let m = tiny();
    let prompts = prompts();
    let forced: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| p.iter().rev().take(9).map(|t| t % 256).collect())
        .collect();
    // A pool that preempts, so a recomputed sequence keeps its scores.
    let pool = KvPool::new(
        m.model.config(),
        PoolSize::Blocks(8),
        16,
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let mut engine = Engine::new(
        &m.model,
        &pool,
        common::standard_policy(&pool),
        SchedulerConfig::default(),
        42,
    );
    for (p, f) in prompts.iter().zip(&forced) {
        engine
            .add_forced_request(p.clone(), f.clone(), GREEDY)
            .unwrap();
    }
    let mut done = engine.run_to_completion().unwrap();
    done.sort_by_key(|s| s.id);
    let want =
        nanohost::bench::teacher::teacher_forced_logits(&m.model, &prompts, &forced, 16).unwrap();
    let want = candle_nn::ops::log_softmax(&want, candle_core::D::Minus1).unwrap();
    for (i, s) in done.iter().enumerate() {
        assert_eq!(s.output(), forced[i].as_slice());
        assert_eq!(s.forced_logprobs.len(), 9);
        let rows = want.get(i).unwrap().to_vec2::<f32>().unwrap();
        for (j, lp) in s.forced_logprobs.iter().enumerate() {
            let expect = rows[j][forced[i][j] as usize];
            assert!(
                (lp - expect).abs() < 1e-4,
                "sequence {i} token {j}: {lp} vs {expect}"
            );
        }
    }
}
