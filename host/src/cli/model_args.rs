//! Options every command that loads a model shares.

use crate::model::{LoadedModel, ModelSource};
use anyhow::Result;
use candle_core::{DType, Device};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Clone, Debug)]
pub struct ModelArgs {
    /// Hugging Face Qwen3 directory (config.json, model.safetensors[.index.json], tokenizer.json).
    /// Default: ~/huggingface/Qwen3-0.6B/ if present, else the embedded `tiny` preset.
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Use a generated preset instead of a directory: tiny | qwen3-0.6b.
    #[arg(long, value_name = "NAME")]
    pub preset: Option<String>,
    /// Seed of the preset's weights.
    #[arg(long, default_value_t = 0)]
    pub model_seed: u64,
}

impl ModelArgs {
    pub fn source(&self) -> Result<ModelSource> {
        ModelSource::resolve(self.model.clone(), self.preset.as_deref(), self.model_seed)
    }

    /// CPU computes in f32.
    pub fn load(&self) -> Result<(LoadedModel, Device)> {
        let device = Device::Cpu;
        let source = self.source()?;
        let loaded = source.load(&device, DType::F32)?;
        tracing::info!(model = %loaded.name, device = "cpu", "model loaded");
        Ok((loaded, device))
    }
}
