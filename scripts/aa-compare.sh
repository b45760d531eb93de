#!/usr/bin/env bash
# A/A check of `nanohost compare` (issue 25): RUNS (default 40) comparisons of the standard
# plugin against itself, TRIALS (default 6) trial pairs each, on the embedded model on the CPU
# with one small workload. A comparison at 95% should call a difference (on any one metric)
# in about 5% of runs or fewer. Counts per metric and per run go to OUT_DIR/aa.json.
#   scripts/aa-compare.sh [OUT_DIR]          (default runs/aa-compare)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/nanohost-target}
OUT=${1:-runs/aa-compare}
RUNS=${RUNS:-40}
TRIALS=${TRIALS:-6}
cargo build --release -q -p nanohost -p nanohost-plugin-standard
bin=$CARGO_TARGET_DIR/release/nanohost
std=$CARGO_TARGET_DIR/release/libstandard.so
mkdir -p "$OUT"
cat > "$OUT/config.json" <<'JSON'
{"workloads": ["standard"], "batch_sizes": [1, 4], "max_input_len": 128, "max_output_len": 32, "warmup_tokens": 4, "device": "cpu", "fidelity": false}
JSON
for i in $(seq 1 "$RUNS"); do
  rm -rf "$OUT/run-$i"
  "$bin" compare "$std" "$std" --trials "$TRIALS" --config "$OUT/config.json" --out "$OUT/run-$i" > "$OUT/run-$i.txt" 2>&1
done
python3 - "$OUT" "$RUNS" <<'PY'
import json, sys, collections
out, runs = sys.argv[1], int(sys.argv[2])
per_metric, calls, runs_calling = collections.Counter(), collections.Counter(), 0
for i in range(1, runs + 1):
    report = json.load(open(f"{out}/run-{i}/compare.json"))
    called = False
    for p in report["points"]:
        for key, m in p["metrics"].items():
            name = f'{p["point"]} / {key}'
            per_metric[name] += 1
            if m["verdict"] in ("b_higher", "b_lower"):
                calls[name] += 1
                called = True
    runs_calling += called
tests = sum(per_metric.values())
summary = {
    "runs": runs,
    "trials": report["trials"],
    "confidence": report["confidence"],
    "metric_tests": tests,
    "metric_tests_calling_a_difference": sum(calls.values()),
    "metric_false_call_rate": sum(calls.values()) / tests,
    "runs_calling_any_difference": runs_calling,
    "calls_by_metric": {k: f"{calls[k]}/{per_metric[k]}" for k in sorted(per_metric)},
}
json.dump(summary, open(f"{out}/aa.json", "w"), indent=1)
print(json.dumps({k: v for k, v in summary.items() if k != "calls_by_metric"}, indent=1))
PY
