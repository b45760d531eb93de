//! Where a model comes from: a repo id found in a Hugging Face hub cache, through the real binary.

mod common;

use common::{config_file, nanohost, read_json, s, standard_plugin, tiny_dir};

/// A hub cache as huggingface_hub lays it out: files in `blobs/` named by content, linked from
/// `snapshots/<commit>/`, and `refs/main` naming the commit.
fn hub_cache(root: &std::path::Path, repo: &str) -> std::path::PathBuf {
    let (_t, model) = tiny_dir();
    let repo_dir = root
        .join("hub")
        .join(format!("models--{}", repo.replace('/', "--")));
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let snapshot = repo_dir.join("snapshots").join(commit);
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo_dir.join("blobs")).unwrap();
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        let blob = repo_dir
            .join("blobs")
            .join(nanohost::plugin::load::sha256_file(&model.join(f)).unwrap());
        std::fs::copy(model.join(f), &blob).unwrap();
        std::os::unix::fs::symlink(&blob, snapshot.join(f)).unwrap();
    }
    std::fs::write(repo_dir.join("refs/main"), commit).unwrap();
    snapshot
}

#[test]
fn a_repo_id_loads_from_the_hub_cache_and_a_missing_one_says_where_it_looked() {
    let tmp = tempfile::tempdir().unwrap();
    let snapshot = hub_cache(tmp.path(), "Qwen/Qwen3-0.6B");
    let cfg = config_file(
        tmp.path(),
        r#"{"workloads": ["standard"], "batch_sizes": [1], "max_input_len": 120, "max_output_len": 3, "warmup_tokens": 0, "fidelity": false}"#,
    );
    let standard = standard_plugin();
    let run = |model: &str, out: &str| {
        let out = tmp.path().join(out);
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_nanohost"))
            .args([
                "run",
                "--model",
                model,
                "--plugin",
                s(&standard),
                "--config",
                s(&cfg),
                "--out",
                s(&out),
            ])
            .env("HF_HOME", tmp.path())
            .env_remove("HF_HUB_CACHE")
            .output()
            .unwrap();
        (o, out)
    };
    let (o, out) = run("Qwen/Qwen3-0.6B", "found");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let results = read_json(&out.join("results_standard.json"));
    assert_eq!(results[0]["model"], s(&snapshot));
    let (o, out) = run("Qwen/Qwen3-8B", "missing");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("model Qwen/Qwen3-8B is not in the Hugging Face cache, nor a directory here")
            && err.contains("models--Qwen--Qwen3-8B/snapshots/<hash>/config.json")
            && err.contains("refs/main"),
        "{err}"
    );
    assert!(!out.exists());
    // A directory that does not exist is still a directory, named as such.
    let o = nanohost(&[
        "run",
        "--model",
        "./no/such/model",
        "--plugin",
        s(&standard),
        "--config",
        s(&cfg),
    ]);
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("model directory ./no/such/model does not exist"));
}
