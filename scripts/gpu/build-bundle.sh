#!/usr/bin/env bash
# Builds what the GPU machine needs (it has no Rust toolchain) into dist/gpu/, small enough for
# one device call: the stripped CUDA host binary, the stripped plugins, the CUDA op test binary,
# and this folder's scripts.
#   scripts/gpu/build-bundle.sh
#   OP_TESTS=0 scripts/gpu/build-bundle.sh   (no CUDA op test binary: it builds candle with
#       other features, which recompiles candle-kernels, over 10 minutes on 2 cores)
#   BASE_BIN=/path/nanohost.xz scripts/gpu/build-bundle.sh   (also ships an earlier build's
#       xz'd (or gzipped) binary as nanohost-base, for A/B runs in one call: check.sh variants,
#       BIN=; with BASE_PLUGINS=DIR, that build's plugin .so files as base-plugins/)
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/cuda-build-env.sh
export CARGO_TARGET_DIR=${NANOHOST_CUDA_TARGET_DIR:-$HOME/.cache/nanohost-cuda-target}
export RUSTFLAGS="$NANOHOST_CUDA_RUSTFLAGS"
cargo build --release -p nanohost --features cuda
cargo build --release -p nanohost-plugin-standard -p nanohost-plugin-cascade -p nanohost-plugin-chunked -p nanohost-plugin-chunked-reuse \
  -p nanohost-plugin-streaming -p nanohost-plugin-radix
test_bin=
[ "${OP_TESTS:-1}" = 0 ] || test_bin=$(cargo test --release -p nanohost-kernels --features cuda --test cuda_ops --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable"): print(m["executable"])' | tail -1)
rm -rf dist/gpu && mkdir -p dist/gpu/plugins
cp "$CARGO_TARGET_DIR/release/nanohost" dist/gpu/nanohost
cp "$CARGO_TARGET_DIR"/release/lib*.so dist/gpu/plugins/
[ -z "$test_bin" ] || cp "$test_bin" dist/gpu/cuda_ops_test
strip dist/gpu/nanohost dist/gpu/plugins/*.so
[ -z "$test_bin" ] || strip dist/gpu/cuda_ops_test
# A device call carries at most 64 MiB: xz -6 leaves the binaries about a third of what gzip -1
# did (their PTX is text: the op tests 18.8 -> 6.5 MB), so a base build fits beside them.
xz -6 -T0 dist/gpu/nanohost
[ -z "$test_bin" ] || xz -6 -T0 dist/gpu/cuda_ops_test
cp scripts/gpu/*.py scripts/gpu/*.c scripts/gpu/*.sh dist/gpu/
cp -r scripts/gpu/tiny-recipes dist/gpu/
if [ -n "${BASE_PLUGINS:-}" ]; then
  mkdir -p dist/gpu/base-plugins && cp "$BASE_PLUGINS"/lib*.so dist/gpu/base-plugins/ && strip dist/gpu/base-plugins/*.so
fi
case "${BASE_BIN:-}" in
  "") ;;
  *.gz) gunzip -c "$BASE_BIN" | xz -6 -T0 > dist/gpu/nanohost-base.xz ;;
  *) cp "$BASE_BIN" dist/gpu/nanohost-base.xz ;;
esac
du -sh dist/gpu
