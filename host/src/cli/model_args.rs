//! Options every command that loads a model shares.

use crate::device::Compute;
use crate::model::{LoadedModel, ModelSource};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Clone, Debug)]
pub struct ModelArgs {
    /// Hugging Face Qwen3 directory (config.json, model.safetensors[.index.json], tokenizer.json),
    /// or a repo id (Qwen/Qwen3-0.6B) found offline in the Hugging Face cache ($HF_HUB_CACHE,
    /// $HF_HOME/hub or ~/.cache/huggingface/hub). Default: ~/huggingface/Qwen3-0.6B/, then
    /// Qwen/Qwen3-0.6B in that cache, else the embedded `tiny` preset.
    #[arg(long, value_name = "DIR|ORG/NAME")]
    pub model: Option<PathBuf>,
    /// Use a generated preset instead of a directory: tiny | qwen3-0.6b.
    #[arg(long, value_name = "NAME")]
    pub preset: Option<String>,
    /// Seed of the preset's weights.
    #[arg(long, default_value_t = 0)]
    pub model_seed: u64,
    /// cpu, cuda or cuda:N. Default: cuda when built with it and a GPU is present, else cpu.
    #[arg(long)]
    pub device: Option<String>,
    /// f32, bf16 or f16. Default: f32 on cpu, bf16 on cuda.
    #[arg(long)]
    pub dtype: Option<String>,
}

impl ModelArgs {
    pub fn source(&self) -> Result<ModelSource> {
        ModelSource::resolve(self.model.clone(), self.preset.as_deref(), self.model_seed)
    }

    pub fn load(&self) -> Result<(LoadedModel, Compute)> {
        let source = self.source()?;
        let compute = crate::device::select(self.device.as_deref(), self.dtype.as_deref())?;
        let loaded = source.load(&compute.device, compute.dtype)?;
        tracing::info!(model = %loaded.name, device = %compute.name, "model loaded");
        Ok((loaded, compute))
    }
}
