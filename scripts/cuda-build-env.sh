#!/usr/bin/env bash
# Source this to build nanohost with `--features cuda` on a machine that has neither a GPU nor a
# CUDA toolkit:   source scripts/cuda-build-env.sh
#
# The GPU machines run driver 580 (CUDA 13.0) on sm_90 (H100/H200). So:
#  - the compiler is NVIDIA's CUDA 13.0 nvcc from PyPI wheels, pinned: a newer nvcc writes PTX
#    that driver 580 refuses to load;
#  - the CUDA libraries cudarc links against (libcuda, libcublas, libcublasLt, libcurand,
#    libnvrtc) are replaced at link time by empty stubs with the same sonames, generated from
#    cudarc's own declarations; at run time the GPU machine's real libraries are loaded.
# Exports CUDA_ROOT/CUDA_HOME/CUDA_PATH, CUDA_COMPUTE_CAP=90, PATH, and NANOHOST_CUDA_RUSTFLAGS
# (link search path for the stubs). Keep RUSTFLAGS and CARGO_TARGET_DIR stable between builds:
# any change recompiles candle's CUDA kernels (about 10 minutes on 2 cores).
set -u
_root=${NANOHOST_CUDA_HOME:-$HOME/.cache/nanohost-cuda}
_venv=$_root/venv
# `|| true`: sourced from a `set -euo pipefail` script, a find of a venv not made yet would
# otherwise end that script silently.
_nvcc=$({ find "$_venv" -path '*nvidia/cu13/bin/nvcc' 2>/dev/null || true; } | head -1)
if [ -z "$_nvcc" ]; then
  echo "cuda-build-env: installing CUDA 13.0 nvcc wheels into $_venv" >&2
  python3 -m venv "$_venv" >&2 && "$_venv/bin/pip" install -q \
    nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
    nvidia-cuda-runtime==13.0.96 "nvidia-cuda-cccl<13.1" >&2 || { echo "cuda-build-env: pip failed" >&2; return 1 2>/dev/null || exit 1; }
  _nvcc=$(find "$_venv" -path '*nvidia/cu13/bin/nvcc' | head -1)
fi
_cuda=$(dirname "$(dirname "$_nvcc")")
_stubs=$_root/stubs
if [ ! -e "$_stubs/libcuda.so" ]; then
  _cudarc=$({ ls -d "$HOME"/.cargo/registry/src/*/cudarc-0.19.* 2>/dev/null || true; } | sort -V | tail -1)
  if [ -z "$_cudarc" ]; then echo "cuda-build-env: run 'cargo fetch' first (needs cudarc 0.19 sources)" >&2; return 1 2>/dev/null || exit 1; fi
  mkdir -p "$_stubs"
  # module:library:soname-version, as cudarc's sys modules name them
  for _spec in driver:cuda:1 nvrtc:nvrtc:13 curand:curand:10 cublas:cublas:13 cublaslt:cublasLt:13; do
    IFS=: read -r _mod _lib _ver <<<"$_spec"
    # every `fn name` inside an `extern "C"` block becomes an empty C function
    grep -A1 'extern "C" {' "$_cudarc/src/$_mod/sys/mod.rs" | grep -oE '^\s*(pub )?fn [A-Za-z0-9_]+' \
      | awk '{print "void " $NF "(void){}"}' | sort -u > "$_stubs/$_lib.c"
    gcc -shared -fPIC -Wl,-soname,"lib$_lib.so.$_ver" -o "$_stubs/lib$_lib.so.$_ver" "$_stubs/$_lib.c"
    ln -sf "lib$_lib.so.$_ver" "$_stubs/lib$_lib.so"
  done
  ln -sf "$_cuda/lib/libcudart.so.13" "$_stubs/libcudart.so"
fi
export CUDA_ROOT=$_cuda CUDA_HOME=$_cuda CUDA_PATH=$_cuda CUDA_COMPUTE_CAP=90 PATH=$_cuda/bin:$PATH
export NANOHOST_CUDA_RUSTFLAGS="-L $_stubs"
echo "cuda-build-env: $(nvcc --version | tail -2 | head -1); stubs in $_stubs" >&2
