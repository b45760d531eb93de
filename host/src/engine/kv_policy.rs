//! Which pool blocks hold which sequence's tokens: the policy seam of the engine.
//!
//! The scheduler asks a policy to admit a prompt, to grow a context by a decode slot and to
//! release a finished sequence; the policy answers with block ids only. Strategy plugins
//! implement this seam from outside the process image; [`PrivateBlocks`] is the host's own
//! baseline (every sequence owns its blocks, nothing shared or kept).

use super::sequence::SeqId;
use anyhow::{bail, Result};
use nanohost_kernels::KvSpan;
use std::collections::{HashMap, VecDeque};

/// A prompt's placement: the context holds every prompt token; the first `cached` of them
/// already have their KV in the pool.
#[derive(Clone, Debug, PartialEq)]
pub struct Admission {
    pub context: Vec<KvSpan>,
    pub cached: usize,
}

pub trait KvPolicy {
    /// Places a prompt, or `None` when the pool has no room for it now.
    fn admit(&mut self, seq: SeqId, tokens: &[u32]) -> Result<Option<Admission>>;
    /// Grows a context so it holds `len` tokens, or `None` when there is no room.
    fn grow(&mut self, seq: SeqId, len: usize) -> Result<Option<Vec<KvSpan>>>;
    /// The sequence is finished or preempted; its blocks go back or are retained.
    fn release(&mut self, seq: SeqId) -> Result<()>;
    /// Blocks currently holding KV (live or retained).
    fn blocks_in_use(&self) -> usize;
}

pub struct PrivateBlocks {
    block_size: usize,
    free: VecDeque<u32>,
    owned: HashMap<SeqId, Vec<u32>>,
}

impl PrivateBlocks {
    pub fn new(num_blocks: usize, block_size: usize) -> Self {
        PrivateBlocks { block_size, free: (0..num_blocks as u32).collect(), owned: HashMap::new() }
    }

    fn span(&self, seq: SeqId, len: usize) -> Vec<KvSpan> {
        vec![KvSpan { blocks: self.owned[&seq].clone(), len }]
    }
}

impl KvPolicy for PrivateBlocks {
    fn admit(&mut self, seq: SeqId, tokens: &[u32]) -> Result<Option<Admission>> {
        if self.owned.contains_key(&seq) {
            bail!("sequence {seq} admitted twice");
        }
        let need = tokens.len().div_ceil(self.block_size);
        if need > self.free.len() {
            return Ok(None);
        }
        let blocks = self.free.drain(..need).collect();
        self.owned.insert(seq, blocks);
        Ok(Some(Admission { context: self.span(seq, tokens.len()), cached: 0 }))
    }

    fn grow(&mut self, seq: SeqId, len: usize) -> Result<Option<Vec<KvSpan>>> {
        let Some(have) = self.owned.get(&seq).map(Vec::len) else { bail!("sequence {seq} grown before admission") };
        let need = len.div_ceil(self.block_size);
        if need > have {
            if need - have > self.free.len() {
                return Ok(None);
            }
            let extra: Vec<u32> = self.free.drain(..need - have).collect();
            self.owned.get_mut(&seq).expect("checked").extend(extra);
        }
        Ok(Some(self.span(seq, len)))
    }

    fn release(&mut self, seq: SeqId) -> Result<()> {
        let Some(blocks) = self.owned.remove(&seq) else { bail!("sequence {seq} released twice or never admitted") };
        self.free.extend(blocks);
        Ok(())
    }

    fn blocks_in_use(&self) -> usize {
        self.owned.values().map(Vec::len).sum()
    }
}
