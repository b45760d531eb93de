//! `trace:FILE` workloads: the shipped ShareGPT sample at a Poisson request rate, a JSONL trace
//! with token ids and its own arrival times, and bad traces named; through the real binary.

mod common;

use common::{config_file, nanohost, read_json, s, standard_plugin};
use nanohost::bench::config::BenchConfig;

const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/data/sample-trace.sharegpt.json"
);

#[test]
fn the_sharegpt_sample_runs_at_a_request_rate_with_vllm_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config_file(
        tmp.path(),
        r#"{"fidelity": false, "warmup_tokens": 0, "seed": 3}"#,
    );
    let out = tmp.path().join("out");
    let workload = format!("trace:{SAMPLE}");
    let standard = standard_plugin();
    let run = nanohost(&[
        "run",
        "--plugin",
        s(&standard),
        "--config",
        s(&cfg),
        "--workload",
        &workload,
        "--request-rate",
        "4",
        "--out",
        s(&out),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    // The same requests and arrivals, drawn by the library from the same settings.
    let mut c = BenchConfig::from_json(r#"{"seed": 3, "request_rate": 4}"#).unwrap();
    c.workloads = vec![workload.clone()];
    let tok = nanohost::model::tokenizer::byte_level_tokenizer().unwrap();
    let points = nanohost::workload::by_name(&workload)
        .unwrap()
        .points(&c, 10240, &tok)
        .unwrap();
    let prompts = &points[0].prompts;
    assert_eq!(prompts.len(), 16);
    let last = prompts.iter().filter_map(|p| p.arrival).fold(0.0, f64::max);
    assert!(
        (1.0..16.0).contains(&last),
        "16 requests at 4/s arrive over about 4 s, not {last}"
    );
    let r = &read_json(&out.join("results_standard.json"))[0];
    assert_eq!(r["workload"], "trace:sample-trace.sharegpt.json");
    assert_eq!(r["num_sequences"], 16);
    let output: usize = prompts.iter().map(|p| p.max_tokens.unwrap()).sum();
    assert_eq!(
        r["total_output_tokens"], output,
        "each reply's token count is its output length"
    );
    assert!(
        r["time_seconds"].as_f64().unwrap() >= last,
        "the run waits for the last arrival"
    );
    let rate = r["request_throughput"].as_f64().unwrap();
    assert!((rate - 16.0 / r["time_seconds"].as_f64().unwrap()).abs() < 1e-9);
    for m in ["ttft", "tpot", "itl", "e2el"] {
        let (mean, median, p99) = (
            r[format!("mean_{m}_ms")].as_f64().unwrap(),
            r[format!("median_{m}_ms")].as_f64().unwrap(),
            r[format!("p99_{m}_ms")].as_f64().unwrap(),
        );
        assert!(
            mean > 0.0 && median > 0.0 && p99 >= median,
            "{m}: {mean} {median} {p99}"
        );
    }
    assert!(r["median_e2el_ms"].as_f64().unwrap() > r["median_ttft_ms"].as_f64().unwrap());
}

#[test]
fn a_jsonl_trace_keeps_its_arrivals_and_bad_traces_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let trace = tmp.path().join("t.jsonl");
    std::fs::write(
        &trace,
        "{\"prompt_token_ids\": [5, 6, 7, 8], \"max_tokens\": 3}\n\n{\"prompt\": \"hello there\", \"output_len\": 2, \"arrival_time\": 0.5}\n",
    )
    .unwrap();
    let mut c = BenchConfig::from_json("{}").unwrap();
    let tok = nanohost::model::tokenizer::byte_level_tokenizer().unwrap();
    let name = format!("trace:{}", trace.display());
    let points = nanohost::workload::by_name(&name)
        .unwrap()
        .points(&c, 10240, &tok)
        .unwrap();
    let p = &points[0].prompts;
    assert_eq!(
        (p[0].tokens.clone(), p[0].max_tokens, p[0].arrival),
        (vec![5, 6, 7, 8], Some(3), None)
    );
    assert_eq!((p[1].max_tokens, p[1].arrival), (Some(2), Some(0.5)));
    // Absolute times (as logs hold them) count from the first request; a trace longer than the
    // run's timeout is refused, not waited on.
    std::fs::write(
        &trace,
        "{\"prompt\": \"a\", \"arrival_time\": 1000}\n{\"prompt\": \"b\", \"arrival_time\": 1000.5}\n",
    )
    .unwrap();
    let points = nanohost::workload::by_name(&name)
        .unwrap()
        .points(&c, 10240, &tok)
        .unwrap();
    let at: Vec<Option<f64>> = points[0].prompts.iter().map(|p| p.arrival).collect();
    assert_eq!(at, [Some(0.0), Some(0.5)]);
    c.timeout_seconds = 10;
    std::fs::write(
        &trace,
        "{\"prompt\": \"a\"}\n{\"prompt\": \"b\", \"arrival_time\": 20}\n",
    )
    .unwrap();
    let err = nanohost::workload::by_name(&name)
        .unwrap()
        .points(&c, 10240, &tok)
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("arrives 20 s after the first, past timeout_seconds (10)"),
        "{err}"
    );
    c.timeout_seconds = 1800;
    c.request_rate = Some(nanohost::bench::config::RequestRate::Inf);
    let points = nanohost::workload::by_name(&name)
        .unwrap()
        .points(&c, 10240, &tok)
        .unwrap();
    assert_eq!(points[0].prompts[1].arrival, None, "inf: all at once");
    for (text, why) in [
        (
            "{\"prompt\": \"a\", \"prompt_token_ids\": [1]}\n",
            "line 1: give exactly one of",
        ),
        (
            "{\"prompt_token_ids\": [99999]}\n",
            "token id 99999 is outside",
        ),
        (
            "{\"prompt\": \"a\", \"arrival\": 1}\n",
            "unknown field `arrival`",
        ),
        (
            "{\"prompt\": \"a\", \"max_tokens\": 0}\n",
            "max_tokens must be at least 1",
        ),
        ("plain text\n", "neither JSONL"),
        ("[{\"x\": 1}]", "not ShareGPT JSON"),
    ] {
        std::fs::write(&trace, text).unwrap();
        let err = nanohost::workload::by_name(&name)
            .unwrap()
            .points(&c, 10240, &tok)
            .err()
            .unwrap();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("t.jsonl") && msg.contains(why),
            "{text}: {msg}"
        );
    }
    let o = nanohost(&[
        "run",
        "--workload",
        "trace:/no/such/trace.jsonl",
        "--request-rate",
        "0",
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("requests per second (> 0) or inf, got 0"));
}
