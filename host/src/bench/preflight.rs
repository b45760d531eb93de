//! Checks in the parent before any worker starts, so a bad input is one clear error instead of
//! one failure per plugin, and an over-large point is refused with the bytes it would need
//! instead of being found by the kernel's OOM killer half-way through a run.
//!
//! - plugin files: present, regular, ELF; one file given twice runs once; each gets the name
//!   of its result file (below);
//! - the model: directory, config.json, tokenizer.json, every tensor's shape and dtype;
//! - the workloads' points, built as the worker will build them, and the memory the largest
//!   needs (KV pool, weights, activations, prompts) against the memory free for it.

use super::config::BenchConfig;
use crate::model::config::Qwen3Config;
use crate::workload::{Point, Prompt};
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// A plugin file as the run will use it.
#[derive(Clone, Debug)]
pub struct PlannedPlugin {
    pub path: PathBuf,
    pub sha256: String,
    /// `results_<file stem>.json` (`libchunked_reuse.so` -> `results_chunked_reuse.json`, the
    /// prototype's names), with `-<sha256 prefix>` where two files of the run share a stem. Named
    /// by the file, never by what the plugin calls itself, so no plugin can take another's file.
    pub results_file: String,
    /// Why the file cannot be a plugin; the run reports it without starting a worker.
    pub refused: Option<String>,
}

/// A plugin file's name without `lib` and extension, made file-name safe (at most 64 letters,
/// digits and `_`).
pub fn stem(path: &Path) -> String {
    let s = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("plugin");
    let s = s.strip_prefix("lib").unwrap_or(s);
    let clean: String = s
        .chars()
        .map(|c| match c.is_ascii_alphanumeric() || c == '_' {
            true => c,
            false => '_',
        })
        .take(64)
        .collect();
    match clean.is_empty() {
        true => "plugin".into(),
        false => clean,
    }
}

/// Why `path` cannot be loaded as a plugin, as far as the parent can tell without loading it.
fn refuse(path: &Path) -> Option<String> {
    use std::io::Read;
    if path.is_dir() {
        return Some(format!(
            "{} is a directory, not a plugin file; give the .so itself, or --plugin-dir for a folder of them",
            path.display()
        ));
    }
    if !path.is_file() {
        return Some(
            crate::plugin::load_error::LoadError::Missing {
                path: path.to_path_buf(),
                hint: crate::plugin::load::missing_hint(path),
            }
            .to_string(),
        );
    }
    let mut magic = [0u8; 4];
    let read = std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic));
    match read {
        Err(e) => Some(format!("{} cannot be read: {e}", path.display())),
        Ok(()) if cfg!(target_os = "linux") && &magic != b"\x7fELF" => Some(format!(
            "{} is not a loadable shared library (no ELF header); give the .so a plugin crate builds",
            path.display()
        )),
        Ok(()) => None,
    }
}

/// The run's plugins: each file once (a second path to the same bytes is dropped with a
/// warning), with its result file name.
pub fn plan_plugins(paths: &[PathBuf]) -> Vec<PlannedPlugin> {
    let mut planned: Vec<PlannedPlugin> = Vec::new();
    for path in paths {
        let refused = refuse(path);
        let sha256 = match refused {
            None => crate::plugin::load::sha256_file(path).unwrap_or_default(),
            Some(_) => String::new(),
        };
        if let Some(first) = planned
            .iter()
            .find(|p| !sha256.is_empty() && p.sha256 == sha256)
        {
            eprintln!(
                "warning: {} is the same file as {} (sha256 {:.12}): running it once",
                path.display(),
                first.path.display(),
                sha256
            );
            continue;
        }
        planned.push(PlannedPlugin {
            path: path.clone(),
            sha256,
            results_file: String::new(),
            refused,
        });
    }
    let stems: Vec<String> = planned.iter().map(|p| stem(&p.path)).collect();
    for (i, p) in planned.iter_mut().enumerate() {
        let shared = stems.iter().filter(|s| **s == stems[i]).count() > 1;
        p.results_file = match (shared, p.sha256.is_empty()) {
            (false, _) => format!("results_{}.json", stems[i]),
            (true, false) => format!("results_{}-{:.12}.json", stems[i], p.sha256),
            (true, true) => format!("results_{}-{i}.json", stems[i]),
        };
    }
    planned
}

/// Memory the largest point needs, by part, in bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Estimate {
    pub kv_pool: u64,
    pub weights: u64,
    pub activations: u64,
    pub prompts: u64,
}

impl Estimate {
    pub fn total(&self) -> u64 {
        self.kv_pool + self.weights + self.activations + self.prompts
    }

    pub fn describe(&self) -> String {
        format!(
            "about {} (KV pool {}, weights {}, activations {}, prompts {})",
            gb(self.total()),
            gb(self.kv_pool),
            gb(self.weights),
            gb(self.activations),
            gb(self.prompts)
        )
    }
}

pub fn gb(bytes: u64) -> String {
    format!("{:.2} GB", bytes as f64 / 1e9)
}

/// Blocks that let the largest point run with no preemption: every sequence at full length.
pub fn default_blocks(cfg: &BenchConfig, points: &[Point]) -> usize {
    points
        .iter()
        .map(|p| {
            (0..p.prompts.len())
                .map(|i| {
                    Prompt::full_len(&p.prompts, i, cfg.max_output_len).div_ceil(cfg.block_size)
                })
                .sum::<usize>()
        })
        .max()
        .unwrap_or(1)
}

/// What the worker will allocate for `points` with `model` in `dtype_bytes` per value. The KV
/// pool and the weights are exact; activations are one step of `max_num_batched_tokens` rows
/// through the widest layer, with f32 logits for the sampled rows; prompts are the token ids.
pub fn estimate(
    cfg: &BenchConfig,
    model: &Qwen3Config,
    dtype_bytes: usize,
    points: &[Point],
) -> Estimate {
    let per_block = cfg.block_size * model.kv_bytes_per_token(dtype_bytes);
    let blocks = match (cfg.num_blocks, cfg.kv_cache_bytes) {
        (Some(n), _) => n,
        (None, Some(b)) => b / per_block.max(1),
        (None, None) => default_blocks(cfg, points),
    };
    let rows = cfg.max_num_batched_tokens as u64;
    let widest = (4 * model.hidden_size
        + (model.num_attention_heads + 2 * model.num_key_value_heads) * model.head_dim
        + 3 * model.intermediate_size) as u64;
    let sampled = points
        .iter()
        .map(|p| p.prompts.len())
        .max()
        .unwrap_or(1)
        .min(cfg.max_num_seqs) as u64;
    let prompt_tokens: usize = points
        .iter()
        .flat_map(|p| p.prompts.iter().map(|q| q.tokens.len()))
        .sum();
    Estimate {
        kv_pool: (blocks * per_block) as u64,
        weights: (crate::model::preset::parameter_count(model) * dtype_bytes) as u64,
        activations: rows * widest * dtype_bytes as u64 + sampled * model.vocab_size as u64 * 4,
        prompts: prompt_tokens as u64 * 4,
    }
}

/// Host memory available to new allocations (`MemAvailable`), `None` where it cannot be read.
pub fn host_memory_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Refuses `estimate` if it exceeds `free` (bytes free where it will be allocated).
pub fn check_fits(estimate: &Estimate, free: u64, where_: &str) -> Result<()> {
    if estimate.total() > free {
        bail!(
            "the largest point needs {}, but {where_} has {} free; lower batch_sizes, max_input_len or the quality lengths, or set kv_cache_bytes / num_blocks",
            estimate.describe(),
            gb(free)
        );
    }
    Ok(())
}

/// Whether the worker will run on the CPU: the config says so, or this build has no CUDA.
/// (`None` with CUDA built picks a GPU if one answers: the worker checks device memory itself.)
fn runs_on_cpu(cfg: &BenchConfig) -> bool {
    cfg.device.as_deref() == Some("cpu") || (cfg.device.is_none() && !cfg!(feature = "cuda"))
}

/// The parent's model and memory checks: the model's files, the prompt lengths against its
/// context, a bound on the prompts before building them, then the points themselves and, on
/// the CPU, their memory against what the host has free.
pub fn check_model_and_memory(cfg: &BenchConfig) -> Result<()> {
    let source = super::worker::model_source(cfg)?;
    let (model, tokenizer) = source.preflight()?;
    let asked = match cfg.workloads.iter().any(|w| w == "retrieval") {
        true => cfg
            .quality
            .retrieval_lengths
            .iter()
            .copied()
            .max()
            .unwrap_or(0),
        false => 0,
    }
    .max(cfg.max_input_len);
    if asked.saturating_add(cfg.max_output_len) > model.max_position_embeddings {
        bail!(
            "prompts of up to {asked} tokens (max_input_len, or the retrieval lengths) + max_output_len {} exceed the context of {} (max_position_embeddings {})",
            cfg.max_output_len,
            source.describe(),
            model.max_position_embeddings
        );
    }
    let free = host_memory_available().unwrap_or(u64::MAX);
    // Building the prompts holds them all: bound that before building them.
    let longest = [
        cfg.max_input_len,
        cfg.quality
            .retrieval_lengths
            .iter()
            .copied()
            .max()
            .unwrap_or(0),
        cfg.quality.perplexity_tokens + 64,
        crate::workload::LONGEST_FIXED_PROMPT,
    ]
    .into_iter()
    .max()
    .unwrap_or(0);
    let requests: u128 =
        cfg.batch_sizes.iter().map(|&b| b as u128).sum::<u128>() * cfg.workloads.len() as u128;
    let prompt_bound = requests * (longest + cfg.max_output_len) as u128 * 16;
    if prompt_bound > (free / 2) as u128 {
        bail!(
            "batch_sizes {:?} over {} workloads make up to {requests} requests of up to {} tokens: their prompts alone could need {}, and the host has {} free; lower batch_sizes",
            cfg.batch_sizes,
            cfg.workloads.len(),
            longest + cfg.max_output_len,
            gb(prompt_bound.min(u64::MAX as u128) as u64),
            gb(free)
        );
    }
    let mut points = Vec::new();
    for name in &cfg.workloads {
        points.extend(crate::workload::by_name(name)?.points(cfg, model.vocab_size, &tokenizer)?);
    }
    if runs_on_cpu(cfg) {
        let dtype_bytes = match cfg.dtype.as_deref() {
            Some("bf16") | Some("f16") => 2,
            _ => 4,
        };
        check_fits(
            &estimate(cfg, &model, dtype_bytes, &points),
            free,
            "this host",
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_files_are_named_by_file_then_hash() {
        let dir = tempfile::tempdir().unwrap();
        let write = |rel: &str, bytes: &[u8]| {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, bytes).unwrap();
            p
        };
        let a = write("a/libstandard.so", b"\x7fELF one");
        let b = write("b/libstandard.so", b"\x7fELF two");
        let same = write("c/libcopy.so", b"\x7fELF one");
        let other = write("libchunked_reuse.so", b"\x7fELF three");
        let text = write("libtext.so", b"not a library");
        let planned = plan_plugins(&[
            a,
            b,
            same,
            other,
            text,
            dir.path().join("libnope.so"),
            dir.path().join("a"),
        ]);
        let names: Vec<&str> = planned.iter().map(|p| p.results_file.as_str()).collect();
        let sha = |i: usize| planned[i].sha256[..12].to_string();
        assert_eq!(
            names,
            [
                format!("results_standard-{}.json", sha(0)).as_str(),
                format!("results_standard-{}.json", sha(1)).as_str(),
                "results_chunked_reuse.json",
                "results_text.json",
                "results_nope.json",
                "results_a.json",
            ]
        );
        assert!(planned[..3].iter().all(|p| p.refused.is_none()));
        assert!(planned[3]
            .refused
            .as_ref()
            .unwrap()
            .contains("no ELF header"));
        assert!(planned[4].refused.as_ref().unwrap().contains("libnope.so"));
        assert!(planned[5]
            .refused
            .as_ref()
            .unwrap()
            .contains("is a directory"));
    }
}
