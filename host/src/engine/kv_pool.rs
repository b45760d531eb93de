//! The paged KV pool: all KV memory the host owns, allocated once at start.
//!
//! Per layer one K and one V tensor `[num_blocks, block_size, kv_heads, head_dim]`. Tensors keep
//! their addresses for the whole run (writes are in place), which is what CUDA graphs need later.

use crate::model::Qwen3Config;
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use nanohost_strategy_api::CopyJob;

/// 16 tokens per block: the page size vLLM and FlashInfer default to. Small blocks waste little
/// memory in a sequence's last block and let prefixes share at fine grain (a 50-token prefix
/// shares 3 full blocks = 48 tokens; strategies handle the partial rest), while a block still
/// holds 16 x head_dim contiguous values per head for coalesced GPU reads.
pub const DEFAULT_BLOCK_SIZE: usize = 16;

/// How big the pool should be.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PoolSize {
    Blocks(usize),
    Bytes(usize),
}

pub struct KvPool {
    k: Vec<Tensor>,
    v: Vec<Tensor>,
    block_size: usize,
    num_blocks: usize,
    bytes_per_block: usize,
}

impl KvPool {
    pub fn new(
        cfg: &Qwen3Config,
        size: PoolSize,
        block_size: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        if block_size == 0 {
            bail!("block size must be at least 1 token");
        }
        let bytes_per_block = block_size * cfg.kv_bytes_per_token(dtype.size_in_bytes());
        let num_blocks = match size {
            PoolSize::Blocks(n) => n,
            PoolSize::Bytes(b) => b / bytes_per_block,
        };
        if num_blocks == 0 {
            bail!("the KV pool holds no block: {size:?} is below one block of {bytes_per_block} bytes");
        }
        // One block more than strategies see: the scratch block (see `scratch_slot`).
        let shape = (
            num_blocks + 1,
            block_size,
            cfg.num_key_value_heads,
            cfg.head_dim,
        );
        let (mut k, mut v) = (Vec::new(), Vec::new());
        for _ in 0..cfg.num_hidden_layers {
            k.push(Tensor::zeros(shape, dtype, device)?);
            v.push(Tensor::zeros(shape, dtype, device)?);
        }
        Ok(KvPool {
            k,
            v,
            block_size,
            num_blocks,
            bytes_per_block,
        })
    }

    pub fn layer(&self, layer: usize) -> (&Tensor, &Tensor) {
        (&self.k[layer], &self.v[layer])
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Blocks strategies may plan with.
    pub fn num_blocks(&self) -> usize {
        self.num_blocks
    }

    /// Blocks in memory: strategies' blocks and the scratch block.
    pub fn physical_blocks(&self) -> usize {
        self.num_blocks + 1
    }

    /// A slot no strategy can plan with (its block is past `num_blocks`, which every plan is
    /// checked against): the rows that pad a batch to a CUDA graph's size write and read
    /// their KV there, so they compute real numbers without touching any sequence's KV.
    pub fn scratch_slot(&self) -> u32 {
        (self.num_blocks * self.block_size) as u32
    }

    /// The pool as a strategy sees it.
    pub fn info(&self) -> nanohost_strategy_api::PoolInfo {
        nanohost_strategy_api::PoolInfo {
            num_blocks: self.num_blocks as u32,
            block_size: self.block_size as u32,
            bytes_per_block: self.bytes_per_block as u64,
            bytes_per_token: (self.bytes_per_block / self.block_size) as u64,
            num_layers: self.k.len() as u32,
        }
    }

    /// Runs a plan's slot copies in every layer's K and V: all sources are gathered before any
    /// destination is written (the ledger has checked that none is both).
    pub fn copy_slots(&self, copies: &[CopyJob]) -> Result<()> {
        let src: Vec<u32> = copies.iter().flat_map(|c| c.src..c.src + c.len).collect();
        let dst: Vec<u32> = copies.iter().flat_map(|c| c.dst..c.dst + c.len).collect();
        let device = self.k[0].device();
        let (n, m) = (src.len(), dst.len());
        let (src, dst) = (
            Tensor::from_vec(src, n, device)?,
            Tensor::from_vec(dst, m, device)?,
        );
        for pool in self.k.iter().chain(&self.v) {
            let rows = pool.flatten(0, 1)?.index_select(&src, 0)?;
            nanohost_kernels::write_kv(pool, &rows, &dst)?;
        }
        Ok(())
    }

    /// K plus V bytes of one block over all layers.
    pub fn bytes_per_block(&self) -> usize {
        self.bytes_per_block
    }
}
