//! Reading and checking Qwen3 weights from safetensors, single file or sharded.
//!
//! Every tensor the model needs is listed by [`expected_tensors`] from the config, so a missing
//! tensor, a wrong shape or an unsupported dtype is reported with its name and file before any
//! computation starts.

use super::config::Qwen3Config;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use safetensors::{Dtype as StDtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

pub const SINGLE_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// Names and shapes of every tensor the model reads, in file order.
pub fn expected_tensors(cfg: &Qwen3Config) -> Vec<(String, Vec<usize>)> {
    let (h, i, hd) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim);
    let (q, kv) = (cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd);
    let mut out = vec![(
        "model.embed_tokens.weight".to_string(),
        vec![cfg.vocab_size, h],
    )];
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        out.extend([
            (format!("{p}.input_layernorm.weight"), vec![h]),
            (format!("{p}.self_attn.q_proj.weight"), vec![q, h]),
            (format!("{p}.self_attn.k_proj.weight"), vec![kv, h]),
            (format!("{p}.self_attn.v_proj.weight"), vec![kv, h]),
            (format!("{p}.self_attn.o_proj.weight"), vec![h, q]),
            (format!("{p}.self_attn.q_norm.weight"), vec![hd]),
            (format!("{p}.self_attn.k_norm.weight"), vec![hd]),
            (format!("{p}.post_attention_layernorm.weight"), vec![h]),
            (format!("{p}.mlp.gate_proj.weight"), vec![i, h]),
            (format!("{p}.mlp.up_proj.weight"), vec![i, h]),
            (format!("{p}.mlp.down_proj.weight"), vec![h, i]),
        ]);
    }
    out.push(("model.norm.weight".to_string(), vec![h]));
    if !cfg.tie_word_embeddings {
        out.push(("lm_head.weight".to_string(), vec![cfg.vocab_size, h]));
    }
    out
}

/// Which file holds which tensor.
fn tensor_files(dir: &Path) -> Result<(Vec<PathBuf>, HashMap<String, PathBuf>)> {
    let index = dir.join(INDEX_FILE);
    if index.is_file() {
        #[derive(serde::Deserialize)]
        struct Index {
            weight_map: BTreeMap<String, String>,
        }
        let text = std::fs::read_to_string(&index)
            .with_context(|| format!("cannot read {}", index.display()))?;
        let idx: Index = serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "{} is malformed (expected {{\"weight_map\": {{name: file}}}}): {e}",
                index.display()
            )
        })?;
        let map: HashMap<String, PathBuf> = idx
            .weight_map
            .into_iter()
            .map(|(k, f)| (k, dir.join(f)))
            .collect();
        let mut files: Vec<PathBuf> = map.values().cloned().collect();
        files.sort();
        files.dedup();
        return Ok((files, map));
    }
    let single = dir.join(SINGLE_FILE);
    if single.is_file() {
        return Ok((vec![single], HashMap::new()));
    }
    bail!(
        "no weights in {}: expected {SINGLE_FILE} or {INDEX_FILE} with its shards (make a model with `nanohost init-model --preset tiny --out DIR`)",
        dir.display()
    )
}

fn candle_dtype(d: StDtype) -> Option<DType> {
    match d {
        StDtype::F32 => Some(DType::F32),
        StDtype::BF16 => Some(DType::BF16),
        StDtype::F16 => Some(DType::F16),
        _ => None,
    }
}

/// Loads every expected tensor from `dir`, converted to `dtype` on `device`.
pub fn load_weights(
    dir: &Path,
    cfg: &Qwen3Config,
    device: &Device,
    dtype: DType,
) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    visit_checked(dir, cfg, |name, shape, view, src| {
        let t = Tensor::from_raw_buffer(view.data(), src, shape, &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(device)?;
        out.insert(name.to_string(), t);
        Ok(())
    })?;
    Ok(out)
}

/// Checks that `dir` holds every expected tensor, readable, of its shape and a supported dtype,
/// without loading any: the parent's preflight, before a worker starts.
pub fn check_weights(dir: &Path, cfg: &Qwen3Config) -> Result<()> {
    visit_checked(dir, cfg, |_, _, _, _| Ok(()))
}

/// Calls `f` with each expected tensor's view once its file parses and its name, shape and
/// dtype are what `cfg` says; the first problem is an error naming the tensor and the file.
fn visit_checked(
    dir: &Path,
    cfg: &Qwen3Config,
    mut f: impl FnMut(&str, &[usize], &safetensors::tensor::TensorView<'_>, DType) -> Result<()>,
) -> Result<()> {
    let (files, index) = tensor_files(dir)?;
    let mut maps = Vec::new();
    for f in &files {
        let file = std::fs::File::open(f)
            .with_context(|| format!("weights file {} is missing or unreadable", f.display()))?;
        // SAFETY: read-only map of a file we do not modify; a concurrent writer is outside our contract.
        let mmap = unsafe { memmap2::Mmap::map(&file) }
            .with_context(|| format!("cannot map {}", f.display()))?;
        SafeTensors::deserialize(&mmap).map_err(|e| {
            anyhow::anyhow!("weights file {} is corrupt or truncated: {e}", f.display())
        })?;
        maps.push(mmap);
    }
    let parsed: Vec<SafeTensors> = maps
        .iter()
        .map(|m| SafeTensors::deserialize(m).expect("checked above"))
        .collect();
    for (name, shape) in expected_tensors(cfg) {
        let file_idx = match index.get(&name) {
            Some(f) => files.iter().position(|x| x == f).expect("indexed file"),
            None if index.is_empty() => 0,
            None => bail!(
                "tensor {name} is missing from {} (expected shape {shape:?})",
                dir.join(INDEX_FILE).display()
            ),
        };
        let view = parsed[file_idx].tensor(&name).map_err(|_| {
            anyhow::anyhow!(
                "tensor {name} is missing from {} (expected shape {shape:?})",
                files[file_idx].display()
            )
        })?;
        if view.shape() != shape.as_slice() {
            bail!(
                "tensor {name} in {} has shape {:?}, expected {shape:?} from config.json",
                files[file_idx].display(),
                view.shape()
            );
        }
        let Some(src) = candle_dtype(view.dtype()) else {
            bail!(
                "tensor {name} in {} is {:?}; supported on disk: bf16, f16, f32",
                files[file_idx].display(),
                view.dtype()
            );
        };
        f(&name, &shape, &view, src)?;
    }
    Ok(())
}
