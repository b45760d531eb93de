//! An automatic, token-level prefix cache across requests (SGLang's RadixAttention, in blocks):
//! every block a sequence fills becomes a node of a tree keyed by tokens, so a later request
//! that begins with the same tokens, a previous turn's reply included, attends to those blocks
//! instead of computing them again.
//!
//! - A node is one block holding a run of tokens from some position; its children continue it,
//!   each after some number of its tokens (a request that shares only part of a block continues
//!   in a block of its own). Matching walks the tree token by token, so a prefix of 50 tokens is
//!   reused as 50, not as the 48 that fill whole blocks: the partial block is shared, slot by
//!   slot (the host checks each slot holds the token at the position), or copied into the new
//!   request's own block with `partial=copy`.
//! - Blocks are cached the moment they are placed, so requests admitted together share too; a
//!   sequence's last block is read by others only up to the tokens it already holds.
//! - At release the sequence's blocks stay in the tree with the tokens it reports (its reply
//!   included), unreferenced. When blocks run short, or the cache holds more than `budget`
//!   blocks, the least recently used unreferenced leaves are evicted first.
//!
//! Options: `budget` (blocks the strategy may hold, live and cached; 0 means the whole pool),
//! `partial` (`share` or `copy`).

use nanohost_strategy_api::*;
use std::collections::HashMap;

struct Node {
    block: u32,
    /// Position of the block's slot 0.
    start: u32,
    /// The tokens known to be in its first slots.
    tokens: Vec<u32>,
    parent: Option<usize>,
    /// How many of the parent's tokens come before it.
    attach: u32,
    children: Vec<usize>,
    /// Live sequences whose context holds it.
    refs: u32,
    last_used: u64,
    /// Steps seen (`on_step` calls) when it was placed: a block placed in the current step is
    /// computed by that step, so it can be shared but not yet copied.
    epoch: u64,
}

struct Seq {
    /// Cached nodes the context begins with, and how many tokens of each.
    path: Vec<(usize, u32)>,
    /// The sequence's own blocks, from `own_start`.
    own: Vec<usize>,
    own_start: u32,
    end: u32,
}

#[derive(Default)]
struct Counters {
    hit_tokens: u64,
    copied_tokens: u64,
    evicted_blocks: u64,
}

pub struct Radix {
    pool: PoolInfo,
    budget: usize,
    copy_partial: bool,
    free: Vec<u32>,
    nodes: Vec<Option<Node>>,
    roots: Vec<usize>,
    seqs: HashMap<u64, Seq>,
    clock: u64,
    epoch: u64,
    n: Counters,
}

impl Radix {
    fn node(&self, i: usize) -> &Node {
        self.nodes[i].as_ref().expect("live node id")
    }

    fn node_mut(&mut self, i: usize) -> &mut Node {
        self.nodes[i].as_mut().expect("live node id")
    }

    /// The longest run of `tokens` (up to `limit`) the tree holds from `pos`, starting at one
    /// of `candidates`: its end and the (node, tokens taken) path.
    fn best_match(
        &self,
        candidates: &[usize],
        pos: u32,
        tokens: &[u32],
        limit: u32,
    ) -> (u32, Vec<(usize, u32)>) {
        let mut best = (pos, Vec::new());
        for &c in candidates {
            let n = self.node(c);
            let room = (limit - pos) as usize;
            let taken = n
                .tokens
                .iter()
                .take(room)
                .zip(&tokens[pos as usize..])
                .take_while(|(a, b)| a == b)
                .count() as u32;
            if taken == 0 {
                continue;
            }
            let (mut end, mut path) = (pos + taken, vec![(c, taken)]);
            let next: Vec<usize> = n
                .children
                .iter()
                .copied()
                .filter(|&k| self.node(k).attach == taken)
                .collect();
            if !next.is_empty() && end < limit {
                let (e, rest) = self.best_match(&next, end, tokens, limit);
                (end, path) = (e, [path, rest].concat());
            }
            if end > best.0 {
                best = (end, path);
            }
        }
        best
    }

    /// Frees blocks until `need` are free, least recently used unreferenced leaves first;
    /// `false` when not enough can be.
    fn make_room(&mut self, need: usize) -> bool {
        while self.free.len() < need {
            if !self.evict_one() {
                return false;
            }
        }
        true
    }

    fn evict_one(&mut self) -> bool {
        let victim = self
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.as_ref().map(|n| (i, n)))
            .filter(|(_, n)| n.refs == 0 && n.children.is_empty())
            .min_by_key(|(_, n)| n.last_used)
            .map(|(i, _)| i);
        let Some(v) = victim else { return false };
        let node = self.nodes[v].take().expect("found");
        match node.parent {
            Some(p) => self.node_mut(p).children.retain(|&c| c != v),
            None => self.roots.retain(|&c| c != v),
        }
        self.free.push(node.block);
        self.n.evicted_blocks += 1;
        true
    }

    fn add_node(
        &mut self,
        parent: Option<usize>,
        attach: u32,
        start: u32,
        tokens: Vec<u32>,
    ) -> usize {
        let block = self.free.pop().expect("room made");
        let node = Node {
            block,
            start,
            tokens,
            parent,
            attach,
            children: Vec::new(),
            refs: 1,
            last_used: self.clock,
            epoch: self.epoch,
        };
        let id = match self.nodes.iter().position(Option::is_none) {
            Some(i) => {
                self.nodes[i] = Some(node);
                i
            }
            None => {
                self.nodes.push(Some(node));
                self.nodes.len() - 1
            }
        };
        match parent {
            Some(p) => self.node_mut(p).children.push(id),
            None => self.roots.push(id),
        }
        id
    }

    /// The sequence's own span, holding positions `own_start..end`.
    fn own_span(&self, s: &Seq) -> Span {
        Span::shared(
            s.own
                .iter()
                .map(|&i| self.node(i).block)
                .collect::<Vec<_>>(),
            s.own_start,
            s.end - s.own_start,
        )
    }

    fn blocks_held(&self) -> usize {
        (self.pool.num_blocks as usize) - self.free.len()
    }
}

impl KvStrategy for Radix {
    fn new(pool: PoolInfo, options: &Options) -> Result<Self, String> {
        let budget = match options.u32("budget", 0)? as usize {
            0 => pool.num_blocks as usize,
            b => b.min(pool.num_blocks as usize),
        };
        let copy_partial = match options.text("partial", "share").as_str() {
            "share" => false,
            "copy" => true,
            other => {
                return Err(format!(
                    "option `partial` must be share or copy, got `{other}`"
                ))
            }
        };
        let free = (0..pool.num_blocks).rev().collect();
        Ok(Radix {
            pool,
            budget,
            copy_partial,
            free,
            nodes: Vec::new(),
            roots: Vec::new(),
            seqs: HashMap::new(),
            clock: 0,
            epoch: 0,
            n: Counters::default(),
        })
    }

    fn admit(&mut self, r: &Request) -> Result<Admission, String> {
        let (bs, len) = (self.pool.block_size, r.tokens.len() as u32);
        self.clock += 1;
        // The last token is always computed: its logits give the first output.
        let roots = self.roots.clone();
        let (mut reused, mut path) = self.best_match(&roots, 0, &r.tokens, len - 1);
        // A partly taken last node is copied into the request's own first block instead.
        let mut copy = None;
        if self.copy_partial {
            if let Some(&(last, taken)) = path.last() {
                let n = self.node(last);
                if (taken < n.tokens.len() as u32 || taken < bs) && n.epoch < self.epoch {
                    path.pop();
                    copy = Some((last, taken));
                }
            }
        }
        for &(i, _) in &path {
            let clock = self.clock;
            let n = self.node_mut(i);
            n.refs += 1;
            n.last_used = clock;
        }
        let own_start = copy.map_or(reused, |(c, _)| self.node(c).start);
        if let Some((c, _)) = copy {
            self.node_mut(c).refs += 1; // not evicted while copied from
        }
        let need = (len - own_start).div_ceil(bs) as usize;
        if !self.make_room(need) {
            for &(i, _) in path.iter().chain(copy.iter()) {
                self.node_mut(i).refs -= 1;
            }
            return Ok(Admission::NoRoom);
        }
        let (mut parent, mut attach) = path.last().map_or((None, 0), |&(i, t)| (Some(i), t));
        let mut own = Vec::with_capacity(need);
        for k in 0..need as u32 {
            let from = own_start + k * bs;
            let node = self.add_node(
                parent,
                attach,
                from,
                r.tokens[from as usize..(from + bs).min(len) as usize].to_vec(),
            );
            own.push(node);
            (parent, attach) = (Some(node), bs);
        }
        let mut copies = Vec::new();
        if let Some((c, taken)) = copy {
            let src = self.node(c).block * bs;
            copies.push(CopyJob {
                src,
                dst: self.node(own[0]).block * bs,
                len: taken,
            });
            self.node_mut(c).refs -= 1;
            self.n.copied_tokens += taken as u64;
            reused = own_start + taken;
        }
        self.n.hit_tokens += reused as u64;
        // Cached path: full nodes run together into one span; a partly taken one ends it.
        let mut spans: Vec<Span> = Vec::new();
        for &(i, taken) in &path {
            let n = self.node(i);
            match spans.last_mut() {
                Some(s) if s.len % bs == 0 && s.end_pos() == n.start => {
                    s.blocks.push(n.block);
                    s.len += taken;
                }
                _ => spans.push(Span::shared(vec![n.block], n.start, taken)),
            }
        }
        let s = Seq {
            path,
            own,
            own_start,
            end: len,
        };
        spans.push(self.own_span(&s));
        self.seqs.insert(r.seq_id, s);
        let context = (0..spans.len() as u32).collect::<Vec<_>>();
        let plan = Plan {
            spans: spans.into(),
            jobs: vec![ComputeJob {
                context: context.into(),
                len: len - reused,
            }]
            .into(),
            copies: copies.into(),
            mode: AttentionMode::Flat,
        };
        Ok(Admission::Admitted(plan))
    }

    fn grow(&mut self, seq: u64, target_len: u32) -> Result<Growth, String> {
        let bs = self.pool.block_size;
        let Some(s) = self.seqs.get(&seq) else {
            return Err(format!("grow for unknown sequence {seq}"));
        };
        let (held, last, own_start) = (
            s.own.len() as u32,
            *s.own.last().expect("a sequence owns a block"),
            s.own_start,
        );
        let need = (target_len - own_start).div_ceil(bs).saturating_sub(held) as usize;
        if need > 0 {
            if !self.make_room(need) {
                return Ok(Growth::NoRoom);
            }
            let (mut parent, mut start) = (last, own_start + held * bs);
            for _ in 0..need {
                let node = self.add_node(Some(parent), bs, start, Vec::new());
                self.seqs.get_mut(&seq).expect("checked").own.push(node);
                (parent, start) = (node, start + bs);
            }
        }
        let s = self.seqs.get_mut(&seq).expect("checked");
        s.end = target_len;
        let s = &self.seqs[&seq];
        Ok(Growth::Grown(self.own_span(s)))
    }

    fn on_step(&mut self, step: &StepInfo) -> Result<(), String> {
        self.epoch += 1;
        // Decode tokens become matchable in the sequence's own blocks.
        for a in step.appended.iter() {
            let Some(s) = self.seqs.get(&a.seq_id) else {
                continue;
            };
            let Some(&node) = s
                .own
                .get(((a.pos - s.own_start) / self.pool.block_size) as usize)
            else {
                continue;
            };
            let n = self.node_mut(node);
            if n.start + n.tokens.len() as u32 == a.pos {
                n.tokens.push(a.token);
            }
        }
        Ok(())
    }

    fn release(&mut self, seq: u64, tokens: &[u32]) -> Result<(), String> {
        let s = self
            .seqs
            .remove(&seq)
            .ok_or(format!("release of unknown sequence {seq}"))?;
        self.clock += 1;
        let bs = self.pool.block_size as usize;
        for &(i, _) in &s.path {
            self.node_mut(i).refs -= 1;
        }
        for &i in &s.own {
            let clock = self.clock;
            let n = self.node_mut(i);
            let start = n.start as usize;
            // What the pool holds for it: the tokens the host reports, prompt and reply.
            n.tokens = tokens[start.min(tokens.len())..(start + bs).min(tokens.len())].to_vec();
            n.refs -= 1;
            n.last_used = clock;
        }
        while self.blocks_held() > self.budget && self.evict_one() {}
        Ok(())
    }

    fn stats(&self) -> StrategyStats {
        let cached = self.nodes.iter().flatten().filter(|n| n.refs == 0).count() as u64;
        let counter = |name: &str, value: u64| Counter {
            name: name.into(),
            value,
        };
        StrategyStats {
            blocks_in_use: self.blocks_held() as u32,
            counters: vec![
                counter("cache_hit_tokens", self.n.hit_tokens),
                counter("cache_copied_tokens", self.n.copied_tokens),
                counter("cache_blocks_evicted", self.n.evicted_blocks),
                counter("cached_blocks", cached),
            ]
            .into(),
        }
    }
}

export_strategy!(
    Radix,
    name: "radix",
    version: env!("CARGO_PKG_VERSION"),
    description: "Radix Prefix Cache: token-level prefix reuse across requests and turns, LRU eviction under a block budget",
);
