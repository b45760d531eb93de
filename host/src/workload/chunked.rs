//! The chunked workloads: the prototype's `chunked` and `chunked-reuse` (texts and draws as it
//! had them), and `long-chunked`, where reuse should pay: 8 contexts of about 512 tokens, each
//! request holding 4 of them (so most prompt tokens are in shared contexts).

use super::chunks::{compose, ChunkText};
use super::{Point, Prompt, Workload};
use crate::bench::config::BenchConfig;
use crate::rng::Rng;
use anyhow::Result;
use serde_json::json;
use std::collections::HashSet;
use tokenizers::Tokenizer;

const CHUNKED_SYSTEM: &str =
    "You are a helpful AI assistant. Answer questions accurately and concisely.";
const CHUNKED_CONTEXTS: [&str; 3] = [
    "Context A: The Earth is the third planet from the Sun and the only known planet to harbor life.",
    "Context B: Python is a high-level programming language known for its simplicity and readability.",
    "Context C: Machine learning is a subset of artificial intelligence that enables systems to learn from data.",
];
const REUSE_SYSTEMS: [&str; 3] = [
    "You are a helpful AI assistant.",
    "You are an expert in science and technology.",
    "You are a creative writing assistant.",
];
const REUSE_CONTEXTS: [&str; 5] = [
    "The solar system consists of the Sun and eight planets.",
    "Machine learning models can be trained on various datasets.",
    "Natural language processing enables computers to understand human language.",
    "Climate change is one of the most pressing issues of our time.",
    "Quantum computing promises to revolutionize computation.",
];
pub const REUSE_BATCHES: usize = 5;

fn words(rng: &mut Rng, prefix: &str, n: usize, max: u64) -> String {
    (0..n)
        .map(|_| format!("{prefix}{}", rng.range_inclusive(0, max)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn unique_chunks(prompts: &[Prompt]) -> usize {
    prompts
        .iter()
        .flat_map(|p| p.chunks.iter().map(|c| c.hash))
        .collect::<HashSet<_>>()
        .len()
}

fn point(
    workload: &str,
    batch_size: usize,
    prompts: Vec<Prompt>,
    mut extra: serde_json::Map<String, serde_json::Value>,
) -> Point {
    extra.insert("num_unique_chunks".into(), json!(unique_chunks(&prompts)));
    Point {
        workload: workload.into(),
        batch_size,
        prompts,
        extra,
    }
}

/// The prototype's: one system prompt, the first k of three contexts (k uniform in 0..=2), and
/// "Question {i}: " followed by 20..=50 words "word{n}".
pub struct Chunked;

impl Workload for Chunked {
    fn name(&self) -> &'static str {
        "chunked"
    }

    fn points(
        &self,
        cfg: &BenchConfig,
        _vocab: usize,
        tokenizer: &Tokenizer,
    ) -> Result<Vec<Point>> {
        let mut points = Vec::new();
        for &b in &cfg.batch_sizes {
            let mut rng = Rng::derive(cfg.seed, &format!("chunked/batch{b}"));
            let mut prompts = Vec::with_capacity(b);
            for i in 0..b {
                let k = rng.range_inclusive(0, 2) as usize;
                let n = rng.range_inclusive(20, 50) as usize;
                let mut chunks = vec![ChunkText::system(CHUNKED_SYSTEM)];
                chunks.extend(CHUNKED_CONTEXTS[..k].iter().map(|c| ChunkText::context(*c)));
                chunks.push(ChunkText::query(format!(
                    "Question {i}: {}",
                    words(&mut rng, "word", n, 1000)
                )));
                prompts.push(compose(&chunks, tokenizer, 0)?);
            }
            points.push(point("chunked", b, prompts, Default::default()));
        }
        Ok(points)
    }
}

/// The prototype's cross-batch reuse: 5 batches run one after another on the same strategy; each
/// request draws one of 3 system prompts and 0..=3 of 5 contexts (with replacement), then
/// "Batch {b}, Query {i}: What is " + 5 words "topic{n}" + "?".
pub struct ChunkedReuse;

impl Workload for ChunkedReuse {
    fn name(&self) -> &'static str {
        "chunked-reuse"
    }

    fn points(
        &self,
        cfg: &BenchConfig,
        _vocab: usize,
        tokenizer: &Tokenizer,
    ) -> Result<Vec<Point>> {
        let mut points = Vec::new();
        for &b in &cfg.batch_sizes {
            let mut rng = Rng::derive(cfg.seed, &format!("chunked-reuse/batch{b}"));
            let mut prompts = Vec::with_capacity(REUSE_BATCHES * b);
            for wave in 0..REUSE_BATCHES {
                for i in 0..b {
                    let mut chunks = vec![ChunkText::system(
                        REUSE_SYSTEMS[rng.index(REUSE_SYSTEMS.len())],
                    )];
                    for _ in 0..rng.range_inclusive(0, 3) {
                        chunks.push(ChunkText::context(
                            REUSE_CONTEXTS[rng.index(REUSE_CONTEXTS.len())],
                        ));
                    }
                    chunks.push(ChunkText::query(format!(
                        "Batch {wave}, Query {i}: What is {}?",
                        words(&mut rng, "topic", 5, 100)
                    )));
                    prompts.push(compose(&chunks, tokenizer, wave)?);
                }
            }
            let extra = json!({"num_batches": REUSE_BATCHES, "total_sequences": REUSE_BATCHES * b});
            points.push(point(
                "chunked-reuse",
                b,
                prompts,
                extra.as_object().expect("object").clone(),
            ));
        }
        Ok(points)
    }
}

/// Where reuse should pay: 8 contexts of about 512 tokens; each request holds 4 of them (a
/// random subset, in index order, so a context sits at different positions in different
/// requests) between a system prompt and a short query.
pub struct LongChunked;

pub const LONG_CONTEXTS: usize = 8;
pub const LONG_CONTEXT_TOKENS: usize = 512;
pub const LONG_CONTEXTS_PER_REQUEST: usize = 4;

impl Workload for LongChunked {
    fn name(&self) -> &'static str {
        "long-chunked"
    }

    fn points(
        &self,
        cfg: &BenchConfig,
        _vocab: usize,
        tokenizer: &Tokenizer,
    ) -> Result<Vec<Point>> {
        let mut rng = Rng::derive(cfg.seed, "long-chunked/contexts");
        let contexts: Vec<String> = (0..LONG_CONTEXTS)
            .map(|c| long_text(&mut rng, c, tokenizer))
            .collect::<Result<_>>()?;
        let mut points = Vec::new();
        for &b in &cfg.batch_sizes {
            let mut rng = Rng::derive(cfg.seed, &format!("long-chunked/batch{b}"));
            let mut prompts = Vec::with_capacity(b);
            for i in 0..b {
                let mut picked: Vec<usize> = (0..LONG_CONTEXTS).collect();
                for j in (1..picked.len()).rev() {
                    picked.swap(j, rng.index(j + 1));
                }
                picked.truncate(LONG_CONTEXTS_PER_REQUEST);
                picked.sort_unstable();
                let mut chunks = vec![ChunkText::system(CHUNKED_SYSTEM)];
                chunks.extend(
                    picked
                        .iter()
                        .map(|&c| ChunkText::context(contexts[c].clone())),
                );
                chunks.push(ChunkText::query(format!(
                    "Question {i}: what do these documents say about {}?",
                    words(&mut rng, "topic", 3, 100)
                )));
                prompts.push(compose(&chunks, tokenizer, 0)?);
            }
            points.push(point("long-chunked", b, prompts, Default::default()));
        }
        Ok(points)
    }
}

/// A document of at least LONG_CONTEXT_TOKENS tokens under `tokenizer`.
fn long_text(rng: &mut Rng, index: usize, tokenizer: &Tokenizer) -> Result<String> {
    let mut text = format!("Document {index}:");
    loop {
        let n = crate::model::tokenizer::encode(tokenizer, &text, "a long document")?.len();
        if n >= LONG_CONTEXT_TOKENS {
            return Ok(text);
        }
        text.push(' ');
        text.push_str(&words(
            rng,
            "fact",
            8.min(1 + (LONG_CONTEXT_TOKENS - n) / 4),
            5000,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points(w: &dyn Workload, batch_sizes: Vec<usize>) -> Vec<Point> {
        let cfg = BenchConfig {
            batch_sizes,
            ..BenchConfig::default()
        };
        w.points(
            &cfg,
            10_240,
            &crate::model::tokenizer::byte_level_tokenizer().unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn chunked_follows_the_prototype() {
        let p = &points(&Chunked, vec![6])[0];
        assert_eq!(p.prompts.len(), 6);
        let tok = crate::model::tokenizer::byte_level_tokenizer().unwrap();
        for (i, q) in p.prompts.iter().enumerate() {
            assert!(
                (2..=4).contains(&q.chunks.len()),
                "system, 0..=2 contexts, query"
            );
            let text = tok.decode(&q.tokens, false).unwrap();
            assert!(text.starts_with("<|im_start|>system\nYou are a helpful AI assistant."));
            assert!(text.contains(&format!("Question {i}: word")));
        }
        // Distinct chunks: the system prompt, the contexts used, one query each.
        let contexts = p.prompts.iter().map(|q| q.chunks.len() - 2).max().unwrap();
        assert_eq!(p.extra["num_unique_chunks"], 1 + contexts + 6);
    }

    #[test]
    fn chunked_reuse_has_five_waves_and_long_chunked_long_contexts() {
        let p = &points(&ChunkedReuse, vec![3])[0];
        assert_eq!(p.prompts.len(), 15);
        assert_eq!(
            p.prompts.iter().map(|q| q.wave).collect::<Vec<_>>(),
            (0..5).flat_map(|w| [w; 3]).collect::<Vec<_>>()
        );
        assert_eq!(
            (
                p.extra["num_batches"].clone(),
                p.extra["total_sequences"].clone()
            ),
            (json!(5), json!(15))
        );
        let p = &points(&LongChunked, vec![4])[0];
        for q in &p.prompts {
            assert_eq!(q.chunks.len(), 2 + LONG_CONTEXTS_PER_REQUEST);
            assert!(q.chunks[1..5]
                .iter()
                .all(|c| c.len as usize >= LONG_CONTEXT_TOKENS));
        }
    }
}
