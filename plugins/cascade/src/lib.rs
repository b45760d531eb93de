//! Prefix sharing discovered from tokens: every full block of a prompt before the block holding
//! its last token is content-addressed (a hash chained from the previous block, tokens verified
//! on a hit) and reference counted, so sequences that begin with the same tokens hold those
//! blocks once. The rest of a prompt (the partial block of a shared prefix included) and the
//! decoded tokens live in a private span.
//!
//! The plugin asks for `AttentionMode::Cascade`: each step the host groups the sequences whose
//! contexts begin with the same blocks and attends those blocks once for the whole group.

use nanohost_strategy_api::*;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

struct SharedBlock {
    hash: u64,
    tokens: Vec<u32>,
    refs: u32,
}

struct Seq {
    shared: Vec<u32>,
    private: Vec<u32>,
}

pub struct Cascade {
    pool: PoolInfo,
    free: Vec<u32>,
    by_hash: HashMap<u64, u32>,
    shared: HashMap<u32, SharedBlock>,
    seqs: HashMap<u64, Seq>,
    hit_blocks: u64,
    new_shared_blocks: u64,
}

fn chain(parent: u64, tokens: &[u32]) -> u64 {
    let mut h = DefaultHasher::new();
    (parent, tokens).hash(&mut h);
    h.finish()
}

impl Cascade {
    fn bs(&self) -> usize {
        self.pool.block_size as usize
    }

    fn take(&mut self, n: usize) -> Vec<u32> {
        self.free.split_off(self.free.len() - n)
    }

    fn private_span(&self, seq: u64, len: u32) -> Span {
        let s = &self.seqs[&seq];
        let start = (s.shared.len() * self.bs()) as u32;
        Span::private(s.private.clone(), start, len - start)
    }
}

impl KvStrategy for Cascade {
    fn new(pool: PoolInfo, _options: &Options) -> Result<Self, String> {
        Ok(Cascade {
            pool,
            free: (0..pool.num_blocks).rev().collect(),
            by_hash: HashMap::new(),
            shared: HashMap::new(),
            seqs: HashMap::new(),
            hit_blocks: 0,
            new_shared_blocks: 0,
        })
    }

    fn admit(&mut self, r: &Request) -> Result<Admission, String> {
        let (bs, len) = (self.bs(), r.tokens.len());
        // Full blocks strictly before the block of the last token: the last token always lands
        // in the private span, where it is computed and decoding continues.
        let k = (len - 1) / bs;
        let mut hashes = Vec::with_capacity(k);
        let mut parent = 0;
        for i in 0..k {
            parent = chain(parent, &r.tokens[i * bs..(i + 1) * bs]);
            hashes.push(parent);
        }
        let hits = hashes
            .iter()
            .enumerate()
            .take_while(|(i, h)| {
                self.by_hash
                    .get(h)
                    .is_some_and(|b| self.shared[b].tokens == r.tokens[i * bs..(i + 1) * bs])
            })
            .count();
        let private = (len - k * bs).div_ceil(bs);
        if (k - hits) + private > self.free.len() {
            return Ok(Admission::NoRoom);
        }
        let mut shared = Vec::with_capacity(k);
        for (i, &h) in hashes.iter().enumerate() {
            let block = if i < hits {
                let b = self.by_hash[&h];
                self.shared.get_mut(&b).expect("indexed").refs += 1;
                self.hit_blocks += 1;
                b
            } else {
                let b = self.take(1)[0];
                // A different block with this hash (tokens differ) keeps its entry.
                self.by_hash.entry(h).or_insert(b);
                self.shared.insert(
                    b,
                    SharedBlock {
                        hash: h,
                        tokens: r.tokens[i * bs..(i + 1) * bs].to_vec(),
                        refs: 1,
                    },
                );
                self.new_shared_blocks += 1;
                b
            };
            shared.push(block);
        }
        let private = self.take(private);
        self.seqs.insert(
            r.seq_id,
            Seq {
                shared: shared.clone(),
                private,
            },
        );
        let mut spans = Vec::new();
        if k > 0 {
            spans.push(Span::shared(shared, 0, (k * bs) as u32));
        }
        spans.push(self.private_span(r.seq_id, len as u32));
        let cached = (hits * bs) as u32;
        let context: Vec<u32> = (0..spans.len() as u32).collect();
        let jobs = vec![ComputeJob {
            context: context.into(),
            len: len as u32 - cached,
        }];
        Ok(Admission::Admitted(Plan::new(
            spans,
            jobs,
            AttentionMode::Cascade,
        )))
    }

    fn grow(&mut self, seq: u64, new_len: u32) -> Result<Growth, String> {
        let bs = self.bs();
        let Some(s) = self.seqs.get(&seq) else {
            return Err(format!("grow for unknown sequence {seq}"));
        };
        let need = (new_len as usize - s.shared.len() * bs)
            .div_ceil(bs)
            .saturating_sub(s.private.len());
        if need > self.free.len() {
            return Ok(Growth::NoRoom);
        }
        let extra = self.take(need);
        self.seqs
            .get_mut(&seq)
            .expect("checked")
            .private
            .extend(extra);
        Ok(Growth::Grown(self.private_span(seq, new_len)))
    }

    fn release(&mut self, seq: u64, _tokens: &[u32]) -> Result<(), String> {
        let s = self
            .seqs
            .remove(&seq)
            .ok_or(format!("release of unknown sequence {seq}"))?;
        self.free.extend(s.private);
        for b in s.shared {
            let e = self.shared.get_mut(&b).expect("held");
            e.refs -= 1;
            if e.refs == 0 {
                let h = e.hash;
                self.shared.remove(&b);
                if self.by_hash.get(&h) == Some(&b) {
                    self.by_hash.remove(&h);
                }
                self.free.push(b);
            }
        }
        Ok(())
    }

    fn stats(&self) -> StrategyStats {
        let counter = |name: &str, value: u64| Counter {
            name: name.into(),
            value,
        };
        StrategyStats {
            blocks_in_use: self.pool.num_blocks - self.free.len() as u32,
            counters: vec![
                counter("prefix_hit_blocks", self.hit_blocks),
                counter("shared_blocks_computed", self.new_shared_blocks),
            ]
            .into(),
        }
    }
}

export_strategy!(
    Cascade,
    name: "cascade",
    version: env!("CARGO_PKG_VERSION"),
    description: "Cascade Attention (Prefix Sharing): shared prompt prefixes stored once and attended once per group",
);
