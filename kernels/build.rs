//! With the `cuda` feature, compiles src/cuda/nanohost.cu (which includes the kernel headers
//! beside it) to PTX with nvcc for CUDA_COMPUTE_CAP
//! (default 90: H100/H200), as candle-kernels does. The PTX is embedded in the library.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/cuda");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".into());
    // cuda/launch.rs turns programmatic dependent launch on only for PTX built for sm_90+.
    println!("cargo:rustc-env=NANOHOST_PTX_COMPUTE_CAP={cap}");
    let nvcc = ["CUDA_ROOT", "CUDA_HOME", "CUDA_PATH"]
        .iter()
        .filter_map(std::env::var_os)
        .map(|root| PathBuf::from(root).join("bin/nvcc"))
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("nvcc"));
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("nanohost.ptx");
    let status = Command::new(&nvcc)
        .args([
            "--ptx",
            &format!("-arch=sm_{cap}"),
            "-O3",
            "-lineinfo",
            "-o",
        ])
        .arg(&out)
        .arg("src/cuda/nanohost.cu")
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}); see scripts/cuda-build-env.sh",
                nvcc.display()
            )
        });
    assert!(status.success(), "nvcc failed on src/cuda/nanohost.cu");
}
