//! The standard strategy. Its source is the worked example in nanohost-strategy-api's
//! documentation (`strategy-api/src/example.rs`), kept in one place so that the docs show
//! exactly the plugin that ships.

include!("../../../strategy-api/src/example.rs");
