//! The chunked workloads' result keys (the prototype's names), from the strategy's counters —
//! `chunk_hits`, `chunk_hit_tokens`, `exact_chunk_hits`, `approximate_chunk_hits`,
//! `chunk_misses`, `chunk_evictions`, which chunk plugins report (others report none, so zero)
//! — and the KV the strategy held, measured from the pool.

use crate::engine::sequence::Sequence;
use crate::workload::Point;
use serde_json::{json, Map, Value};

const MIB: f64 = 1024.0 * 1024.0;

fn counter(counters: &[(String, u64)], name: &str) -> u64 {
    counters
        .iter()
        .find(|(n, _)| n == name)
        .map_or(0, |(_, v)| *v)
}

/// One wave's statistics (`batch_stats` entries): counters are deltas over the wave.
pub fn wave(
    before: &[(String, u64)],
    after: &[(String, u64)],
    point: &Point,
    wave: usize,
    done: &[Sequence],
    held_bytes: usize,
) -> Value {
    let delta = |name: &str| counter(after, name) - counter(before, name);
    let (hits, misses) = (delta("chunk_hits"), delta("chunk_misses"));
    let total_chunks: usize = point
        .prompts
        .iter()
        .filter(|p| p.wave == wave)
        .map(|p| p.chunks.len())
        .sum();
    json!({
        "batch": wave,
        "total_chunks": total_chunks,
        "cache_hits": hits,
        "cache_hit_tokens": delta("chunk_hit_tokens"),
        "cache_misses": misses,
        "hit_rate": if hits + misses == 0 { 0.0 } else { hits as f64 / (hits + misses) as f64 },
        "evictions": delta("chunk_evictions"),
        "memory_used_mb": held_bytes as f64 / MIB,
        "total_tokens": done.iter().map(Sequence::len).sum::<usize>(),
    })
}

/// The point's chunk keys: hits in chunks and tokens (exact apart from approximate), misses,
/// evictions, and `chunk_memory_mb` = the peak KV the strategy held (live plus retained).
pub fn point(
    counters: &[(String, u64)],
    peak_held_bytes: u64,
    waves: Vec<Value>,
) -> Map<String, Value> {
    let c = |n: &str| json!(counter(counters, n));
    let mut m = Map::new();
    m.insert("cache_hits".into(), c("chunk_hits"));
    m.insert("total_cache_hits".into(), c("chunk_hits"));
    m.insert("cache_hit_tokens".into(), c("chunk_hit_tokens"));
    m.insert("exact_cache_hits".into(), c("exact_chunk_hits"));
    m.insert("approximate_cache_hits".into(), c("approximate_chunk_hits"));
    m.insert("cache_misses".into(), c("chunk_misses"));
    m.insert("evictions".into(), c("chunk_evictions"));
    m.insert(
        "chunk_memory_mb".into(),
        json!(peak_held_bytes as f64 / MIB),
    );
    if waves.len() > 1 {
        m.insert("batch_stats".into(), Value::Array(waves));
    }
    m
}
