//! Every way a model directory can be broken gets a message naming the file or tensor.

mod common;

use candle_core::{DType, Device, Tensor};
use common::tiny_dir;
use nanohost::model::ModelSource;
use std::path::Path;
use std::process::Command;

fn load_err(dir: &Path) -> String {
    match ModelSource::Dir(dir.to_path_buf()).load(&Device::Cpu, DType::F32) {
        Ok(_) => panic!("{} loaded although it is broken", dir.display()),
        Err(e) => format!("{e:#}"),
    }
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, v.to_string()).unwrap();
}

fn edit_tensors(dir: &Path, edit: impl FnOnce(&mut std::collections::HashMap<String, Tensor>)) {
    let path = dir.join("model.safetensors");
    let mut t = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    edit(&mut t);
    candle_core::safetensors::save(&t, &path).unwrap();
}

fn assert_contains(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "message lacks \"{p}\": {msg}");
    }
}

#[test]
fn missing_files() {
    let (_t, dir) = tiny_dir();
    assert_contains(
        &load_err(&dir.join("nope")),
        &["model directory", "does not exist"],
    );
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    assert_contains(&load_err(&dir), &["tokenizer.json", "missing"]);
    let (_t, dir) = tiny_dir();
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    assert_contains(
        &load_err(&dir),
        &[
            "no weights in",
            "model.safetensors",
            "model.safetensors.index.json",
        ],
    );
    let (_t, dir) = tiny_dir();
    std::fs::remove_file(dir.join("config.json")).unwrap();
    assert_contains(&load_err(&dir), &["config.json"]);
}

#[test]
fn malformed_and_foreign_configs() {
    let (_t, dir) = tiny_dir();
    std::fs::write(dir.join("config.json"), "{\"vocab_size\": 12,").unwrap();
    assert_contains(&load_err(&dir), &["config.json", "malformed"]);
    let (_t, dir) = tiny_dir();
    edit_config(&dir, |v| v["hidden_size"] = serde_json::json!("wide"));
    assert_contains(
        &load_err(&dir),
        &["config.json", "malformed", "invalid type"],
    );
    let (_t, dir) = tiny_dir();
    edit_config(&dir, |v| {
        v["architectures"] = serde_json::json!(["LlamaForCausalLM"]);
        v["model_type"] = serde_json::json!("llama");
    });
    assert_contains(&load_err(&dir), &["LlamaForCausalLM", "Qwen3 only"]);
    let (_t, dir) = tiny_dir();
    edit_config(&dir, |v| {
        v["rope_scaling"] = serde_json::json!({"rope_type": "yarn", "factor": 4.0})
    });
    assert_contains(&load_err(&dir), &["rope_scaling", "yarn"]);
}

#[test]
fn transformers_5_rope_parameters_dialect_loads() {
    let (_t, dir) = tiny_dir();
    edit_config(&dir, |v| {
        let theta = v["rope_theta"].take();
        v.as_object_mut().unwrap().remove("rope_theta");
        v["rope_parameters"] = serde_json::json!({"rope_theta": theta, "rope_type": "default"});
    });
    ModelSource::Dir(dir.clone())
        .load(&Device::Cpu, DType::F32)
        .unwrap();
    edit_config(&dir, |v| {
        v["rope_parameters"]["rope_type"] = serde_json::json!("llama3")
    });
    assert_contains(&load_err(&dir), &["rope_type", "llama3"]);
}

#[test]
fn missing_tensor_and_wrong_shape() {
    let (_t, dir) = tiny_dir();
    edit_tensors(&dir, |t| {
        t.remove("model.layers.1.mlp.up_proj.weight");
    });
    assert_contains(
        &load_err(&dir),
        &[
            "model.layers.1.mlp.up_proj.weight",
            "missing",
            "model.safetensors",
            "[256, 128]",
        ],
    );
    let (_t, dir) = tiny_dir();
    edit_tensors(&dir, |t| {
        t.insert(
            "model.layers.1.self_attn.k_proj.weight".into(),
            Tensor::zeros((32, 128), DType::F32, &Device::Cpu).unwrap(),
        );
    });
    assert_contains(
        &load_err(&dir),
        &[
            "model.layers.1.self_attn.k_proj.weight",
            "[32, 128]",
            "expected [64, 128]",
        ],
    );
}

#[test]
fn untied_checkpoint_needs_lm_head() {
    let (_t, dir) = tiny_dir();
    edit_config(&dir, |v| {
        v["tie_word_embeddings"] = serde_json::json!(false)
    });
    assert_contains(&load_err(&dir), &["lm_head.weight", "missing"]);
    edit_tensors(&dir, |t| {
        let e = t["model.embed_tokens.weight"].clone();
        t.insert("lm_head.weight".into(), (e * 2.0).unwrap());
    });
    ModelSource::Dir(dir.clone())
        .load(&Device::Cpu, DType::F32)
        .unwrap();
}

#[test]
fn corrupt_and_truncated_safetensors() {
    let (_t, dir) = tiny_dir();
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    assert_contains(
        &load_err(&dir),
        &["model.safetensors", "corrupt or truncated"],
    );
    std::fs::write(&path, b"this is not a safetensors file at all").unwrap();
    assert_contains(
        &load_err(&dir),
        &["model.safetensors", "corrupt or truncated"],
    );
}

#[test]
fn sharded_checkpoint_loads_and_a_missing_shard_is_named() {
    let (_t, dir) = tiny_dir();
    let all = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let (mut a, mut b) = (
        std::collections::HashMap::new(),
        std::collections::HashMap::new(),
    );
    let mut map = serde_json::Map::new();
    for (name, t) in all {
        let file = if name.contains("layers.0.") || name.contains("embed") {
            "model-00001-of-00002.safetensors"
        } else {
            "model-00002-of-00002.safetensors"
        };
        map.insert(name.clone(), serde_json::json!(file));
        if file.starts_with("model-00001") {
            a.insert(name, t)
        } else {
            b.insert(name, t)
        };
    }
    candle_core::safetensors::save(&a, dir.join("model-00001-of-00002.safetensors")).unwrap();
    candle_core::safetensors::save(&b, dir.join("model-00002-of-00002.safetensors")).unwrap();
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::json!({"metadata": {}, "weight_map": map}).to_string(),
    )
    .unwrap();
    ModelSource::Dir(dir.clone())
        .load(&Device::Cpu, DType::F32)
        .unwrap();
    std::fs::remove_file(dir.join("model-00002-of-00002.safetensors")).unwrap();
    assert_contains(
        &load_err(&dir),
        &["model-00002-of-00002.safetensors", "missing or unreadable"],
    );
}

#[test]
fn the_binary_exits_non_zero_with_the_message() {
    let (_t, dir) = tiny_dir();
    std::fs::write(dir.join("config.json"), "not json").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nanohost"))
        .args(["generate", "--prompt", "hi", "--plugin"])
        .arg(common::standard_plugin())
        .arg("--model")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_contains(&err, &["error:", "config.json", "malformed"]);
}

#[test]
fn init_model_writes_a_loadable_deterministic_preset() {
    let tmp = tempfile::tempdir().unwrap();
    for d in ["a", "b"] {
        let st = Command::new(env!("CARGO_BIN_EXE_nanohost"))
            .args(["init-model", "--preset", "tiny", "--seed", "5", "--out"])
            .arg(tmp.path().join(d))
            .status()
            .unwrap();
        assert!(st.success());
    }
    let a = std::fs::read(tmp.path().join("a/model.safetensors")).unwrap();
    let b = std::fs::read(tmp.path().join("b/model.safetensors")).unwrap();
    assert!(a == b, "same seed, different files");
    let out = Command::new(env!("CARGO_BIN_EXE_nanohost"))
        .args([
            "generate",
            "--prompt",
            "Hello",
            "--max-tokens",
            "4",
            "--plugin",
        ])
        .arg(common::standard_plugin())
        .arg("--model")
        .arg(tmp.path().join("a"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("5 prompt tokens, 4 generated"));
}
