//! A plugin whose root module aborts the process while it is being loaded: `list` must show it
//! as a row with its reason and still list the others.

use abi_stable::export_root_module;
use nanohost_strategy_api::StrategyModRef;

#[export_root_module]
pub fn root() -> StrategyModRef {
    std::process::abort()
}
