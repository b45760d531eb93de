#!/usr/bin/env bash
# The quality workloads on CPU with the embedded `tiny` model (issue 24): every workspace plugin
# on `retrieval` (512..4096 tokens x 11 depths x 4 samples) and `perplexity` (4 x 1024 held-out
# tokens), and chunked-reuse's approximate hits on the chunked workloads (fidelity against
# standard). Release build; results in OUT_DIR (default runs/quality-cpu).
#   scripts/quality-cpu.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/nanohost-target}
OUT=${1:-runs/quality-cpu}
cargo build --release --workspace -q
bin=$CARGO_TARGET_DIR/release/nanohost
lib() { echo "$CARGO_TARGET_DIR/release/lib$1.so"; }
mkdir -p "$OUT"
cat > "$OUT/quality.json" <<'JSON'
{"workloads": ["retrieval", "perplexity"], "batch_sizes": [1], "warmup_tokens": 0, "max_output_len": 8, "device": "cpu",
 "quality": {"retrieval_lengths": [512, 1024, 2048, 4096], "retrieval_samples": 4, "perplexity_docs": 4, "perplexity_tokens": 1024}, "fidelity": false,
 "plugin_options": {"streaming": {"sinks": 4, "window": 1020}}}
JSON
cat > "$OUT/chunked.json" <<'JSON'
{"workloads": ["chunked-reuse", "long-chunked"], "batch_sizes": [4], "warmup_tokens": 0, "max_output_len": 32, "temperature": 0, "device": "cpu"}
JSON
"$bin" run --config "$OUT/quality.json" --out "$OUT/quality" --overwrite \
  --plugin "$(lib standard)" --plugin "$(lib cascade)" --plugin "$(lib radix)" --plugin "$(lib streaming)" --plugin "$(lib chunked_reuse)"
"$bin" run --config "$OUT/chunked.json" --out "$OUT/chunked" --overwrite --plugin "$(lib standard)" --plugin "$(lib chunked_reuse)"
"$bin" report "$OUT/quality" >/dev/null
