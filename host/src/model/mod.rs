//! The model: configuration, weights, tokenizer, presets and the paged Qwen3 forward pass.

pub mod config;
#[cfg(feature = "cuda")]
pub mod cuda_graph;
pub mod graph_step;
pub mod graphs;
pub mod hub_cache;
pub mod preset;
pub mod qwen3;
pub mod rope;
pub mod source;
pub mod tokenizer;
pub mod weights;

pub use config::Qwen3Config;
pub use graph_step::StagedStep;
pub use graphs::{DecodeGraphs, GraphMode, GraphStats};
pub use preset::Preset;
pub use qwen3::{ForwardBatch, Qwen3};
pub use source::{LoadedModel, ModelSource};
