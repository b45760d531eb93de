//! Strategy plugins: finding them, loading them, and holding them to the plan contract.

pub mod discover;
pub mod ledger;
pub mod load;
pub mod load_error;
pub mod policy;

pub use load::{load_plugin, LoadError, Plugin};
pub use policy::PluginPolicy;
