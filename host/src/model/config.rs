//! `config.json` of a Qwen3 checkpoint, in both dialects seen in the wild.
//!
//! Qwen3-0.6B as published has a top-level `rope_theta`; transformers 5 writes
//! `rope_parameters: {rope_theta, rope_type}` instead. Both are read; any rope scaling other than
//! the default is rejected because the model here does not implement it.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The hyper-parameters the paged model needs, validated.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Qwen3Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

#[derive(Deserialize)]
struct RopeParameters {
    rope_theta: f64,
    #[serde(default)]
    rope_type: Option<String>,
}

/// The file as written by Hugging Face tools; unknown keys are theirs and are ignored.
#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    architectures: Option<Vec<String>>,
    #[serde(default)]
    model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: usize,
    #[serde(default)]
    head_dim: Option<usize>,
    max_position_embeddings: usize,
    rms_norm_eps: f64,
    #[serde(default)]
    rope_theta: Option<f64>,
    #[serde(default)]
    rope_parameters: Option<RopeParameters>,
    #[serde(default)]
    rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default)]
    hidden_act: Option<String>,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    use_sliding_window: bool,
    #[serde(default)]
    bos_token_id: Option<u32>,
    #[serde(default)]
    eos_token_id: Option<serde_json::Value>,
}

impl Qwen3Config {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read model config {}", path.display()))?;
        Self::from_json(&text).with_context(|| {
            format!(
                "model config {} is not a usable Qwen3 config",
                path.display()
            )
        })
    }

    pub fn from_json(text: &str) -> Result<Self> {
        let raw: RawConfig = serde_json::from_str(text)
            .map_err(|e| anyhow::anyhow!("malformed config.json: {e}"))?;
        raw.validate()
    }

    /// Bytes of K plus V per token over all layers at `dtype_bytes` per element.
    pub fn kv_bytes_per_token(&self, dtype_bytes: usize) -> usize {
        2 * self.num_hidden_layers * self.num_key_value_heads * self.head_dim * dtype_bytes
    }

    /// The config.json a Hugging Face tool expects for this model (published-Qwen3 dialect).
    pub fn to_hf_json(&self, torch_dtype: &str) -> serde_json::Value {
        serde_json::json!({
            "architectures": ["Qwen3ForCausalLM"],
            "model_type": "qwen3",
            "attention_bias": false,
            "attention_dropout": 0.0,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_ids.first(),
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "hidden_size": self.hidden_size,
            "initializer_range": 0.02,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_position_embeddings,
            "max_window_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_hidden_layers": self.num_hidden_layers,
            "num_key_value_heads": self.num_key_value_heads,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_scaling": null,
            "rope_theta": self.rope_theta,
            "sliding_window": null,
            "tie_word_embeddings": self.tie_word_embeddings,
            "torch_dtype": torch_dtype,
            "use_cache": true,
            "use_sliding_window": false,
            "vocab_size": self.vocab_size,
        })
    }
}

impl RawConfig {
    fn validate(self) -> Result<Qwen3Config> {
        let arch_ok = self
            .architectures
            .as_ref()
            .is_some_and(|a| a.iter().any(|a| a == "Qwen3ForCausalLM"));
        let type_ok = self.model_type.as_deref() == Some("qwen3");
        if !arch_ok && !type_ok {
            bail!(
                "architecture is {:?} (model_type {:?}); nanohost runs Qwen3 only (Qwen3ForCausalLM, model_type \"qwen3\")",
                self.architectures.unwrap_or_default(),
                self.model_type.unwrap_or_default()
            );
        }
        if let Some(act) = &self.hidden_act {
            if act != "silu" {
                bail!("hidden_act is \"{act}\"; Qwen3 uses \"silu\"");
            }
        }
        if self.attention_bias {
            bail!("attention_bias is true; Qwen3 projections have no bias and nanohost does not load one");
        }
        if self.use_sliding_window {
            bail!("use_sliding_window is true; sliding-window attention is not implemented");
        }
        if self.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            bail!(
                "rope_scaling is set ({}); only unscaled RoPE is implemented",
                self.rope_scaling.unwrap()
            );
        }
        let rope_theta = match (self.rope_theta, self.rope_parameters) {
            (Some(t), _) => t,
            (None, Some(p)) => {
                if let Some(kind) = p.rope_type.as_deref().filter(|k| *k != "default") {
                    bail!("rope_parameters.rope_type is \"{kind}\"; only \"default\" RoPE is implemented");
                }
                p.rope_theta
            }
            (None, None) => bail!("neither rope_theta nor rope_parameters.rope_theta is present"),
        };
        let head_dim = self
            .head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1));
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", head_dim),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            bail!("{name} is 0");
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            bail!(
                "num_attention_heads ({}) is not a multiple of num_key_value_heads ({})",
                self.num_attention_heads,
                self.num_key_value_heads
            );
        }
        if !head_dim.is_multiple_of(2) {
            bail!("head_dim ({head_dim}) must be even for RoPE");
        }
        let eos_token_ids = match self.eos_token_id {
            None | Some(serde_json::Value::Null) => vec![],
            Some(v) => serde_json::from_value::<EosIds>(v)
                .map_err(|e| anyhow::anyhow!("eos_token_id must be an id or a list of ids: {e}"))?
                .into_vec(),
        };
        Ok(Qwen3Config {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            num_key_value_heads: self.num_key_value_heads,
            head_dim,
            max_position_embeddings: self.max_position_embeddings,
            rms_norm_eps: self.rms_norm_eps,
            rope_theta,
            tie_word_embeddings: self.tie_word_embeddings,
            bos_token_id: self.bos_token_id,
            eos_token_ids,
        })
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum EosIds {
    One(u32),
    Many(Vec<u32>),
}

impl EosIds {
    fn into_vec(self) -> Vec<u32> {
        match self {
            EosIds::One(id) => vec![id],
            EosIds::Many(ids) => ids,
        }
    }
}
