//! Models that need no download:
//! - `tiny`, the embedded default: a 2-layer Qwen3 trained by `nanohost train-preset` to read
//!   its context (key-value lookup, pass keys, copying) and on a public-domain book; its weights
//!   ship in the binary (`host/presets/tiny/`, f16, 3.2 MB);
//! - `qwen3-0.6b`: the published shape (596,049,920 parameters) with random weights from a
//!   seed, for speed on the GPU. Values depend only on (seed, tensor name), so the in-memory
//!   model and one written by `nanohost init-model` are the same, and any tool reading the
//!   Hugging Face layout sees the same weights as nanohost.

use super::config::Qwen3Config;
use super::tokenizer::{byte_level_tokenizer_json, ENDOFTEXT_ID, IM_END_ID};
use super::weights::{expected_tensors, SINGLE_FILE};
use crate::fsutil::{write_atomic, write_atomic_with};
use crate::rng::Rng;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use half::bf16;
use safetensors::{Dtype as StDtype, View};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    Tiny,
    Qwen3_0_6B,
}

pub const PRESET_NAMES: [&str; 2] = ["tiny", "qwen3-0.6b"];

impl Preset {
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "tiny" => Ok(Preset::Tiny),
            "qwen3-0.6b" => Ok(Preset::Qwen3_0_6B),
            other => bail!(
                "unknown preset \"{other}\"; known presets: {}",
                PRESET_NAMES.join(", ")
            ),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Preset::Tiny => "tiny",
            Preset::Qwen3_0_6B => "qwen3-0.6b",
        }
    }

    pub fn config(self) -> Qwen3Config {
        let base = Qwen3Config {
            // Above 10,000 so the prototype's random-id workload (ids 0..=10000) is valid.
            vocab_size: 10_240,
            hidden_size: 128,
            intermediate_size: 256,
            // Two layers: enough for in-context lookup (one to note each token's predecessors,
            // one to find the match), and three times cheaper to train than four on 2 cores.
            num_hidden_layers: 2,
            // GQA: two query heads per KV head, as in Qwen3-0.6B.
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: 32,
            max_position_embeddings: 8192,
            rms_norm_eps: 1e-6,
            // Qwen3's 1e6 with head_dim 128 leaves about 9 fast-turning frequency pairs for
            // telling neighbours apart; with head_dim 32 it would leave 3, so 1e4 here.
            rope_theta: 10_000.0,
            tie_word_embeddings: true,
            bos_token_id: Some(ENDOFTEXT_ID),
            eos_token_ids: vec![IM_END_ID],
        };
        match self {
            Preset::Tiny => base,
            Preset::Qwen3_0_6B => Qwen3Config {
                vocab_size: 151_936,
                hidden_size: 1024,
                intermediate_size: 3072,
                num_hidden_layers: 28,
                num_attention_heads: 16,
                num_key_value_heads: 8,
                head_dim: 128,
                max_position_embeddings: 40_960,
                rope_theta: 1_000_000.0,
                ..base
            },
        }
    }

    /// Standard deviation of the random projection weights (of `qwen3-0.6b`).
    fn init_std(self) -> f32 {
        0.02
    }
}

/// The trained `tiny` weights (see `host/presets/tiny/README.md`).
pub const TINY_WEIGHTS: &[u8] = include_bytes!("../../presets/tiny/model.safetensors");

/// The values of one tensor: norm weights near 1, everything else uniform with `std`.
fn tensor_values(seed: u64, name: &str, len: usize, std: f32) -> Vec<f32> {
    let mut rng = Rng::derive(seed, name);
    let is_norm = name.ends_with("norm.weight");
    let half_width = if is_norm { 0.1 } else { std * 3f32.sqrt() };
    (0..len)
        .map(|_| {
            let u = (rng.next_f64() as f32) * 2.0 - 1.0;
            if is_norm {
                1.0 + u * half_width
            } else {
                u * half_width
            }
        })
        .collect()
}

/// A tensor produced only when the writer asks for its bytes, so the 1.19 GB preset never sits
/// in memory whole.
struct LazyTensor {
    name: String,
    shape: Vec<usize>,
    seed: u64,
    std: f32,
    dtype: StDtype,
}

impl View for &LazyTensor {
    fn dtype(&self) -> StDtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        let v = tensor_values(self.seed, &self.name, self.shape.iter().product(), self.std);
        let bytes: Vec<u8> = match self.dtype {
            StDtype::BF16 => v
                .iter()
                .flat_map(|x| bf16::from_f32(*x).to_le_bytes())
                .collect(),
            _ => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        };
        Cow::Owned(bytes)
    }
    fn data_len(&self) -> usize {
        self.shape.iter().product::<usize>() * (self.dtype.bitsize() / 8)
    }
}

/// The preset's weights in memory, as the loader would return them from disk. `seed` picks the
/// random weights of `qwen3-0.6b`; `tiny` has one trained set.
pub fn preset_weights(
    preset: Preset,
    seed: u64,
    device: &Device,
    dtype: DType,
) -> Result<HashMap<String, Tensor>> {
    if preset == Preset::Tiny {
        let file = safetensors::SafeTensors::deserialize(TINY_WEIGHTS)
            .context("the embedded tiny weights are corrupt")?;
        return expected_tensors(&preset.config())
            .into_iter()
            .map(|(name, shape)| {
                let view = file
                    .tensor(&name)
                    .with_context(|| format!("the embedded tiny weights lack {name}"))?;
                anyhow::ensure!(
                    view.shape() == shape.as_slice() && view.dtype() == StDtype::F16,
                    "embedded tensor {name} is {:?} {:?}, expected f16 {shape:?}",
                    view.dtype(),
                    view.shape()
                );
                let t = Tensor::from_raw_buffer(view.data(), DType::F16, &shape, &Device::Cpu)?
                    .to_dtype(dtype)?
                    .to_device(device)?;
                Ok((name, t))
            })
            .collect();
    }
    let disk = DType::BF16;
    expected_tensors(&preset.config())
        .into_iter()
        .map(|(name, shape)| {
            let v = tensor_values(seed, &name, shape.iter().product(), preset.init_std());
            let t = Tensor::from_vec(v, shape, &Device::Cpu)?
                .to_dtype(disk)?
                .to_dtype(dtype)?
                .to_device(device)?;
            Ok((name, t))
        })
        .collect()
}

/// config.json, tokenizer.json and generation_config.json of a preset's directory.
fn write_model_files(cfg: &Qwen3Config, torch_dtype: &str, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let config = serde_json::to_string_pretty(&cfg.to_hf_json(torch_dtype))?;
    write_atomic(&dir.join("config.json"), config.as_bytes())?;
    write_atomic(
        &dir.join("tokenizer.json"),
        byte_level_tokenizer_json().as_bytes(),
    )?;
    let generation = serde_json::json!({"bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_ids, "do_sample": true, "temperature": 0.6});
    write_atomic(
        &dir.join("generation_config.json"),
        serde_json::to_string_pretty(&generation)?.as_bytes(),
    )
}

/// Writes trained `tiny` weights (f16 on disk) with its config and tokenizer.
pub fn write_trained(
    cfg: &Qwen3Config,
    tensors: &std::collections::BTreeMap<String, Tensor>,
    dir: &Path,
) -> Result<()> {
    write_model_files(cfg, "float16", dir)?;
    let half: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), t.to_dtype(DType::F16)?)))
        .collect::<Result<_>>()?;
    write_atomic_with(&dir.join(SINGLE_FILE), |p| {
        Ok(candle_core::safetensors::save(&half, p)?)
    })
}

/// Writes config.json, model.safetensors and tokenizer.json in the Hugging Face layout.
pub fn write_preset(preset: Preset, seed: u64, dir: &Path) -> Result<()> {
    if preset == Preset::Tiny {
        write_model_files(&preset.config(), "float16", dir)?;
        return write_atomic(&dir.join(SINGLE_FILE), TINY_WEIGHTS);
    }
    let cfg = preset.config();
    write_model_files(&cfg, "bfloat16", dir)?;
    let tensors: Vec<LazyTensor> = expected_tensors(&cfg)
        .into_iter()
        .map(|(name, shape)| LazyTensor {
            name,
            shape,
            seed,
            std: preset.init_std(),
            dtype: StDtype::BF16,
        })
        .collect();
    // One key only: safetensors keeps metadata in a HashMap, and more keys would make the
    // header order (and so the file bytes) vary between runs with the same seed.
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    write_atomic_with(&dir.join(SINGLE_FILE), |p| {
        safetensors::serialize_to_file(
            tensors.iter().map(|t| (t.name.clone(), t)),
            Some(metadata),
            p,
        )
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", p.display()))
    })
}

/// Number of parameters of a config (tied embeddings counted once).
pub fn parameter_count(cfg: &Qwen3Config) -> usize {
    expected_tensors(cfg)
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qwen3_0_6b_has_the_published_parameter_count() {
        assert_eq!(parameter_count(&Preset::Qwen3_0_6B.config()), 596_049_920);
    }

    #[test]
    fn tiny_is_real_qwen3_structure() {
        let c = Preset::Tiny.config();
        assert!(c.num_key_value_heads < c.num_attention_heads, "GQA");
        assert!(c.tie_word_embeddings);
        assert!(c.vocab_size > 10_000);
    }
}
