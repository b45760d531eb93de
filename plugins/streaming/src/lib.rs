//! StreamingLLM (Xiao et al., 2023, "Efficient Streaming Language Models with Attention
//! Sinks"): a sequence keeps its first `sinks` tokens (the attention sinks) and its `window`
//! most recent tokens; everything between is evicted. Each kept token keeps its true position.
//!
//! Memory: a sequence's cache is `sinks + window` slots over its blocks, in order: the sinks in
//! the first `sinks` slots, then a ring of exactly `window` slots. Position `p` of the window
//! lives at cache slot `sinks + (p - sinks) % window`, so a new token overwrites the slot of the
//! token it evicts, no block is taken or freed once the ring is full, and a sequence never holds
//! more than `ceil((sinks + window) / block_size)` blocks, nor more than standard would for a
//! context that fits. The window in position order is at most two runs of the ring (before and
//! after its wrap point): two spans, the first starting wherever the oldest kept token sits,
//! sharing a block with the sinks' span or with each other where they meet.
//!
//! Prefill: a prompt that fits `sinks + window` is computed at once, like standard. A longer one
//! is computed in pieces of at most `piece` tokens, one piece per step: each piece evicts as
//! many of the oldest window tokens as it adds. So a prompt token attends to the sinks and to
//! between `window - piece + 1` and `window` recent tokens (itself included); a decode token to
//! the sinks and exactly `window`. The paper's evaluation feeds tokens one at a time (`piece`
//! 1, every token sees exactly the window); a larger piece trades that for fewer steps.
//!
//! Difference from the paper: there a kept token's position is its index in the cache (keys are
//! re-rotated as the window slides); here every kept token keeps its original position, so
//! decode positions keep growing past the window. Quality is what the host measures, not
//! something this plugin claims.

use nanohost_strategy_api::*;
use std::collections::HashMap;

struct Seq {
    blocks: Vec<u32>,
    /// One past the last placed position.
    end: u32,
    /// The context last answered.
    spans: Vec<Span>,
}

pub struct Streaming {
    pool: PoolInfo,
    sinks: u32,
    window: u32,
    piece: u32,
    free: Vec<u32>,
    seqs: HashMap<u64, Seq>,
}

impl Streaming {
    /// Blocks a sequence holds once it reaches `end` positions.
    fn blocks_at(&self, end: u32) -> usize {
        end.min(self.sinks + self.window)
            .div_ceil(self.pool.block_size) as usize
    }

    /// Takes blocks so that `s` holds `need`; `false` (nothing taken) when short.
    fn reserve(free: &mut Vec<u32>, s: &mut Seq, need: usize) -> bool {
        let more = need.saturating_sub(s.blocks.len());
        if more > free.len() {
            return false;
        }
        s.blocks.extend(free.drain(free.len() - more..));
        true
    }

    /// A span over cache slots `first..first + len` of `s`, for positions from `start`.
    fn run(&self, s: &Seq, first: u32, len: u32, start: u32) -> Span {
        let bs = self.pool.block_size;
        let blocks = s.blocks[(first / bs) as usize..=((first + len - 1) / bs) as usize].to_vec();
        Span::private(blocks, start, len).from_slot(first % bs)
    }

    /// The context of `s` holding positions up to `end`: sinks, then the window in position
    /// order (one or two runs of the ring).
    fn context(&self, s: &Seq, end: u32) -> Vec<Span> {
        let mut spans = vec![self.run(s, 0, end.min(self.sinks), 0)];
        if end > self.sinks {
            let lo = self.sinks.max(end.saturating_sub(self.window));
            let first = (lo - self.sinks) % self.window;
            let n = end - lo;
            let run = n.min(self.window - first);
            spans.push(self.run(s, self.sinks + first, run, lo));
            if run < n {
                spans.push(self.run(s, self.sinks, n - run, lo + run));
            }
        }
        spans
    }
}

impl KvStrategy for Streaming {
    fn new(pool: PoolInfo, options: &Options) -> Result<Self, String> {
        let sinks = options.u32("sinks", 4)?;
        let window = options.u32("window", 1020)?;
        let piece = options.u32("piece", 256)?.min(window);
        if window == 0 || sinks == 0 || piece == 0 {
            return Err(format!("sinks, window and piece must be at least 1 (got sinks {sinks}, window {window}, piece {piece})"));
        }
        // Blocks are taken as a sequence grows (at most `blocks_at(u32::MAX)` of them), so a
        // pool sized for short prompts serves any window.
        Ok(Streaming {
            pool,
            sinks,
            window,
            piece,
            free: (0..pool.num_blocks).rev().collect(),
            seqs: HashMap::new(),
        })
    }

    fn admit(&mut self, r: &Request) -> Result<Admission, String> {
        // The first piece: everything that fits the sinks and the window.
        let end = (r.tokens.len() as u32).min(self.sinks + self.window);
        let mut s = Seq {
            blocks: Vec::new(),
            end,
            spans: Vec::new(),
        };
        let need = self.blocks_at(end);
        if !Self::reserve(&mut self.free, &mut s, need) {
            return Ok(Admission::NoRoom);
        }
        s.spans = self.context(&s, end);
        let n = s.spans.len() as u32;
        let plan = Plan::new(
            s.spans.clone(),
            vec![ComputeJob {
                context: (0..n).collect::<Vec<_>>().into(),
                len: end,
            }],
            AttentionMode::Flat,
        );
        self.seqs.insert(r.seq_id, s);
        Ok(Admission::Admitted(plan))
    }

    fn grow(&mut self, seq: u64, target_len: u32) -> Result<Growth, String> {
        let Some(mut s) = self.seqs.remove(&seq) else {
            return Err(format!("grow for unknown sequence {seq}"));
        };
        let end = target_len.min(s.end + self.piece);
        let need = self.blocks_at(end);
        if !Self::reserve(&mut self.free, &mut s, need) {
            self.seqs.insert(seq, s);
            return Ok(Growth::NoRoom);
        }
        let spans = self.context(&s, end);
        let (old, last) = (&s.spans, spans.len() - 1);
        let grown = spans.len() == old.len()
            && spans[..last] == old[..last]
            && (spans[last].start_pos, spans[last].first_slot)
                == (old[last].start_pos, old[last].first_slot)
            && spans[last].blocks.starts_with(&old[last].blocks);
        let answer = if grown {
            Growth::Grown(spans[last].clone())
        } else {
            Growth::Replaced(Context {
                spans: spans.clone().into(),
                copies: Default::default(),
            })
        };
        s.spans = spans;
        s.end = end;
        self.seqs.insert(seq, s);
        Ok(answer)
    }

    fn release(&mut self, seq: u64, _tokens: &[u32]) -> Result<(), String> {
        let s = self
            .seqs
            .remove(&seq)
            .ok_or(format!("release of unknown sequence {seq}"))?;
        self.free.extend(s.blocks);
        Ok(())
    }

    fn stats(&self) -> StrategyStats {
        StrategyStats {
            blocks_in_use: self.pool.num_blocks - self.free.len() as u32,
            counters: Default::default(),
        }
    }
}

export_strategy!(
    Streaming,
    name: "streaming",
    version: env!("CARGO_PKG_VERSION"),
    description: "StreamingLLM: attention sinks plus a sliding window of recent tokens; the rest evicted",
);
