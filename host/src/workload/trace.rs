//! `trace:FILE`: requests as a server would see them, from a file, with arrival times.
//!
//! Two formats, told apart by the first non-blank character:
//! - JSONL (`{`): one request per line, `{"prompt": "text"}` or `{"prompt_token_ids": [..]}`,
//!   with `max_tokens` (or `output_len`; default `max_output_len`) and an optional
//!   `arrival_time` in seconds from the start;
//! - ShareGPT JSON (`[`): `[{"conversations": [{"from": "human", "value": ..}, {"from": "gpt",
//!   "value": ..}, ..]}, ..]`, as vLLM's serving benchmark reads it: the first human turn is the
//!   prompt, and the reply that follows sets the output length (its token count); entries
//!   without both are skipped.
//!
//! Arrivals: `request_rate` R draws Poisson arrivals (exponential gaps of mean 1/R seconds,
//! seeded); `"inf"` sends everything at once; absent, a JSONL trace's own `arrival_time`s are
//! used, counted from its first request (all at once where it has none). One point holds the
//! whole trace; it must arrive within `timeout_seconds`.

use super::{Point, Prompt, Workload};
use crate::bench::config::{BenchConfig, RequestRate};
use crate::rng::Rng;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::json;
use std::path::PathBuf;
use tokenizers::Tokenizer;

pub struct Trace {
    pub path: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    prompt: Option<String>,
    prompt_token_ids: Option<Vec<u32>>,
    #[serde(alias = "output_len")]
    max_tokens: Option<usize>,
    arrival_time: Option<f64>,
}

#[derive(Deserialize)]
struct Turn {
    from: String,
    value: String,
}

#[derive(Deserialize)]
struct Conversation {
    conversations: Vec<Turn>,
}

/// A request of the trace: tokens, output length, arrival (seconds) if the file gave one.
type Request = (Vec<u32>, Option<usize>, Option<f64>);

fn encode(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    crate::model::tokenizer::encode(tokenizer, text, "a trace prompt")
}

fn jsonl(text: &str, tokenizer: &Tokenizer, vocab: usize) -> Result<Vec<Request>> {
    let mut out = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let l: Line = serde_json::from_str(line).with_context(|| format!("line {}", i + 1))?;
        let tokens = match (l.prompt, l.prompt_token_ids) {
            (Some(p), None) => encode(tokenizer, &p)?,
            (None, Some(ids)) => {
                if let Some(bad) = ids.iter().find(|&&t| t as usize >= vocab) {
                    bail!(
                        "line {}: token id {bad} is outside the model's vocabulary of {vocab}",
                        i + 1
                    );
                }
                ids
            }
            _ => bail!(
                "line {}: give exactly one of `prompt` and `prompt_token_ids`",
                i + 1
            ),
        };
        if l.arrival_time.is_some_and(|t| t.is_nan() || t < 0.0) {
            bail!(
                "line {}: arrival_time must be a number of seconds, at least 0",
                i + 1
            );
        }
        if l.max_tokens == Some(0) {
            bail!("line {}: max_tokens must be at least 1", i + 1);
        }
        out.push((tokens, l.max_tokens, l.arrival_time));
    }
    Ok(out)
}

fn sharegpt(text: &str, tokenizer: &Tokenizer) -> Result<Vec<Request>> {
    let convs: Vec<Conversation> = serde_json::from_str(text).context(
        "not ShareGPT JSON (a list of {\"conversations\": [{\"from\", \"value\"}, ..]})",
    )?;
    let mut out = Vec::new();
    for c in convs {
        let mut turns = c.conversations.iter();
        let Some(human) = turns.find(|t| t.from == "human") else {
            continue;
        };
        let Some(reply) = turns.next().filter(|t| t.from == "gpt") else {
            continue;
        };
        let output = encode(tokenizer, &reply.value)?.len().max(1);
        out.push((encode(tokenizer, &human.value)?, Some(output), None));
    }
    Ok(out)
}

impl Workload for Trace {
    fn name(&self) -> &'static str {
        "trace"
    }

    fn points(&self, cfg: &BenchConfig, vocab: usize, tokenizer: &Tokenizer) -> Result<Vec<Point>> {
        let text = std::fs::read_to_string(&self.path)
            .with_context(|| format!("cannot read trace {}", self.path.display()))?;
        let requests = match text.trim_start().chars().next() {
            Some('{') => jsonl(&text, tokenizer, vocab),
            Some('[') => sharegpt(&text, tokenizer),
            _ => Err(anyhow::anyhow!(
                "it is neither JSONL (one {{\"prompt\": ..}} per line) nor ShareGPT JSON (a list)"
            )),
        }
        .with_context(|| format!("trace {}", self.path.display()))?;
        if requests.is_empty() {
            bail!("trace {} holds no request", self.path.display());
        }
        let mut rng = Rng::derive(cfg.seed, "trace arrivals");
        let mut clock = 0.0;
        let prompts: Vec<Prompt> = requests
            .into_iter()
            .map(|(tokens, max_tokens, at)| {
                let arrival = match cfg.request_rate {
                    Some(RequestRate::PerSecond(r)) => {
                        // Exponential gaps: -ln(1 - u) / r.
                        clock += -(1.0 - rng.next_f64()).ln() / r;
                        Some(clock)
                    }
                    Some(RequestRate::Inf) => None,
                    None => at,
                };
                Prompt {
                    max_tokens: max_tokens.or(Some(cfg.max_output_len)),
                    arrival,
                    ..Prompt::plain(tokens)
                }
            })
            .collect();
        // A trace's own times count from its first request (logs hold absolute times), and the
        // last must come before the run's timeout, or the run would only wait to be killed.
        // (A request without a time arrives at the start.)
        let first = prompts
            .iter()
            .map(|p| p.arrival.unwrap_or(0.0))
            .fold(f64::INFINITY, f64::min);
        let mut prompts = prompts;
        for p in &mut prompts {
            p.arrival = p.arrival.map(|t| t - first.min(t));
        }
        let last = prompts.iter().filter_map(|p| p.arrival).fold(0.0, f64::max);
        if last >= cfg.timeout_seconds as f64 {
            bail!(
                "trace {}: its last request arrives {last:.0} s after the first, past timeout_seconds ({}); raise --request-rate or --timeout",
                self.path.display(),
                cfg.timeout_seconds
            );
        }
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut extra = serde_json::Map::new();
        extra.insert("trace".into(), json!(name));
        extra.insert("request_rate".into(), json!(cfg.request_rate));
        Ok(vec![Point {
            workload: format!("trace:{name}"),
            batch_size: prompts.len(),
            prompts,
            extra,
        }])
    }
}
