#!/usr/bin/env bash
# Strategy ABI 1.0 (issue 23) on the GPU, in one device call, from the bundle build-bundle.sh
# makes with BASE_BIN (the build before ABI 1.0) and BASE_PLUGINS (its plugins, ABI 0.1.0):
#   dist/gpu/abi-1.0.sh [OUT_DIR]          (OUT_DIR default: $OUT or ./gpu-out)
# 1. decode ms/step with the standard plugin at batch 1 and 64 (256-token prompts, greedy, 128
#    timed steps), this build and the base alternated 3 times each: plan checks and growth must
#    not show (within 2%);
# 2. the seed workloads (standard, shared-prefix, chunked, chunked-reuse) with the four seed
#    plugins, base and this build, same seed: output_tokens_sha256 per point must match;
# 3. streaming (sinks 4, window 1020) vs standard, decode ms/step at batch 1 and 16 with prompts
#    of 512..4096 tokens (flat past the window), and the long-context workload's peak KV;
# 4. radix vs standard (greedy) on the seed workloads and conversation, sharing and copying partial blocks
#    (copy jobs on CUDA): tokens, reuse.
# STEPS (default 1,2,3,4) picks steps: one device call runs at most 10 minutes, so the record
# in results/ ran STEPS=1,2 and STEPS=3,4 as two calls on one warm machine.
# Everything lands in OUT_DIR/abi-1.0.tgz (JSON per step, summary.txt; one file, as the device
# tool returns few).
set -uo pipefail
B=$(cd "$(dirname "$0")" && pwd)
DEST=${1:-${OUT:-$PWD/gpu-out}}/abi-1.0
mkdir -p "$DEST"
for f in nanohost nanohost-base; do
  [ -x "$B/$f" ] || python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" "$B/$f.xz" "$B/$f"
  chmod +x "$B/$f"
done
MODEL=${MODEL:-/tmp/nanohost-qwen3-0.6b}
STEPS=${STEPS:-1,2,3,4}
want() { [[ ",$STEPS," == *",$1,"* ]]; }
log() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$DEST/summary.txt"; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$DEST/gpu.txt"
[ -f "$MODEL/model.safetensors" ] || "$B/nanohost" init-model --preset qwen3-0.6b --out "$MODEL" >/dev/null
ms() { python3 -c 'import json,sys
for r in json.load(open(sys.argv[1]))["results"]: print(sys.argv[2], "batch", r["batch_size"], "prompt", r.get("prompt_len"), "ms/step p50 %.4f" % r["decode_ms_per_step_median"], "p10 %.4f" % r["decode_ms_per_step_p10"], "tokens", r["output_tokens_sha256"][:12])' "$@"; }

if want 1; then
log "1. decode ms/step, standard, this build (new) vs base, alternated"
for i in 1 2 3; do
  for side in base new; do
    bin=$B/nanohost; plugins=$B/plugins
    [ $side = base ] && { bin=$B/nanohost-base; plugins=$B/base-plugins; }
    "$bin" bench-decode --model "$MODEL" --plugin "$plugins/libstandard.so" --batch-sizes 1,64 --steps 128 \
      --out "$DEST/decode_${side}_$i.json" >/dev/null 2>>"$DEST/stderr.txt"
    ms "$DEST/decode_${side}_$i.json" "$side#$i" | tee -a "$DEST/summary.txt"
  done
done

fi
if want 2; then
log "2. seed workloads (32 new tokens each), four seed plugins: base vs new tokens"
echo '{"max_output_len": 32, "warmup_tokens": 2}' > /tmp/nanohost-seed.json
for side in base new; do
  bin=$B/nanohost; plugins=$B/plugins
  [ $side = base ] && { bin=$B/nanohost-base; plugins=$B/base-plugins; }
  "$bin" run --model "$MODEL" --plugin "$plugins/libstandard.so" --plugin "$plugins/libcascade.so" \
    --plugin "$plugins/libchunked.so" --plugin "$plugins/libchunked_reuse.so" --config /tmp/nanohost-seed.json \
    --out "$DEST/seed-$side" --timeout 500 >/dev/null 2>>"$DEST/stderr.txt"
done
python3 - "$DEST" <<'PY' | tee -a "$DEST/summary.txt"
import json, os, sys
d = sys.argv[1]
same = diff = 0
for f in sorted(os.listdir(f"{d}/seed-new")):
    if not f.startswith("results_"): continue
    new = json.load(open(f"{d}/seed-new/{f}")); base = json.load(open(f"{d}/seed-base/{f}"))
    for a, b in zip(base, new):
        key = (f, a["workload"], a["batch_size"], a.get("shared_prefix_len"))
        if a["output_tokens_sha256"] == b["output_tokens_sha256"]: same += 1
        else: diff += 1; print("DIFFERENT", key)
print(f"seed workloads: {same} points with identical output_tokens_sha256, {diff} different")
PY

fi
if want 3; then
log "3. streaming vs standard: decode ms/step as the context grows past the window"
for p in standard streaming; do
  for len in 512 1024 2048 4096; do
    "$B/nanohost" bench-decode --model "$MODEL" --plugin "$B/plugins/lib$p.so" --batch-sizes 1,16 --prompt-len $len --steps 128 \
      --out "$DEST/decode_${p}_$len.json" >/dev/null 2>>"$DEST/stderr.txt"
    ms "$DEST/decode_${p}_$len.json" "$p" | tee -a "$DEST/summary.txt"
  done
done
echo '{"workloads": ["long-context"], "batch_sizes": [1, 8], "max_output_len": 64}' > /tmp/nanohost-long-context.json
"$B/nanohost" run --model "$MODEL" --plugin "$B/plugins/libstandard.so" --plugin "$B/plugins/libstreaming.so" \
  --config /tmp/nanohost-long-context.json --out "$DEST/long-context" --timeout 500 >/dev/null 2>>"$DEST/stderr.txt"

fi
if want 4; then
log "4. radix vs standard: shared-prefix and conversation, partial blocks shared and copied"
echo '{"workloads": ["standard", "shared-prefix", "chunked", "chunked-reuse", "conversation"], "batch_sizes": [4, 16], "temperature": 0, "max_output_len": 48}' > /tmp/nanohost-radix.json
"$B/nanohost" run --model "$MODEL" --plugin "$B/plugins/libstandard.so" --plugin "$B/plugins/libradix.so" \
  --config /tmp/nanohost-radix.json --out "$DEST/radix-share" --timeout 500 >/dev/null 2>>"$DEST/stderr.txt"
"$B/nanohost" run --model "$MODEL" --plugin "$B/plugins/libradix.so" --plugin-option partial=copy \
  --config /tmp/nanohost-radix.json --out "$DEST/radix-copy" --timeout 500 >/dev/null 2>>"$DEST/stderr.txt"
python3 - "$DEST" <<'PY' | tee -a "$DEST/summary.txt"
import json, sys
d = sys.argv[1]
for run, plugin in [("long-context", "standard"), ("long-context", "streaming"), ("radix-share", "standard"), ("radix-share", "radix"), ("radix-copy", "radix")]:
    for r in json.load(open(f"{d}/{run}/results_{plugin}.json")):
        print(run, plugin, r["workload"], "batch", r["batch_size"], r.get("shared_prefix_len", ""),
              "peak_kv_bytes", r["peak_kv_bytes"], "tokens_reused", r["tokens_reused"], "tokens_evicted", r["tokens_evicted"],
              "decode ms/step p50 %.3f" % r["decode_ms_per_step_p50"], "ttft p50 %.1f" % r["time_to_first_token_ms_p50"],
              "tokens", r["output_tokens_sha256"][:12], "counters", r["strategy_counters"])
PY
fi
log "done"
(cd "$(dirname "$DEST")" && tar czf abi-1.0.tgz abi-1.0 && rm -rf abi-1.0)
