#!/usr/bin/env bash
# Trains candidates for the embedded `tiny` model on the GPU (issue 24) and scores each on the
# retrieval and perplexity workloads with `standard`, all in one device call. Runs from a bundle
# (scripts/gpu/train-bundle.sh builds it) holding the CUDA host binary (nanohost.xz),
# plugins/libstandard.so and recipe files:
#   dist/gpu-train/train-tiny.sh RECIPE.json [RECIPE.json ...]     (OUT_DIR: $OUT or ./gpu-out)
#
# 1. Probe: every recipe at PROBE_SCALE (2%) of its steps, all at once, timed.
# 2. Fit: each recipe's steps are scaled down (never up) so that all of them, run at once, end
#    within FIT_SECONDS (default 330); the scale used is in each train_log.json's recipe.
# 3. Train all at once into OUT_DIR/<recipe>/ (model.safetensors, config.json, tokenizer.json,
#    train_log.json, train.txt). Checkpoints after every evaluation, so a recipe cut off by
#    TRAIN_TIMEOUT still leaves its last evaluated weights.
# 4. Score each trained model: retrieval (512..4096 tokens x 11 depths x RETRIEVAL_SAMPLES) and
#    perplexity, f32, on the GPU, into OUT_DIR/<recipe>/quality/.
set -uo pipefail
B=$(cd "$(dirname "$0")" && pwd)
DEST=${OUT:-$PWD/gpu-out}
FIT_SECONDS=${FIT_SECONDS:-330}
PROBE_SCALE=${PROBE_SCALE:-0.02}
TRAIN_TIMEOUT=${TRAIN_TIMEOUT:-420}
RETRIEVAL_SAMPLES=${RETRIEVAL_SAMPLES:-8}
mkdir -p "$DEST"
[ -x "$B/nanohost" ] || python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" "$B/nanohost.xz" "$B/nanohost"
chmod +x "$B/nanohost"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$DEST/gpu.txt"

echo "== probe at scale $PROBE_SCALE"
start=$(date +%s.%N)
for r in "$@"; do
  name=$(basename "$r" .json)
  "$B/nanohost" train-preset --device cuda --recipe "$r" --step-scale "$PROBE_SCALE" --out "$DEST/probe/$name" > "$DEST/probe-$name.txt" 2>&1 &
done
wait
probe=$(python3 -c "import sys, time; print(time.time() - float(sys.argv[1]))" "$start")
scale=$(python3 -c "import sys; p, s, f = map(float, sys.argv[1:]); print(min(1.0, f / (p / s)))" "$probe" "$PROBE_SCALE" "$FIT_SECONDS")
echo "probe took ${probe}s; full scale would take about $(python3 -c "print(round($probe / $PROBE_SCALE))")s; training at step scale $scale"
tail -n 3 "$DEST"/probe-*.txt

echo "== train"
for r in "$@"; do
  name=$(basename "$r" .json)
  mkdir -p "$DEST/$name"
  ( timeout "$TRAIN_TIMEOUT" "$B/nanohost" train-preset --device cuda --recipe "$r" --step-scale "$scale" --out "$DEST/$name" > "$DEST/$name/train.txt" 2>&1; echo "exit $?" >> "$DEST/$name/train.txt" ) &
done
wait
for r in "$@"; do name=$(basename "$r" .json); echo "== $name"; grep -E "eval|trained|exit|rror" "$DEST/$name/train.txt" | tail -6; done

cat > "$DEST/quality.json" <<JSON
{"workloads": ["retrieval", "perplexity"], "batch_sizes": [1], "warmup_tokens": 0, "max_output_len": 8, "device": "cuda", "dtype": "f32",
 "quality": {"retrieval_lengths": [512, 1024, 2048, 4096], "retrieval_samples": $RETRIEVAL_SAMPLES, "perplexity_docs": 4, "perplexity_tokens": 1024}, "fidelity": false}
JSON
for r in "$@"; do
  name=$(basename "$r" .json)
  [ -f "$DEST/$name/model.safetensors" ] || continue
  echo "== quality: $name"
  "$B/nanohost" run --model "$DEST/$name" --config "$DEST/quality.json" --out "$DEST/$name/quality" --overwrite \
    --plugin "$B/plugins/libstandard.so" > "$DEST/$name/quality.txt" 2>&1 || tail -5 "$DEST/$name/quality.txt"
  sed -n '/etrieval/,$p' "$DEST/$name/quality/summary.md" 2>/dev/null | head -30
done
