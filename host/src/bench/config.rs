//! The benchmark configuration: the prototype's keys plus nanohost's own. Unknown keys and
//! wrong types are errors naming the key.

use crate::model::GraphMode;
use anyhow::{bail, Context, Result};
use nanohost_strategy_api::{OptionValue, PluginOption};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// The prototype suite's four workloads: what `nanohost run` replaces, run for every plugin.
pub const DEFAULT_WORKLOADS: [&str; 4] = ["standard", "shared-prefix", "chunked", "chunked-reuse"];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BenchConfig {
    /// Hugging Face Qwen3 directory (prototype key). Absent: the default path, else `tiny`.
    pub model_path: Option<String>,
    /// A generated preset instead of a directory: "tiny" or "qwen3-0.6b".
    pub preset: Option<String>,
    pub model_seed: u64,
    /// cpu, cuda or cuda:N; absent: cuda when built with it and a GPU is present, else cpu.
    pub device: Option<String>,
    /// f32, bf16 or f16; absent: f32 on cpu, bf16 on cuda.
    pub dtype: Option<String>,
    pub batch_sizes: Vec<usize>,
    pub max_input_len: usize,
    pub max_output_len: usize,
    pub seed: u64,
    /// 0 means greedy. The prototype sampled at 0.6 and ignored EOS.
    pub temperature: f64,
    /// Tokens generated in the warm-up call before each timed point (prototype: 10).
    pub warmup_tokens: usize,
    pub workloads: Vec<String>,
    /// Per plugin, wall clock, for the whole child process.
    pub timeout_seconds: u64,
    pub block_size: usize,
    /// KV pool size in blocks; absent: `kv_cache_bytes`, else enough for the largest point
    /// with no preemption.
    pub num_blocks: Option<usize>,
    /// KV pool size as a memory budget (K and V, all layers), when `num_blocks` is absent.
    pub kv_cache_bytes: Option<usize>,
    pub max_num_seqs: usize,
    pub max_num_batched_tokens: usize,
    /// Decode steps through CUDA graphs: on (default; off on the CPU), off, or staged (padded
    /// as for a graph, run eagerly: for checking replays).
    pub cuda_graphs: GraphMode,
    /// Options for the strategies, by plugin name (`"*"`: every plugin), each a JSON object of
    /// option names to numbers, booleans or strings: `{"streaming": {"window": 256}}`.
    pub plugin_options: BTreeMap<String, BTreeMap<String, Value>>,
    /// The grid of the `retrieval` and `perplexity` workloads.
    pub quality: QualityConfig,
    /// Compare every point's greedy output with the standard plugin's on the same prompts
    /// (`fidelity` in the results); off saves the two greedy runs per point.
    pub fidelity: bool,
    /// Arrivals of a `trace:FILE` workload: requests per second (Poisson, seeded) or "inf"
    /// (all at once); absent, the trace's own arrival times.
    pub request_rate: Option<RequestRate>,
}

/// `request_rate`: a number of requests per second, or "inf".
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RequestRate {
    PerSecond(f64),
    #[serde(with = "inf")]
    Inf,
}

mod inf {
    pub fn serialize<S: serde::Serializer>(s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("inf")
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<(), D::Error> {
        match <String as serde::Deserialize>::deserialize(d)?.as_str() {
            "inf" => Ok(()),
            other => Err(serde::de::Error::custom(format!(
                "expected a number of requests per second or \"inf\", got \"{other}\""
            ))),
        }
    }
}

impl std::str::FromStr for RequestRate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "inf" => Ok(RequestRate::Inf),
            n => n
                .parse::<f64>()
                .ok()
                .filter(|r| r.is_finite() && *r > 0.0)
                .map(RequestRate::PerSecond)
                .ok_or_else(|| format!("expected requests per second (> 0) or inf, got {n}")),
        }
    }
}

/// What the quality workloads ask. Lengths are in the model's tokens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QualityConfig {
    /// Context lengths of the retrieval grid, one point each.
    pub retrieval_lengths: Vec<usize>,
    /// Depths of the needle, in percent of the haystack.
    pub retrieval_depths: Vec<u32>,
    /// Prompts per (length, depth) cell.
    pub retrieval_samples: usize,
    /// Held-out documents, and tokens scored in each.
    pub perplexity_docs: usize,
    pub perplexity_tokens: usize,
}

impl Default for QualityConfig {
    fn default() -> Self {
        QualityConfig {
            retrieval_lengths: vec![512, 1024, 2048, 4096],
            retrieval_depths: (0..=100).step_by(10).collect(),
            retrieval_samples: 4,
            perplexity_docs: 4,
            perplexity_tokens: 1024,
        }
    }
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            model_path: None,
            preset: None,
            model_seed: 0,
            device: None,
            dtype: None,
            batch_sizes: vec![1, 2, 4],
            max_input_len: 256,
            max_output_len: 128,
            seed: 42,
            temperature: 0.6,
            warmup_tokens: 10,
            workloads: DEFAULT_WORKLOADS.iter().map(|w| w.to_string()).collect(),
            timeout_seconds: 1800,
            block_size: crate::engine::kv_pool::DEFAULT_BLOCK_SIZE,
            num_blocks: None,
            kv_cache_bytes: None,
            max_num_seqs: 256,
            max_num_batched_tokens: 16_384,
            cuda_graphs: GraphMode::On,
            plugin_options: BTreeMap::new(),
            quality: QualityConfig::default(),
            fidelity: true,
            request_rate: None,
        }
    }
}

impl BenchConfig {
    pub fn from_json(text: &str) -> Result<Self> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let cfg: BenchConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path == "." {
                anyhow::anyhow!("{inner}")
            } else {
                anyhow::anyhow!("key `{path}`: {inner}")
            }
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::from_json(&text).with_context(|| format!("config file {} is invalid", path.display()))
    }

    /// The options for the plugin called `name`: those for every plugin (`"*"`), then its own
    /// (which win where both give a key), typed for the ABI.
    pub fn options_for(&self, name: &str) -> Result<Vec<PluginOption>> {
        let mut merged: BTreeMap<&str, &Value> = BTreeMap::new();
        for scope in ["*", name] {
            for (k, v) in self.plugin_options.get(scope).into_iter().flatten() {
                merged.insert(k, v);
            }
        }
        merged
            .into_iter()
            .map(|(k, v)| {
                Ok(PluginOption {
                    key: k.into(),
                    value: option_value(k, v)?,
                })
            })
            .collect()
    }

    pub fn validate(&self) -> Result<()> {
        for (scope, options) in &self.plugin_options {
            for (k, v) in options {
                option_value(k, v).with_context(|| format!("key `plugin_options.{scope}`"))?;
            }
        }
        if self.batch_sizes.is_empty() || self.batch_sizes.contains(&0) {
            bail!(
                "key `batch_sizes` must list batch sizes of at least 1, got {:?}",
                self.batch_sizes
            );
        }
        if self.max_output_len == 0 {
            bail!("key `max_output_len` must be at least 1");
        }
        if self.block_size == 0 {
            bail!("key `block_size` must be at least 1");
        }
        if self.temperature < 0.0 || !self.temperature.is_finite() {
            bail!(
                "key `temperature` must be 0 (greedy) or positive, got {}",
                self.temperature
            );
        }
        if self.num_blocks.is_some() && self.kv_cache_bytes.is_some() {
            bail!("give the KV pool size as `num_blocks` or as `kv_cache_bytes`, not both");
        }
        if let Some(RequestRate::PerSecond(r)) = self.request_rate {
            if !(r.is_finite() && r > 0.0) {
                bail!("key `request_rate` must be a positive number of requests per second or \"inf\", got {r}");
            }
        }
        if self.workloads.is_empty() {
            bail!(
                "key `workloads` is empty; known workloads: {}",
                crate::workload::NAMES.join(", ")
            );
        }
        for w in &self.workloads {
            crate::workload::by_name(w)?;
        }
        Ok(())
    }
}

fn option_value(key: &str, v: &Value) -> Result<OptionValue> {
    Ok(match v {
        Value::Bool(b) => OptionValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => OptionValue::Int(i),
            None => OptionValue::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => OptionValue::Text(s.as_str().into()),
        other => bail!("option `{key}` must be a number, a boolean or a string, got {other}"),
    })
}

/// `value` as written on a command line: an integer, a float, `true`/`false`, or text.
pub fn parse_option_value(value: &str) -> Value {
    if let Ok(i) = value.parse::<i64>() {
        return Value::from(i);
    }
    if let Some(f) = value.parse::<f64>().ok().filter(|f| f.is_finite()) {
        return Value::from(f);
    }
    match value {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => Value::String(value.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prototype_keys_parse_and_bad_keys_are_named() {
        let c = BenchConfig::from_json(r#"{"batch_sizes": [8], "seed": 1, "max_input_len": 128}"#)
            .unwrap();
        assert_eq!(
            (c.batch_sizes, c.seed, c.max_input_len, c.max_output_len),
            (vec![8], 1, 128, 128)
        );
        let e = BenchConfig::from_json(r#"{"batch_size": [8]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `batch_size`"), "{e}");
        let e = BenchConfig::from_json(r#"{"batch_sizes": [1, "two"]}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("batch_sizes[1]") && e.contains("invalid type"),
            "{e}"
        );
        let e = BenchConfig::from_json(r#"{"seed": -1}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("key `seed`"), "{e}");
        let e = BenchConfig::from_json(r#"{"workloads": ["nope"]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown workload \"nope\""), "{e}");
        assert_eq!(
            BenchConfig::from_json(r#"{"cuda_graphs": "staged"}"#)
                .unwrap()
                .cuda_graphs,
            GraphMode::Staged
        );
        assert_eq!(BenchConfig::default().cuda_graphs, GraphMode::On);
        let e = BenchConfig::from_json(r#"{"cuda_graphs": "yes"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("key `cuda_graphs`") && e.contains("unknown variant"),
            "{e}"
        );
    }

    #[test]
    fn plugin_options_merge_by_scope_and_keep_their_types() {
        let c = BenchConfig::from_json(r#"{"plugin_options": {"*": {"window": 8, "x": true}, "streaming": {"window": 64, "mode": "fast", "r": 0.5}}}"#).unwrap();
        let got: Vec<(String, OptionValue)> = c
            .options_for("streaming")
            .unwrap()
            .into_iter()
            .map(|o| (o.key.into_string(), o.value))
            .collect();
        let want = [
            ("mode", OptionValue::Text("fast".into())),
            ("r", OptionValue::Float(0.5)),
            ("window", OptionValue::Int(64)),
            ("x", OptionValue::Bool(true)),
        ];
        assert_eq!(got, want.map(|(k, v)| (k.to_string(), v)));
        assert_eq!(c.options_for("standard").unwrap().len(), 2);
        let e = format!(
            "{:#}",
            BenchConfig::from_json(r#"{"plugin_options": {"radix": {"budget": [1]}}}"#)
                .unwrap_err()
        );
        assert!(
            e.contains("plugin_options.radix") && e.contains("option `budget`"),
            "{e}"
        );
        assert_eq!(parse_option_value("12"), Value::from(12));
        assert_eq!(parse_option_value("0.25"), Value::from(0.25));
        assert_eq!(parse_option_value("false"), Value::Bool(false));
        assert_eq!(parse_option_value("lru"), Value::from("lru"));
    }
}
