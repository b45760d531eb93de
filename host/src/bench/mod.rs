//! The benchmark loop: configuration, the per-plugin worker, its metrics, the supervisor that
//! runs workers in child processes, and the summary.

pub mod attention;
#[cfg(feature = "cuda")]
pub mod chain;
pub mod channel;
pub mod chunk_stats;
pub mod compare;
pub mod config;
pub mod decode;
pub mod fidelity;
pub mod lifetime;
pub mod metrics;
pub mod panels;
pub mod plots;
pub mod preflight;
pub mod quality;
pub mod quality_summary;
pub mod report;
pub mod run_dir;
pub mod run_table;
pub mod stats;
pub mod summary;
pub mod supervisor;
pub mod teacher;
pub mod waves;
pub mod worker;
pub mod worker_log;
