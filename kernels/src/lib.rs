//! Attention and KV-cache operations over nanohost's paged KV pool, as candle custom ops.
//!
//! The pool of one layer is a pair of tensors `[num_blocks, block_size, kv_heads, head_dim]`
//! (K and V). A sequence's context is an ordered list of [`KvSpan`]s: runs of pool blocks, each
//! holding `len` tokens from the start of its first block. Every op here has a CPU
//! implementation, which is also the oracle the CUDA implementation is tested against.
//!
//! Data path: the host writes new keys/values with [`write_kv`], then runs
//! [`paged_attention`] for the packed query rows of all sequences in a batch.

mod elem;
mod kv_write;
mod layout;
mod paged_attention;

pub use kv_write::{write_kv, WriteKv};
pub use layout::{context_slot, KvSpan, SeqAttention};
pub use paged_attention::{paged_attention, PagedAttention};
