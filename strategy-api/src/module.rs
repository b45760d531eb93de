//! The root module a plugin exports: a prefix type, so fields can be appended without breaking
//! plugins built against an older version.

use crate::options::PluginOption;
use crate::plan::{PluginInfo, PoolInfo};
use crate::strategy::StrategyBox;
use abi_stable::library::RootModule;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{RResult, RSlice, RString};
use abi_stable::{declare_root_module_statics, package_version_strings, StableAbi};

#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = StrategyModRef)))]
#[sabi(missing_field(panic))]
pub struct StrategyMod {
    pub info: extern "C" fn() -> PluginInfo,
    /// A fresh strategy for a pool, with the options the user gave.
    #[sabi(last_prefix_field)]
    pub new_strategy:
        extern "C" fn(PoolInfo, RSlice<'_, PluginOption>) -> RResult<StrategyBox, RString>,
}

impl RootModule for StrategyModRef {
    declare_root_module_statics! {StrategyModRef}
    const BASE_NAME: &'static str = "nanohost_strategy";
    const NAME: &'static str = "nanohost_strategy";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// The ABI version this crate speaks (its package version).
pub const ABI_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Exports a [`KvStrategy`](crate::KvStrategy) type as a nanohost plugin.
///
/// The plugin crate must be a `cdylib` and depend on `abi_stable` (same version as this crate's),
/// whose `export_root_module` attribute this macro uses.
#[macro_export]
macro_rules! export_strategy {
    ($ty:ty, name: $name:expr, version: $version:expr, description: $description:expr $(,)?) => {
        extern "C" fn __nanohost_info() -> $crate::PluginInfo {
            $crate::PluginInfo {
                name: $name.into(),
                version: $version.into(),
                description: $description.into(),
            }
        }

        extern "C" fn __nanohost_new_strategy(
            pool: $crate::PoolInfo,
            options: $crate::abi_stable::std_types::RSlice<'_, $crate::PluginOption>,
        ) -> $crate::abi_stable::std_types::RResult<
            $crate::StrategyBox,
            $crate::abi_stable::std_types::RString,
        > {
            $crate::new_boxed::<$ty>(pool, options)
        }

        #[$crate::abi_stable::export_root_module]
        pub fn nanohost_strategy_root() -> $crate::StrategyModRef {
            use $crate::abi_stable::prefix_type::PrefixTypeTrait;
            $crate::StrategyMod {
                info: __nanohost_info,
                new_strategy: __nanohost_new_strategy,
            }
            .leak_into_prefix()
        }
    };
}
