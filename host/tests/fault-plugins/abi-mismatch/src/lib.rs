//! A plugin whose root module claims strategy ABI 9.0.0: what a plugin built against a future,
//! incompatible nanohost-strategy-api looks like to this host.

use abi_stable::library::RootModule;
use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{RResult, RString};
use abi_stable::{declare_root_module_statics, export_root_module, StableAbi};
use abi_stable::std_types::RSlice;
use nanohost_strategy_api::{PluginInfo, PluginOption, PoolInfo, StrategyBox};

#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = FutureModRef)))]
pub struct FutureMod {
    pub info: extern "C" fn() -> PluginInfo,
    #[sabi(last_prefix_field)]
    pub new_strategy: extern "C" fn(PoolInfo, RSlice<'_, PluginOption>) -> RResult<StrategyBox, RString>,
}

impl RootModule for FutureModRef {
    declare_root_module_statics! {FutureModRef}
    const BASE_NAME: &'static str = "nanohost_strategy";
    const NAME: &'static str = "nanohost_strategy";
    const VERSION_STRINGS: VersionStrings = VersionStrings::new("9.0.0");
}

extern "C" fn info() -> PluginInfo {
    PluginInfo { name: "fault-abi-mismatch".into(), version: "0.0.1".into(), description: "TEST ONLY: abi mismatch".into() }
}

extern "C" fn new_strategy(_: PoolInfo, _: RSlice<'_, PluginOption>) -> RResult<StrategyBox, RString> {
    RResult::RErr("never called".into())
}

#[export_root_module]
pub fn root() -> FutureModRef {
    FutureMod { info, new_strategy }.leak_into_prefix()
}
