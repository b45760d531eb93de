//! Multi-turn conversations: `batch_size` sessions of `TURNS` turns. A session's first prompt
//! is a system prompt of 32..=64 random ids and a user message of 16..=48; each later turn's
//! prompt is the whole history (every earlier prompt and reply, as generated) followed by a new
//! user message of 16..=48 ids. Turns run as waves, so a strategy that keeps replies can reuse
//! all of the history; replies are `REPLY_TOKENS` long (or `max_output_len` if shorter).

use super::standard::{check_vocab, random_ids};
use super::{Point, Prompt, Workload};
use crate::bench::config::BenchConfig;
use crate::rng::Rng;
use anyhow::Result;
use serde_json::json;
use tokenizers::Tokenizer;

pub struct Conversation;

pub const TURNS: usize = 3;
pub const REPLY_TOKENS: usize = 48;

impl Workload for Conversation {
    fn name(&self) -> &'static str {
        "conversation"
    }

    fn points(
        &self,
        cfg: &BenchConfig,
        vocab_size: usize,
        _tokenizer: &Tokenizer,
    ) -> Result<Vec<Point>> {
        check_vocab(vocab_size, "conversation")?;
        let reply = REPLY_TOKENS.min(cfg.max_output_len);
        Ok(cfg
            .batch_sizes
            .iter()
            .map(|&b| {
                let mut rng = Rng::derive(cfg.seed, &format!("conversation/batch{b}"));
                let mut prompts = Vec::with_capacity(b * TURNS);
                for turn in 0..TURNS {
                    for session in 0..b {
                        let system = if turn == 0 {
                            rng.range_inclusive(32, 64) as usize
                        } else {
                            0
                        };
                        let user = rng.range_inclusive(16, 48) as usize;
                        let continues = (turn > 0).then(|| (turn - 1) * b + session);
                        prompts.push(Prompt {
                            wave: turn,
                            max_tokens: Some(reply),
                            continues,
                            ..Prompt::plain(random_ids(&mut rng, system + user))
                        });
                    }
                }
                let mut extra = serde_json::Map::new();
                extra.insert("turns".into(), json!(TURNS));
                Point {
                    workload: "conversation".into(),
                    batch_size: b,
                    prompts,
                    extra,
                }
            })
            .collect())
    }
}
