//! The quality workloads on the trained `tiny` model: it reads its context, and exact strategies
//! (standard, cascade, radix) answer the retrieval grid identically; streaming keeps the needles
//! inside its sinks and window and loses those outside (StreamingLLM's known result);
//! teacher-forced perplexity is the same for exact strategies and worse for evicting ones.

mod common;

use candle_core::{DType, Device};
use common::{loaded_plugin, options, policy_with, standard_policy};
use nanohost::bench::config::{BenchConfig, QualityConfig};
use nanohost::bench::quality::{score, Quality};
use nanohost::bench::waves::run_waves;
use nanohost::engine::kv_pool::{KvPool, PoolSize};
use nanohost::engine::scheduler::SchedulerConfig;
use nanohost::engine::sequence::SamplingParams;
use nanohost::engine::Engine;
use nanohost::model::{LoadedModel, ModelSource, Preset};
use nanohost::plugin::PluginPolicy;
use nanohost::workload::{self, Check, Point};

fn tiny() -> LoadedModel {
    ModelSource::Preset {
        preset: Preset::Tiny,
        seed: 0,
    }
    .load(&Device::Cpu, DType::F32)
    .unwrap()
}

fn points(workload: &str, quality: QualityConfig) -> Vec<Point> {
    let cfg = BenchConfig {
        quality,
        ..BenchConfig::default()
    };
    let tok = nanohost::model::tokenizer::byte_level_tokenizer().unwrap();
    workload::by_name(workload)
        .unwrap()
        .points(&cfg, 10_240, &tok)
        .unwrap()
}

fn grid(lengths: &[usize], samples: usize) -> QualityConfig {
    QualityConfig {
        retrieval_lengths: lengths.to_vec(),
        retrieval_samples: samples,
        ..QualityConfig::default()
    }
}

/// Runs a point greedily; each request's output and the point's score.
fn run(
    m: &LoadedModel,
    point: &Point,
    make: &dyn Fn(&KvPool) -> Box<PluginPolicy>,
) -> (Vec<Vec<u32>>, Quality) {
    let blocks = (0..point.prompts.len())
        .map(|i| nanohost::workload::Prompt::full_len(&point.prompts, i, 8).div_ceil(16))
        .sum::<usize>()
        + 8;
    let pool = KvPool::new(
        m.model.config(),
        PoolSize::Blocks(blocks),
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
    let q = score(&point.prompts, &done, &m.tokenizer).unwrap().unwrap();
    (done.iter().map(|s| s.output().to_vec()).collect(), q)
}

fn retrieval_accuracy(q: &Quality) -> f64 {
    match q {
        Quality::Retrieval { accuracy, .. } => *accuracy,
        other => panic!("not a retrieval score: {other:?}"),
    }
}

fn answered(m: &LoadedModel, check: &Option<Check>, out: &[u32]) -> bool {
    let Some(Check::Answer { answer, .. }) = check else {
        unreachable!()
    };
    m.tokenizer
        .decode(out, false)
        .unwrap()
        .starts_with(answer.as_str())
}

#[test]
fn the_model_reads_its_context_and_exact_strategies_score_identically() {
    let m = tiny();
    let cascade = loaded_plugin("nanohost-plugin-cascade", "cascade");
    let radix = loaded_plugin("nanohost-plugin-radix", "radix");
    for point in points("retrieval", grid(&[1024, 2048], 2)) {
        let (want, q) = run(&m, &point, &|pool| standard_policy(pool));
        let Quality::Retrieval { cells, total, .. } = &q else {
            unreachable!()
        };
        assert_eq!((*total, cells.len()), (22, 11), "11 depths x 2 samples");
        // Four random digits: a model that did not read the context would get 1 in 10,000. At
        // 1,024 tokens the shipped model finds every needle (issue 24 asks 99%); at 2,048 it
        // loses the earliest ones.
        assert!(retrieval_accuracy(&q) >= 0.5, "{q:?}");
        if point.extra["context_tokens"] == 1024 {
            assert!(retrieval_accuracy(&q) >= 0.99, "{q:?}");
        }
        for (name, plugin) in [("cascade", &cascade), ("radix", &radix)] {
            let (got, q2) = run(&m, &point, &|pool| policy_with(plugin, pool, &[]).unwrap());
            assert_eq!(got, want, "{name} must answer as standard does");
            assert_eq!(q2, q);
        }
    }
}

#[test]
fn streaming_loses_the_needles_outside_its_window_that_standard_finds() {
    let m = tiny();
    let streaming = loaded_plugin("nanohost-plugin-streaming", "streaming");
    let (sinks, window) = (4usize, 256usize);
    let point = &points("retrieval", grid(&[1024], 3))[0];
    let (standard, _) = run(&m, point, &|pool| standard_policy(pool));
    let (outputs, _) = run(&m, point, &|pool| {
        policy_with(
            &streaming,
            pool,
            &options(&[
                ("sinks", sinks as i64),
                ("window", window as i64),
                ("piece", 64),
            ]),
        )
        .unwrap()
    });
    // (streaming right, standard right, requests) inside and outside the window.
    let (mut inside, mut outside) = ((0, 0, 0), (0, 0, 0));
    for ((p, out), std_out) in point.prompts.iter().zip(&outputs).zip(&standard) {
        let Some(Check::Answer { answer, .. }) = &p.check else {
            unreachable!()
        };
        // Byte-level tokens: the needle record's token range is its byte range.
        let text = m.tokenizer.decode(&p.tokens, false).unwrap();
        let key = text.rsplit("? ").next().unwrap();
        let start = text.find(&format!("{key}{answer}")).unwrap();
        let end = start + key.len() + answer.len();
        let tally = |t: &mut (usize, usize, usize)| {
            *t = (
                t.0 + answered(&m, &p.check, out) as usize,
                t.1 + answered(&m, &p.check, std_out) as usize,
                t.2 + 1,
            )
        };
        // Kept at the answer: the first `sinks` tokens and the last `window`.
        let held_from = p.tokens.len() - window;
        if start >= held_from {
            tally(&mut inside);
        } else if end < held_from && start >= sinks {
            tally(&mut outside);
        }
    }
    assert!(inside.2 >= 3 && outside.2 >= 20, "{inside:?} {outside:?}");
    // Outside sinks and window the needle is gone: at most half right, where standard finds
    // most of them.
    assert!(
        outside.0 * 2 <= outside.2 && outside.1 * 10 >= outside.2 * 7,
        "outside: {outside:?}"
    );
    // Inside, streaming keeps what standard answers (give or take one request), and above 95%:
    // StreamingLLM's result, on a model that finds every needle at this length.
    assert!(inside.0 + 1 >= inside.1, "inside: {inside:?}");
    assert!(inside.0 * 100 > inside.2 * 95, "inside: {inside:?}");
}

#[test]
fn perplexity_is_teacher_forced_through_the_strategys_kv() {
    let m = tiny();
    let streaming = loaded_plugin("nanohost-plugin-streaming", "streaming");
    let radix = loaded_plugin("nanohost-plugin-radix", "radix");
    let q = QualityConfig {
        perplexity_docs: 2,
        perplexity_tokens: 384,
        ..QualityConfig::default()
    };
    let point = &points("perplexity", q)[0];
    let forced: Vec<&Vec<u32>> = point
        .prompts
        .iter()
        .map(|p| match &p.check {
            Some(Check::Forced(f)) => f,
            _ => unreachable!(),
        })
        .collect();
    let (out, standard) = run(&m, point, &|pool| standard_policy(pool));
    assert_eq!(
        out.iter().collect::<Vec<_>>(),
        forced,
        "the output is the forced text"
    );
    let Quality::Perplexity {
        tokens, perplexity, ..
    } = standard
    else {
        unreachable!()
    };
    assert_eq!(tokens, 2 * 384);
    // A model that learned some of the book's English (7.5 per byte measured): far below the
    // uniform guess over its 259 byte tokens.
    assert!((1.0..16.0).contains(&perplexity), "{perplexity}");
    let (_, r) = run(&m, point, &|pool| policy_with(&radix, pool, &[]).unwrap());
    let Quality::Perplexity {
        perplexity: radix_ppl,
        ..
    } = r
    else {
        unreachable!()
    };
    assert!(
        (radix_ppl - perplexity).abs() < 1e-4 * perplexity,
        "{radix_ppl} vs {perplexity}"
    );
    let (_, s) = run(&m, point, &|pool| {
        policy_with(
            &streaming,
            pool,
            &options(&[("sinks", 4), ("window", 32), ("piece", 16)]),
        )
        .unwrap()
    });
    let Quality::Perplexity {
        perplexity: small_window,
        ..
    } = s
    else {
        unreachable!()
    };
    assert!(
        small_window > perplexity,
        "a 36-token context must cost something: {small_window} vs {perplexity}"
    );
}
