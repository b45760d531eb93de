//! The stable ABI between the nanohost host and KV-cache strategy plugins.
//!
//! Not yet defined: the host currently plans KV placement itself (see `host/src/engine/kv_policy.rs`).
