//! The chunked strategies on the tiny model (f32), both loaded from their built libraries next to
//! the standard plugin: exact placements change no token, hit and chunk counts follow from the
//! prompts, eviction under a small pool never touches a chunk in use and changes no output.

mod common;

use candle_core::{DType, Device};
use nanohost::bench::waves::run_waves;
use nanohost::engine::kv_pool::{KvPool, PoolSize};
use nanohost::engine::scheduler::SchedulerConfig;
use nanohost::engine::sequence::SamplingParams;
use nanohost::engine::Engine;
use nanohost::model::{LoadedModel, ModelSource, Preset};
use nanohost::plugin::{load_plugin, Plugin};
use nanohost::workload::chunks::{compose, ChunkText};
use nanohost::workload::Prompt;
use std::collections::HashMap;

struct Run {
    outputs: Vec<Vec<u32>>,
    counters: HashMap<String, u64>,
    first_logits: Vec<Vec<f32>>,
}

fn model() -> LoadedModel {
    ModelSource::Preset {
        preset: Preset::Tiny,
        seed: 0,
    }
    .load(&Device::Cpu, DType::F32)
    .unwrap()
}

/// Greedy, 6 tokens each, wave by wave on one strategy instance.
fn run(m: &LoadedModel, plugin: &Plugin, prompts: &[Prompt], blocks: usize) -> Run {
    let pool = KvPool::new(
        m.model.config(),
        PoolSize::Blocks(blocks),
        16,
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let mut engine = Engine::new(
        &m.model,
        &pool,
        Box::new(plugin.new_policy(&pool, &[]).unwrap()),
        SchedulerConfig::default(),
        1,
    );
    engine.logits = Some(Vec::new());
    let params = SamplingParams {
        temperature: 0.0,
        max_tokens: 6,
        ignore_eos: true,
    };
    let done = run_waves(&mut engine, prompts, params, |_, _, _| Ok(())).unwrap();
    let logits = engine.logits.take().unwrap();
    Run {
        outputs: done.iter().map(|s| s.output().to_vec()).collect(),
        counters: engine.policy().counters().unwrap().into_iter().collect(),
        first_logits: done
            .iter()
            .map(|s| {
                logits
                    .iter()
                    .find(|(id, i, _)| *id == s.id && *i == 0)
                    .unwrap()
                    .2
                    .clone()
            })
            .collect(),
    }
}

fn prompt(sys: &str, contexts: &[&str], query: &str, wave: usize) -> Prompt {
    let tok = nanohost::model::tokenizer::byte_level_tokenizer().unwrap();
    let mut chunks = vec![ChunkText::system(sys)];
    chunks.extend(contexts.iter().map(|c| ChunkText::context(*c)));
    chunks.push(ChunkText::query(query));
    compose(&chunks, &tok, wave).unwrap()
}

const S: &str = "You are a helpful AI assistant. Answer questions accurately and concisely.";
const A: &str = "Context A: The Earth is the third planet from the Sun and the only known planet to harbor life.";
const B: &str = "Context B: Python is a high-level programming language known for its simplicity and readability.";

#[test]
fn chunks_where_full_prefill_puts_them_change_no_token() {
    let m = model();
    let standard = load_plugin(&common::standard_plugin()).unwrap();
    let chunked = load_plugin(&common::built_plugin("nanohost-plugin-chunked", "chunked")).unwrap();
    // At most one context, always right after the same system prompt: every hit is exact.
    let prompts = [
        prompt(S, &[A], "Question 0: why is the sky blue", 0),
        prompt(S, &[A], "Question 1: what is a planet", 0),
        prompt(S, &[], "Question 2: hello there", 0),
        prompt(S, &[A], "Question 3: name a language", 0),
    ];
    let want = run(&m, &standard, &prompts, 64);
    let got = run(&m, &chunked, &prompts, 64);
    assert_eq!(
        got.outputs, want.outputs,
        "exact chunk hits changed greedy tokens"
    );
    let worst = got
        .first_logits
        .iter()
        .zip(&want.first_logits)
        .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
        .fold(0f32, f32::max);
    assert!(worst < 1e-4, "first-position logits differ by {worst}");
    // S is computed once and hit 3 times, A computed once and hit twice; all exact.
    let c = &got.counters;
    assert_eq!(
        (
            c["chunk_misses"],
            c["chunk_hits"],
            c["exact_chunk_hits"],
            c["approximate_chunk_hits"]
        ),
        (2, 5, 5, 0)
    );
    let s_len = prompts[0].chunks[0].len as u64;
    let a_len = prompts[0].chunks[1].len as u64;
    assert_eq!(c["chunk_hit_tokens"], 3 * s_len + 2 * a_len);
    assert!(
        want.counters.is_empty(),
        "the standard plugin keeps no chunk counters"
    );
}

#[test]
fn a_chunk_placed_elsewhere_is_an_approximate_hit_attended_re_rotated() {
    let m = model();
    let chunked = load_plugin(&common::built_plugin("nanohost-plugin-chunked", "chunked")).unwrap();
    let standard = load_plugin(&common::standard_plugin()).unwrap();
    // A is computed right after S by the first request, then sits after B in the second: its
    // keys are re-rotated by B's length, and it did not attend to B.
    let prompts = [
        prompt(S, &[A], "Question 0: first", 0),
        prompt(S, &[B, A], "Question 1: second", 0),
    ];
    let got = run(&m, &chunked, &prompts, 64);
    let c = &got.counters;
    assert_eq!(
        (
            c["chunk_misses"],
            c["chunk_hits"],
            c["exact_chunk_hits"],
            c["approximate_chunk_hits"]
        ),
        (3, 2, 1, 1)
    );
    let want = run(&m, &standard, &prompts, 64);
    assert_eq!(
        got.outputs[0], want.outputs[0],
        "the first request's chunks were all exact"
    );
    assert_eq!(got.outputs[1].len(), 6);
}

#[test]
fn hits_follow_from_the_workload_and_eviction_spares_chunks_in_use() {
    let m = model();
    let reuse = load_plugin(&common::built_plugin(
        "nanohost-plugin-chunked-reuse",
        "chunked_reuse",
    ))
    .unwrap();
    let standard = load_plugin(&common::standard_plugin()).unwrap();
    // 3 waves x 3 requests, all [S, X_w, query]: the system prompt is shared by every wave, the
    // context X_w by the three requests of wave w only. Every chunk sits where full prefill puts
    // it, so recomputing an evicted one reproduces it exactly.
    let docs = [A, B, "Context C: Machine learning is a subset of artificial intelligence that enables systems to learn from data."];
    let prompts: Vec<Prompt> = (0..3)
        .flat_map(|w| (0..3).map(move |i| (w, i)))
        .map(|(w, i)| prompt(S, &[docs[w]], &format!("Wave {w} query {i}"), w))
        .collect();
    let roomy = run(&m, &reuse, &prompts, 256);
    // S computed once, hit 8 times; each X_w computed once, hit twice; nothing evicted.
    let c = &roomy.counters;
    assert_eq!(
        (c["chunk_misses"], c["chunk_hits"], c["chunk_evictions"]),
        (4, 14, 0)
    );
    // A pool that holds one wave and not much more: the previous wave's context must go.
    let blocks = |n: u32| (n as usize).div_ceil(16);
    let wave0 = &prompts[..3];
    let need_one = blocks(wave0[0].chunks[0].len)
        + blocks(wave0[0].chunks[1].len)
        + wave0
            .iter()
            .map(|p| blocks(p.chunks[2].len + 6))
            .sum::<usize>();
    let tight = run(&m, &reuse, &prompts, need_one);
    assert!(
        tight.counters["chunk_evictions"] >= 2,
        "the small pool forces evictions: {:?}",
        tight.counters
    );
    assert_eq!(
        tight.outputs, roomy.outputs,
        "evicting (and recomputing in place) changed an output"
    );
    assert_eq!(
        run(&m, &standard, &prompts, 256).outputs,
        roomy.outputs,
        "every chunk here is exact"
    );
}

#[test]
fn chunks_must_tile_the_prompt() {
    let m = model();
    let pool = KvPool::new(
        m.model.config(),
        PoolSize::Blocks(8),
        16,
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let standard = load_plugin(&common::standard_plugin()).unwrap();
    let mut engine = Engine::new(
        &m.model,
        &pool,
        Box::new(standard.new_policy(&pool, &[]).unwrap()),
        SchedulerConfig::default(),
        1,
    );
    let mut p = prompt(S, &[A], "Q", 0);
    p.chunks[1].start += 1;
    let err = engine
        .add_chunked_request(
            p.tokens.clone(),
            p.chunks.clone(),
            SamplingParams::default(),
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("does not continue the chunks before it"),
        "{err}"
    );
}
