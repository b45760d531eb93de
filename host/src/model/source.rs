//! Where the model comes from: a Hugging Face directory, a preset, or the embedded default.

use super::config::Qwen3Config;
use super::preset::{preset_weights, Preset};
use super::qwen3::Qwen3;
use super::tokenizer::{byte_level_tokenizer, load_tokenizer};
use super::weights::load_weights;
use anyhow::{bail, Result};
use candle_core::{DType, Device};
use std::path::PathBuf;
use tokenizers::Tokenizer;

/// The prototype's default checkpoint location.
pub const DEFAULT_MODEL_DIR: &str = "~/huggingface/Qwen3-0.6B/";
/// Looked up in the Hugging Face cache when the default directory is absent.
pub const DEFAULT_REPO_ID: &str = "Qwen/Qwen3-0.6B";

#[derive(Clone, Debug, PartialEq)]
pub enum ModelSource {
    Dir(PathBuf),
    Preset { preset: Preset, seed: u64 },
}

impl ModelSource {
    /// `--model` wins (a directory, or a repo id such as `Qwen/Qwen3-0.6B` found in the Hugging
    /// Face cache), then `--preset`, then the default directory if it holds a checkpoint, then
    /// Qwen/Qwen3-0.6B in the Hugging Face cache, else the embedded `tiny` preset (said in one
    /// log line).
    pub fn resolve(model: Option<PathBuf>, preset: Option<&str>, seed: u64) -> Result<Self> {
        match (model, preset) {
            (Some(_), Some(_)) => bail!("give either --model DIR or --preset NAME, not both"),
            (Some(id), None) if super::hub_cache::looks_like_repo_id(&id) => Ok(ModelSource::Dir(
                super::hub_cache::resolve(&id.to_string_lossy())?,
            )),
            (Some(dir), None) => Ok(ModelSource::Dir(expand_home(dir))),
            (None, Some(name)) => Ok(ModelSource::Preset {
                preset: Preset::from_name(name)?,
                seed,
            }),
            (None, None) => {
                let default = expand_home(PathBuf::from(DEFAULT_MODEL_DIR));
                if default.join("config.json").is_file() {
                    Ok(ModelSource::Dir(default))
                } else if let Ok(cached) = super::hub_cache::resolve(DEFAULT_REPO_ID) {
                    Ok(ModelSource::Dir(cached))
                } else {
                    // Said once, however often a command resolves the model.
                    static SAID: std::sync::Once = std::sync::Once::new();
                    SAID.call_once(|| {
                        tracing::info!(
                            "no checkpoint at {DEFAULT_MODEL_DIR}; using the embedded `tiny` preset"
                        )
                    });
                    Ok(ModelSource::Preset {
                        preset: Preset::Tiny,
                        seed,
                    })
                }
            }
        }
    }

    /// A short name for logs and result files.
    pub fn describe(&self) -> String {
        match self {
            ModelSource::Dir(d) => d.display().to_string(),
            ModelSource::Preset {
                preset: Preset::Tiny,
                ..
            } => "preset:tiny".to_string(),
            ModelSource::Preset { preset, seed } => format!("preset:{}:seed{seed}", preset.name()),
        }
    }

    /// The model's configuration alone (no weights), for tools that need only its shapes.
    pub fn config(&self) -> Result<Qwen3Config> {
        match self {
            ModelSource::Dir(dir) => Qwen3Config::from_file(&dir.join("config.json")),
            ModelSource::Preset { preset, .. } => Ok(preset.config()),
        }
    }

    /// What a worker would load, checked without loading the weights: the directory, its
    /// config.json, tokenizer.json and every tensor's name, shape and dtype. The parent runs this
    /// before starting any worker, so a bad model is one error, not one per plugin.
    pub fn preflight(&self) -> Result<(Qwen3Config, Tokenizer)> {
        match self {
            ModelSource::Dir(dir) => {
                missing_dir(dir)?;
                let config = Qwen3Config::from_file(&dir.join("config.json"))?;
                let tokenizer = load_tokenizer(&dir.join("tokenizer.json"))?;
                super::weights::check_weights(dir, &config)?;
                Ok((config, tokenizer))
            }
            ModelSource::Preset { preset, .. } => Ok((preset.config(), byte_level_tokenizer()?)),
        }
    }

    pub fn load(&self, device: &Device, dtype: DType) -> Result<LoadedModel> {
        let (config, weights, tokenizer) = match self {
            ModelSource::Dir(dir) => {
                missing_dir(dir)?;
                let config = Qwen3Config::from_file(&dir.join("config.json"))?;
                let tokenizer = load_tokenizer(&dir.join("tokenizer.json"))?;
                let weights = load_weights(dir, &config, device, dtype)?;
                (config, weights, tokenizer)
            }
            ModelSource::Preset { preset, seed } => (
                preset.config(),
                preset_weights(*preset, *seed, device, dtype)?,
                byte_level_tokenizer()?,
            ),
        };
        let warnings = non_finite(&weights)?
            .into_iter()
            .map(|name| format!("tensor {name} of {} holds NaN or infinite values: every output of this model is meaningless", self.describe()))
            .collect();
        let model = Qwen3::new(&config, weights, device, dtype)?;
        Ok(LoadedModel {
            model,
            tokenizer,
            name: self.describe(),
            warnings,
        })
    }
}

pub struct LoadedModel {
    pub model: Qwen3,
    pub tokenizer: Tokenizer,
    pub name: String,
    /// What is wrong with the weights but does not stop a run (non-finite values).
    pub warnings: Vec<String>,
}

fn missing_dir(dir: &std::path::Path) -> Result<()> {
    if !dir.is_dir() {
        bail!(
            "model directory {} does not exist (give --model DIR or --preset tiny)",
            dir.display()
        );
    }
    Ok(())
}

/// The tensors holding a NaN or an infinity, sorted: one sum each, on the weights' device (a
/// non-finite value anywhere makes the sum non-finite; finite weights cannot overflow an f32 sum).
fn non_finite(
    weights: &std::collections::HashMap<String, candle_core::Tensor>,
) -> Result<Vec<String>> {
    let mut bad = Vec::new();
    for (name, t) in weights {
        let sum = t.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()?;
        if !sum.is_finite() {
            bad.push(name.clone());
        }
    }
    bad.sort();
    Ok(bad)
}

fn expand_home(p: PathBuf) -> PathBuf {
    match (p.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => p,
    }
}
