//! Content-addressed chunk KV, the policy of the `chunked` and `chunked-reuse` plugins.
//!
//! A chunked request is a system prompt, contexts and a query ([`Chunk`]s of the request). Each
//! distinct system prompt and context is computed once and stored once, addressed by the
//! SHA-256 the host gives it, its tokens verified on a hit; a request's context is the spans of
//! its chunks followed by a private span for its query and what it generates.
//!
//! How a chunk is computed: a system prompt alone at position 0; a context attending to the
//! system prompt before it (and to nothing else), at the position it first appears. So a chunk
//! reused where it was computed, after the same system prompt and directly after it (the first
//! context), is an *exact* hit: full prefill would produce the same KV. Anywhere else it is an
//! *approximate* hit: the host re-rotates its keys to where it sits (exact for RoPE), but the KV
//! did not see the contexts before it. Attending only to the system prompt keeps a context's KV
//! independent of which other contexts a request combines it with, which is what makes it
//! reusable at all; the cost in output is measured by the host (`fidelity` in results).
//!
//! `RETAIN = false` (`chunked`): a chunk lives while a live sequence uses it, so duplicates
//! within a batch are computed once. `RETAIN = true` (`chunked-reuse`): chunks stay after their
//! last user, under the pool as the memory budget; when a request needs room, the least recently
//! used chunks that no live sequence uses are evicted (never one in use).

use nanohost_strategy_api::*;
use std::collections::HashMap;

struct Stored {
    tokens: Vec<u32>,
    blocks: Vec<u32>,
    /// Position its keys were rotated for (where it was computed).
    rotated_pos: u32,
    /// The system prompt it attended to (none for a system prompt).
    attended: Option<[u8; 32]>,
    users: u32,
    last_used: u64,
}

struct Seq {
    chunks: Vec<[u8; 32]>,
    /// Blocks of chunks repeated within the request (computed in place, not stored).
    repeats: Vec<u32>,
    private: Vec<u32>,
    private_start: u32,
}

#[derive(Default)]
struct Counters {
    hits: u64,
    hit_tokens: u64,
    exact: u64,
    approximate: u64,
    misses: u64,
    evictions: u64,
}

pub struct ChunkStore<const RETAIN: bool> {
    pool: PoolInfo,
    free: Vec<u32>,
    chunks: HashMap<[u8; 32], Stored>,
    seqs: HashMap<u64, Seq>,
    clock: u64,
    n: Counters,
}

/// A chunk of this request that will be stored (or is), and how.
enum Placed {
    Hit([u8; 32]),
    Miss {
        hash: [u8; 32],
        attended: Option<[u8; 32]>,
    },
    /// The same chunk a second time in one request: a block may appear only once in a context,
    /// so this copy is computed in place in blocks of the request's own.
    Repeat,
}

impl<const RETAIN: bool> ChunkStore<RETAIN> {
    fn blocks_for(&self, len: u32) -> usize {
        len.div_ceil(self.pool.block_size) as usize
    }

    fn take(&mut self, n: usize) -> Vec<u32> {
        self.free.split_off(self.free.len() - n)
    }

    /// Frees unused chunks, least recently used first, until `need` blocks are free; never
    /// one in use or one in `keep`. `false` if even that is not enough.
    fn make_room(&mut self, need: usize, keep: &[[u8; 32]]) -> bool {
        while self.free.len() < need {
            let victim = self
                .chunks
                .iter()
                .filter(|(h, c)| c.users == 0 && !keep.contains(h))
                .min_by_key(|(_, c)| c.last_used)
                .map(|(h, _)| *h);
            let Some(h) = victim else { return false };
            let c = self.chunks.remove(&h).expect("found");
            self.free.extend(c.blocks);
            self.n.evictions += 1;
        }
        true
    }

    fn private_span(&self, seq: &Seq, len: u32) -> Span {
        Span::private(
            seq.private.clone(),
            seq.private_start,
            len - seq.private_start,
        )
    }

    fn admit_plain(&mut self, r: &Request) -> Result<Admission, String> {
        let len = r.tokens.len() as u32;
        let need = self.blocks_for(len);
        if !self.make_room(need, &[]) {
            return Ok(Admission::NoRoom);
        }
        let seq = Seq {
            chunks: Vec::new(),
            repeats: Vec::new(),
            private: self.take(need),
            private_start: 0,
        };
        let span = self.private_span(&seq, len);
        self.seqs.insert(r.seq_id, seq);
        Ok(Admission::Admitted(Plan::new(
            vec![span],
            vec![ComputeJob {
                context: vec![0].into(),
                len,
            }],
            AttentionMode::Flat,
        )))
    }
}

impl<const RETAIN: bool> KvStrategy for ChunkStore<RETAIN> {
    fn new(pool: PoolInfo, _options: &Options) -> Result<Self, String> {
        Ok(ChunkStore {
            pool,
            free: (0..pool.num_blocks).rev().collect(),
            chunks: HashMap::new(),
            seqs: HashMap::new(),
            clock: 0,
            n: Counters::default(),
        })
    }

    fn admit(&mut self, r: &Request) -> Result<Admission, String> {
        if r.chunks.is_empty() {
            return self.admit_plain(r);
        }
        let tokens = &r.tokens[..];
        // Stored chunks: everything before the query. The query and anything after it (the
        // generated tokens of a request recomputed after preemption) are private.
        let stored: Vec<&Chunk> = r
            .chunks
            .iter()
            .filter(|c| c.kind != ChunkKind::Query)
            .collect();
        let private_start = stored.last().map_or(0, |c| c.start + c.len);
        let system = stored
            .first()
            .filter(|c| c.kind == ChunkKind::SystemPrompt)
            .map(|c| c.hash);
        let mut placed = Vec::with_capacity(stored.len());
        let mut new_blocks = 0;
        for c in &stored {
            let text = &tokens[c.start as usize..(c.start + c.len) as usize];
            let repeated = placed.iter().any(|p: &Placed| matches!(p, Placed::Hit(h) | Placed::Miss { hash: h, .. } if *h == c.hash));
            if repeated {
                new_blocks += self.blocks_for(c.len);
                placed.push(Placed::Repeat);
                continue;
            }
            match self.chunks.get(&c.hash) {
                Some(s) if s.tokens == text => placed.push(Placed::Hit(c.hash)),
                Some(_) => return Err(format!("two different texts share chunk address {:02x?}..; the host's addresses must be unique", &c.hash[..4])),
                None => {
                    new_blocks += self.blocks_for(c.len);
                    let attended = if c.kind == ChunkKind::Context { system } else { None };
                    placed.push(Placed::Miss { hash: c.hash, attended });
                }
            }
        }
        let private_blocks = self.blocks_for(tokens.len() as u32 - private_start);
        let hits: Vec<[u8; 32]> = placed
            .iter()
            .filter_map(|p| {
                if let Placed::Hit(h) = p {
                    Some(*h)
                } else {
                    None
                }
            })
            .collect();
        if !self.make_room(new_blocks + private_blocks, &hits) {
            return Ok(Admission::NoRoom);
        }
        self.clock += 1;
        let (mut spans, mut jobs, mut order, mut repeats) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (i, (c, p)) in stored.iter().zip(placed).enumerate() {
            // A system prompt alone; a context after the system prompt (span 0) only.
            let job = ComputeJob {
                context: if c.kind == ChunkKind::Context && system.is_some() {
                    vec![0, i as u32]
                } else {
                    vec![i as u32]
                }
                .into(),
                len: c.len,
            };
            let hash = match p {
                Placed::Repeat => {
                    self.n.misses += 1;
                    let blocks = self.take(self.blocks_for(c.len));
                    spans.push(Span::private(blocks.clone(), c.start, c.len));
                    repeats.extend(blocks);
                    jobs.push(job);
                    continue;
                }
                Placed::Hit(h) => {
                    let s = &self.chunks[&h];
                    // Exact: computed here, after this system prompt, with nothing between.
                    let exact = s.rotated_pos == c.start
                        && s.attended
                            == (if c.kind == ChunkKind::Context {
                                system
                            } else {
                                None
                            })
                        && i <= 1;
                    self.n.hits += 1;
                    self.n.hit_tokens += c.len as u64;
                    if exact {
                        self.n.exact += 1;
                    } else {
                        self.n.approximate += 1;
                    }
                    h
                }
                Placed::Miss { hash, attended } => {
                    self.n.misses += 1;
                    let blocks = self.take(self.blocks_for(c.len));
                    let tokens = tokens[c.start as usize..(c.start + c.len) as usize].to_vec();
                    self.chunks.insert(
                        hash,
                        Stored {
                            tokens,
                            blocks,
                            rotated_pos: c.start,
                            attended,
                            users: 0,
                            last_used: 0,
                        },
                    );
                    jobs.push(job);
                    hash
                }
            };
            let s = self.chunks.get_mut(&hash).expect("placed");
            s.users += 1;
            s.last_used = self.clock;
            spans.push(Span::shared(s.blocks.clone(), c.start, c.len).rotated_for(s.rotated_pos));
            order.push(hash);
        }
        let seq = Seq {
            chunks: order,
            repeats,
            private: self.take(private_blocks),
            private_start,
        };
        spans.push(self.private_span(&seq, tokens.len() as u32));
        // The query (and any tail) attends to everything before it.
        jobs.push(ComputeJob {
            context: (0..spans.len() as u32).collect::<Vec<_>>().into(),
            len: tokens.len() as u32 - private_start,
        });
        self.seqs.insert(r.seq_id, seq);
        Ok(Admission::Admitted(Plan::new(
            spans,
            jobs,
            AttentionMode::Flat,
        )))
    }

    fn grow(&mut self, seq: u64, new_len: u32) -> Result<Growth, String> {
        let Some(s) = self.seqs.get(&seq) else {
            return Err(format!("grow for unknown sequence {seq}"));
        };
        let need = self
            .blocks_for(new_len - s.private_start)
            .saturating_sub(s.private.len());
        let keep = s.chunks.clone();
        if !self.make_room(need, &keep) {
            return Ok(Growth::NoRoom);
        }
        let extra = self.take(need);
        let s = self.seqs.get_mut(&seq).expect("checked");
        s.private.extend(extra);
        let s = &self.seqs[&seq];
        Ok(Growth::Grown(self.private_span(s, new_len)))
    }

    fn release(&mut self, seq: u64, _tokens: &[u32]) -> Result<(), String> {
        let s = self
            .seqs
            .remove(&seq)
            .ok_or(format!("release of unknown sequence {seq}"))?;
        self.free.extend(s.private);
        self.free.extend(s.repeats);
        for h in s.chunks {
            let c = self.chunks.get_mut(&h).expect("held");
            c.users -= 1;
            if c.users == 0 && !RETAIN {
                let c = self.chunks.remove(&h).expect("held");
                self.free.extend(c.blocks);
            }
        }
        Ok(())
    }

    fn stats(&self) -> StrategyStats {
        let n = &self.n;
        let counters = [
            ("chunk_hits", n.hits),
            ("chunk_hit_tokens", n.hit_tokens),
            ("exact_chunk_hits", n.exact),
            ("approximate_chunk_hits", n.approximate),
            ("chunk_misses", n.misses),
            ("chunk_evictions", n.evictions),
            ("chunks_stored", self.chunks.len() as u64),
        ];
        StrategyStats {
            blocks_in_use: self.pool.num_blocks - self.free.len() as u32,
            counters: counters
                .iter()
                .map(|(name, value)| Counter {
                    name: (*name).into(),
                    value: *value,
                })
                .collect::<Vec<_>>()
                .into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(seq_id: u64, system: u32, sys_len: u32, query_len: u32) -> Request {
        let mut tokens: Vec<u32> = (0..sys_len).map(|i| system * 100 + i).collect();
        tokens.extend((0..query_len).map(|i| 9000 + seq_id as u32 * 10 + i));
        let chunk = |kind, start, len, tag: u8| Chunk {
            kind,
            start,
            len,
            hash: [tag; 32],
        };
        let chunks = vec![
            chunk(ChunkKind::SystemPrompt, 0, sys_len, system as u8),
            chunk(ChunkKind::Query, sys_len, query_len, 200 + seq_id as u8),
        ];
        Request {
            seq_id,
            tokens: tokens.into(),
            chunks: chunks.into(),
        }
    }

    #[test]
    fn a_chunk_in_use_is_never_evicted() {
        let mut s = ChunkStore::<true>::new(
            PoolInfo {
                num_blocks: 4,
                block_size: 4,
                bytes_per_block: 1,
                bytes_per_token: 1,
                num_layers: 1,
            },
            &Options::new(&[]),
        )
        .unwrap();
        // System prompt 1 (one block) + a private block.
        assert!(matches!(
            s.admit(&request(1, 1, 4, 2)).unwrap(),
            Admission::Admitted(_)
        ));
        // System prompt 2 needs two blocks + two private: only two are free and prompt 1 is in use.
        assert!(matches!(
            s.admit(&request(2, 2, 8, 5)).unwrap(),
            Admission::NoRoom
        ));
        assert_eq!(s.n.evictions, 0);
        s.release(1, &[]).unwrap();
        // Retained but unused now: evicted to make room (three blocks free, four needed).
        assert!(matches!(
            s.admit(&request(2, 2, 8, 5)).unwrap(),
            Admission::Admitted(_)
        ));
        assert_eq!((s.n.evictions, s.chunks.len()), (1, 1));
        // And the plain store (no retention) frees a chunk with its last user.
        let mut plain = ChunkStore::<false>::new(
            PoolInfo {
                num_blocks: 4,
                block_size: 4,
                bytes_per_block: 1,
                bytes_per_token: 1,
                num_layers: 1,
            },
            &Options::new(&[]),
        )
        .unwrap();
        plain.admit(&request(1, 1, 4, 2)).unwrap();
        plain.release(1, &[]).unwrap();
        assert_eq!((plain.chunks.len(), plain.free.len()), (0, 4));
    }
}
