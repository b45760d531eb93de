//! Chunk KV kept across batches under the pool as its budget, least recently used unused chunks
//! evicted first (see nanohost-chunk-store).

pub use nanohost_chunk_store::ChunkStore;

pub type ChunkedReuse = ChunkStore<true>;

nanohost_strategy_api::export_strategy!(
    ChunkedReuse,
    name: "chunked-reuse",
    version: env!("CARGO_PKG_VERSION"),
    description: "Chunked API (Cross-batch Reuse): chunk KV kept across batches; least recently used chunks not in use evicted",
);
