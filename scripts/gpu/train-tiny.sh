#!/usr/bin/env bash
# Trains the embedded `tiny` model on the GPU (issue 24), from a bundle holding the CUDA host
# binary (nanohost.xz) and recipe files:
#   dist/gpu/train-tiny.sh RECIPE.json [RECIPE.json ...]     (OUT_DIR: $OUT or ./gpu-out)
# Each recipe trains in its own process, all at once (the 4-layer, 128-wide model leaves an H100
# mostly idle), into OUT_DIR/<recipe name>/: model.safetensors, config.json, tokenizer.json,
# train_log.json, and train.txt (the progress lines). nvidia-smi's card line goes to gpu.txt.
set -uo pipefail
B=$(cd "$(dirname "$0")" && pwd)
DEST=${OUT:-$PWD/gpu-out}
mkdir -p "$DEST"
[ -x "$B/nanohost" ] || python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" "$B/nanohost.xz" "$B/nanohost"
chmod +x "$B/nanohost"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$DEST/gpu.txt"
for r in "$@"; do
  name=$(basename "$r" .json)
  mkdir -p "$DEST/$name"
  ( /usr/bin/time -v "$B/nanohost" train-preset --device cuda --recipe "$r" --out "$DEST/$name" > "$DEST/$name/train.txt" 2>&1; echo "exit $?" >> "$DEST/$name/train.txt" ) &
done
wait
for r in "$@"; do name=$(basename "$r" .json); echo "== $name"; grep -E "eval|trained|exit|rror" "$DEST/$name/train.txt" | tail -8; done
