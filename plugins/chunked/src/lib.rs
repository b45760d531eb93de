//! Chunk KV computed once and stored once while some sequence uses it (see nanohost-chunk-store).

pub use nanohost_chunk_store::ChunkStore;

pub type Chunked = ChunkStore<false>;

nanohost_strategy_api::export_strategy!(
    Chunked,
    name: "chunked",
    version: env!("CARGO_PKG_VERSION"),
    description: "Chunked API: each distinct system prompt and context computed once and stored once, reused (re-rotated) wherever it sits",
);
