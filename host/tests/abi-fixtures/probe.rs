//! A host in miniature, built by `tests/abi_versions.rs` against a copy of nanohost-strategy-api
//! at another version: it loads a plugin the way nanohost does and prints `loaded NAME (ABI V)`,
//! or the load error's one line (nanohost's own `load_error.rs`, copied beside this file) and
//! exits with 1.

#[allow(dead_code)] // the probe meets only some of the load errors
mod load_error;

use nanohost_strategy_api::abi_stable::library::lib_header_from_path;
use nanohost_strategy_api::StrategyModRef;

fn main() {
    let path = std::path::PathBuf::from(std::env::args().nth(1).expect("usage: probe PLUGIN.so"));
    let header = match lib_header_from_path(&path) {
        Ok(h) => h,
        Err(e) => fail(load_error::LoadError::classify(&path, None, e)),
    };
    let abi = header.version_strings().version.to_string();
    match header.init_root_module::<StrategyModRef>() {
        Ok(module) => println!("loaded {} (ABI {abi})", (module.info())().name),
        Err(e) => fail(load_error::LoadError::classify(&path, Some(&abi), e)),
    }
}

fn fail(e: load_error::LoadError) -> ! {
    println!("{e}");
    std::process::exit(1)
}
