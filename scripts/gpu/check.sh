#!/usr/bin/env bash
# The whole GPU check, run on the GPU machine from the bundle that build-bundle.sh makes:
#   dist/gpu/check.sh [OUT_DIR]        (OUT_DIR default: $OUT or ./gpu-out)
# Everything lands in OUT_DIR/gpu-results.tgz (one file: the device tool returns few files).
# 1. the qwen3-0.6b preset, generated there; 2. CUDA op tests against the CPU ops;
# 3. teacher-forced logits vs transformers on the same weights (bf16 and f32);
# 4. nanohost decode ms/step at batch 1, 4, 64; 5. `nanohost run` on the prototype workloads;
# 6. transformers' decode ms/step on the same card (eager, static cache);
# 7. (STEPS=prefix) standard vs cascade on the shared-prefix and long-prefix workloads;
# 8. (STEPS=cascade) cascade vs flat attention, the op alone (prefix 256..2048, batch 1..64),
#    and decode ms/step, standard vs cascade plugin, with a 2048-token shared prefix;
# 9. (STEPS=chunked) standard vs chunked vs chunked-reuse on long-chunked (batch 8, 32) and the
#    prototype's chunked workloads: time to first token, reuse, fidelity;
# 10. (STEPS=speed) the engine's own speed: the throughput and latency workloads, standard plugin
#     (GRAPHS=on|off|staged, default on: decode steps through CUDA graphs or not; SPEED_TAG names
#     the output folder, for A/B runs of the NANOHOST_* tuning variables).
# 14. (STEPS=pdl) programmatic dependent launch on vs off (NANOHOST_PDL=1/0), with graphs on and
#     off, at batch 1, 4, 64: ms/step, identical tokens, and the captured graph's edges.
# 15. (STEPS=variants; pdl-b1 is its old name) graph replay under variants of the tuning knobs
#     (VARIANTS, or PDL_VARIANTS: space-separated, each a comma-separated VAR=value list) at
#     BATCHES (default 1): ms/step and token digests; an nsys kernel summary where nsys exists.
#     A variant with BIN=nanohost-base runs the baseline binary the bundle may carry, for A/B of
#     two builds on one machine.
# 16. (STEPS=capture-test) the capture-links GPU test alone, PDL on (under gdb where it exists)
#     and off.
# 17. (STEPS=cascade-graphs) cascade decode steps through graphs vs eager (NANOHOST_CASCADE_GRAPHS),
#     shared 2048-token prefix, batch 1/8/32/64: ms/step, replays, identical tokens.
# 18. (STEPS=chain) one kernel's cost inside a replayed graph chain (bench-chain: the boundary,
#     add + RMSNorm, each projection's matmul) at rows CHAIN_ROWS (default 1,64), PDL on and off
#     (CHAIN_PDL), CHAIN_TAG naming the run.
# 19. (STEPS=timeline) nsys: a replayed decode step's kernels in place (BATCHES, default "1 64";
#     BIN=nanohost-base for the baseline; TEMPERATURE, default greedy): lead, busy time, holes,
#     and the hole before each kernel.
# 20. (STEPS=ncu-chain) ncu's sections for one launch per projection of a bench-chain kernel
#     (NCU_KERNEL regex, default tc_matmul; NCU_ROWS, default 64).
# 12. (STEPS=profile) ncu: GPU time per kernel of one decode step at batch 1 and 64 (eager).
# 13. (STEPS=tune) the rows small_matmul takes over from cuBLAS (NANOHOST_SMALL_MATMUL_ROWS) on
#     decode at batch 1, 2, 4, 8; ncu's speed-of-light, occupancy and stall sections for the
#     attention kernel at batch 64.
# 11. (STEPS=graphs) decode through CUDA graphs vs staged (same padded computation, eager) vs
#     eager, at batch sizes that fill a bucket and that need padding: ms/step and token digests.
# 21. (STEPS=sampling) what sampling costs a decode step: bench-decode greedy vs temperature 0.6 at
#     BATCHES (default 1,4,64), with the host's graph upload and launch times; then the latency
#     workload (temperature 0.6) with this build and, where the bundle has one, nanohost-base.
# 22. (STEPS=ncu-attention) ncu's sections for one decode attention launch at batch 64 (eager),
#     this build and, where the bundle has one, nanohost-base.
# 23. (STEPS=ncu-sample) the same for one sampling launch at batch 64, greedy and temperature 0.6.
set -uo pipefail
B=$(cd "$(dirname "$0")" && pwd)
DEST=${1:-${OUT:-$PWD/gpu-out}}
R=$(mktemp -d)/results
mkdir -p "$R" "$DEST"
for f in nanohost cuda_ops_test nanohost-base; do  # the bundle ships them xz'd (older ones gzipped)
  [ -x "$B/$f" ] && continue
  if [ -f "$B/$f.xz" ]; then
    python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" "$B/$f.xz" "$B/$f" && chmod +x "$B/$f"
  elif [ -f "$B/$f.gz" ]; then
    gunzip -c "$B/$f.gz" > "$B/$f" && chmod +x "$B/$f"
  fi
done
MODEL=${MODEL:-/tmp/nanohost-qwen3-0.6b}
STEPS=${STEPS:-all}
log() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$R/check.log"; }
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; nvidia-smi | grep -o 'CUDA Version: [0-9.]*'; } > "$R/gpu.txt" 2>&1
cat "$R/gpu.txt"
want() { [ "$STEPS" = all ] || [[ ",$STEPS," == *",$1,"* ]]; }
if [ ! -f "$MODEL/model.safetensors" ]; then
  log "init-model"; "$B/nanohost" init-model --preset qwen3-0.6b --out "$MODEL" | tee -a "$R/check.log"
fi
if want ops; then
  log "cuda op tests"; "$B/cuda_ops_test" --test-threads=1 2>&1 | tee "$R/cuda_ops.txt" | tail -5
fi
if want logits; then
  log "teacher forcing vs transformers"
  python3 "$B/make_inputs.py" /tmp/nanohost-tf.json
  for dt in bf16 f32; do
    "$B/nanohost" teacher-force --model "$MODEL" --dtype $dt --input /tmp/nanohost-tf.json --out /tmp/nanohost-tf-$dt.safetensors 2>>"$R/check.log"
    python3 "$B/compare_transformers.py" "$MODEL" /tmp/nanohost-tf.json /tmp/nanohost-tf-$dt.safetensors $dt "$R/logits_vs_transformers_$dt.json" 2>>"$R/check.log"
  done
  python3 "$B/precision_report.py" /tmp/nanohost-tf-bf16.safetensors /tmp/nanohost-tf-f32.safetensors "$R/logits_precision.json" 2>>"$R/check.log"
fi
if want decode; then
  log "nanohost decode bench"
  "$B/nanohost" bench-decode --model "$MODEL" --plugin "$B/plugins/libstandard.so" --out "$R/decode_nanohost.json" 2>>"$R/check.log" | grep -E 'batch_size|ms_per_step_median'
fi
if want run; then
  log "nanohost run"
  (cd "$B" && ./nanohost run --model "$MODEL" --plugin plugins/libstandard.so --out "$R/run" --timeout 400 2>>"$R/check.log")
fi
if want prefix; then
  log "prefix sharing: standard vs cascade on shared-prefix (batch 1, 2, 4) and long-prefix (batch 8, 32, 64)"
  echo '{"workloads": ["long-prefix"], "batch_sizes": [8, 32, 64]}' > /tmp/nanohost-long.json
  (cd "$B" && ./nanohost run --model "$MODEL" --plugin plugins/libstandard.so --plugin plugins/libcascade.so \
     --workload shared-prefix --out "$R/shared-prefix" --timeout 400 2>>"$R/check.log"
   ./nanohost run --model "$MODEL" --plugin plugins/libstandard.so --plugin plugins/libcascade.so \
     --config /tmp/nanohost-long.json --out "$R/long-prefix" --timeout 400 2>>"$R/check.log")
fi
if want cascade; then
  log "cascade vs flat attention (op) and decode with a shared 2048-token prefix"
  "$B/nanohost" bench-attention --model "$MODEL" --prefix-lens 128,256,512,1024,2048 --batch-sizes 1,2,4,8,16,32,64 \
    --out "$R/attention_cascade_vs_flat.json" 2>>"$R/check.log" | grep -E '"(prefix_len|batch_size|speedup)"' | paste - - - 
  for p in standard cascade; do
    "$B/nanohost" bench-decode --model "$MODEL" --plugin "$B/plugins/lib$p.so" --shared-prefix 2048 --prompt-len 128 \
      --batch-sizes 8,32,64 --out "$R/decode_prefix2048_$p.json" 2>>"$R/check.log" | grep -E 'batch_size|ms_per_step_median'
  done
fi
if want chunked; then
  log "chunked: standard vs chunked vs chunked-reuse"
  echo '{"workloads": ["long-chunked"], "batch_sizes": [8, 32], "max_output_len": 32}' > /tmp/nanohost-chunked.json
  (cd "$B" && ./nanohost run --model "$MODEL" --plugin plugins/libstandard.so --plugin plugins/libchunked.so --plugin plugins/libchunked_reuse.so \
     --config /tmp/nanohost-chunked.json --out "$R/long-chunked" --timeout 400 2>>"$R/check.log"
   ./nanohost run --model "$MODEL" --plugin plugins/libstandard.so --plugin plugins/libchunked.so --plugin plugins/libchunked_reuse.so \
     --workload chunked --workload chunked-reuse --out "$R/chunked" --timeout 400 2>>"$R/check.log")
fi
if want speed; then
  log "engine speed: throughput and latency workloads"
  (cd "$B" && ./nanohost run --model "$MODEL" --plugin plugins/libstandard.so --workload throughput --workload latency \
     --cuda-graphs "${GRAPHS:-on}" --out "$R/speed-graphs-${GRAPHS:-on}${SPEED_TAG:-}" --timeout 500 2>>"$R/check.log")
  python3 - "$R/speed-graphs-${GRAPHS:-on}${SPEED_TAG:-}/results_standard.json" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1])):
    print(r["workload"], r["batch_size"], "tok/s %.0f" % r.get("output_throughput_tokens_per_sec", r["throughput_tokens_per_sec"]),
          "decode ms/step p50 %.3f" % r["decode_ms_per_step_p50"], "graphs", r.get("cuda_graphs"))
PY
fi
if want graphs; then
  log "CUDA graphs vs staged vs eager decode (batch 1, 3, 4, 20, 64)"
  for g in on staged off; do
    "$B/nanohost" bench-decode --model "$MODEL" --plugin "$B/plugins/libstandard.so" --batch-sizes 1,3,4,20,64 \
      --cuda-graphs $g --out "$R/decode_graphs_$g.json" 2>>"$R/check.log" >/dev/null
  done
  python3 - "$R" <<'PY'
import json, sys
rows = {g: json.load(open(f"{sys.argv[1]}/decode_graphs_{g}.json"))["results"] for g in ("on", "staged", "off")}
for i, r in enumerate(rows["on"]):
    s, o = rows["staged"][i], rows["off"][i]
    print(f"batch {r['batch_size']:3d}: ms/step on {r['decode_ms_per_step_median']:.3f} staged {s['decode_ms_per_step_median']:.3f} off {o['decode_ms_per_step_median']:.3f}"
          f" | replays {r['graph_replays']} captures {r['graph_captures']} ({r['graph_capture_seconds']:.3f}s)"
          f" | tokens on==staged {r['output_tokens_sha256'] == s['output_tokens_sha256']} on==off {r['output_tokens_sha256'] == o['output_tokens_sha256']}")
PY
fi
if want pdl; then
  log "programmatic dependent launch on vs off (NANOHOST_PDL), graphs on and off, batch 1, 4, 64"
  for pdl in 1 0; do for g in on off; do
    NANOHOST_PDL=$pdl "$B/nanohost" bench-decode --model "$MODEL" --plugin "$B/plugins/libstandard.so" --batch-sizes 1,4,64 \
      --cuda-graphs $g --out "$R/decode_pdl${pdl}_graphs_$g.json" 2>>"$R/check.log" >/dev/null
  done; done
  python3 - "$R" <<'PY'
import json, sys
load = lambda p, g: json.load(open(f"{sys.argv[1]}/decode_pdl{p}_graphs_{g}.json"))["results"]
for g in ("on", "off"):
    on, off = load(1, g), load(0, g)
    for a, b in zip(on, off):
        print(f"graphs {g} batch {a['batch_size']:3d}: ms/step pdl {a['decode_ms_per_step_median']:.3f} (launch attr {a['programmatic_launch']})"
              f" no-pdl {b['decode_ms_per_step_median']:.3f} | tokens equal {a['output_tokens_sha256'] == b['output_tokens_sha256']}"
              f" | graph {a.get('graph_anatomy')}")
PY
fi
if want variants || want pdl-b1; then
  log "graph replay under variants, batch ${BATCHES:-1}"
  # space-separated variants, each a comma-separated list of VAR=value
  i=0
  for v in ${VARIANTS:-${PDL_VARIANTS:-NANOHOST_PDL=1 NANOHOST_PDL=0 NANOHOST_SMALL_MATMUL_ROWS=0 NANOHOST_SMALL_MATMUL_ROWS=0,NANOHOST_PDL=0}}; do
    i=$((i + 1))
    # BIN=nanohost-base in a variant runs the bundle's baseline binary (build-bundle.sh BASE_BIN).
    bin=nanohost; case ",$v," in *,BIN=*) bin=$(echo ",$v," | sed 's/.*,BIN=\([^,]*\),.*/\1/');; esac
    env ${v//,/ } "$B/$bin" bench-decode --model "$MODEL" --plugin "$B/plugins/libstandard.so" --batch-sizes "${BATCHES:-1}" \
      --cuda-graphs on --out "$R/variant$i.json" 2>>"$R/check.log" >/dev/null
    python3 -c "
import json, sys
for r in json.load(open(sys.argv[1]))['results']:
    print(sys.argv[2], 'batch', r['batch_size'], 'ms/step %.3f' % r['decode_ms_per_step_median'], 'tokens', r['output_tokens_sha256'][:12], r.get('decode_step_split'), r.get('graph_anatomy'))
" "$R/variant$i.json" "$v" | tee -a "$R/variants.txt"
  done
  NSYS=$(ls /usr/local/cuda/bin/nsys /usr/local/cuda/nsight-systems*/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys 2>/dev/null | head -1)
  if [ -n "$NSYS" ]; then
    "$NSYS" profile --cuda-graph-trace=node -o "$R/pdl_b1" "$B/nanohost" bench-decode --model "$MODEL" --plugin "$B/plugins/libstandard.so" \
      --batch-sizes 1 --steps 8 --cuda-graphs on --out /tmp/nsys_b1.json >/dev/null 2>>"$R/check.log"
    "$NSYS" stats --report cuda_gpu_kern_sum --format csv -o "$R/pdl_b1" "$R/pdl_b1.nsys-rep" >/dev/null 2>>"$R/check.log"
    head -12 "$R"/pdl_b1*kern_sum*.csv
    rm -f "$R"/pdl_b1.nsys-rep "$R"/pdl_b1.sqlite
  else
    echo "no nsys"
  fi
fi
if want timeline; then
  log "nsys: one replayed decode step's device timeline at batch ${BATCHES:-1 64}"
  NSYS=$(ls /usr/local/cuda/bin/nsys /usr/local/cuda/nsight-systems*/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys 2>/dev/null | head -1)
  if [ -z "$NSYS" ]; then NSYS=$(command -v nsys || true); fi
  if [ -n "$NSYS" ]; then
    for b in ${BATCHES:-1 64}; do
      "$NSYS" profile --cuda-graph-trace=node -o "$R/tl_b$b" "$B/${BIN:-nanohost}" bench-decode --model "$MODEL" \
        --plugin "$B/plugins/libstandard.so" --batch-sizes $b --steps 24 --cuda-graphs on --temperature ${TEMPERATURE:-0} --out "$R/tl_b$b.json" >/dev/null 2>>"$R/check.log"
      "$NSYS" stats --report cuda_gpu_trace --format csv -o "$R/tl_b$b" "$R/tl_b$b.nsys-rep" >/dev/null 2>>"$R/check.log"
      python3 "$B/nsys_step.py" "$R"/tl_b${b}_cuda_gpu_trace.csv "batch $b" | tee -a "$R/timeline.txt"
      gzip -f "$R"/tl_b${b}_cuda_gpu_trace.csv
      rm -f "$R/tl_b$b.nsys-rep" "$R/tl_b$b.sqlite"
    done
  else
    # No nsys: kernel_trace.c, a CUPTI tracer injected at CUDA init, writes the same columns.
    C=/usr/local/cuda; INC=$(dirname "$(ls $C/include/cupti.h $C/targets/*/include/cupti.h $C/extras/CUPTI/include/cupti.h 2>/dev/null | head -1)")
    LIB=$(dirname "$(ls $C/lib64/libcupti.so $C/targets/*/lib/libcupti.so $C/extras/CUPTI/lib64/libcupti.so 2>/dev/null | head -1)")
    TR=/tmp/libkernel_trace.so; ok=
    for v in 12 11 10 9 8; do
      gcc -shared -fPIC -O2 -DKREC=CUpti_ActivityKernel$v -I"$INC" -I$C/include -o $TR "$B/kernel_trace.c" -L"$LIB" -lcupti -Wl,-rpath,"$LIB" 2>/dev/null && { ok=$v; break; }
    done
    if [ -z "$ok" ]; then
      gcc -shared -fPIC -O2 -I"$INC" -o $TR "$B/kernel_trace.c" -L"$LIB" -lcupti 2>&1 | tail -5 | tee -a "$R/timeline.txt"
    else
      echo "kernel_trace.c built with CUpti_ActivityKernel$ok" | tee -a "$R/timeline.txt"
      for b in ${BATCHES:-1 64}; do
        rm -f /tmp/ktrace_b$b.*.csv
        CUDA_INJECTION64_PATH=$TR KERNEL_TRACE_OUT=/tmp/ktrace_b$b "$B/${BIN:-nanohost}" bench-decode --model "$MODEL" \
          --plugin "$B/plugins/libstandard.so" --batch-sizes $b --steps 24 --cuda-graphs on --temperature ${TEMPERATURE:-0} --out "$R/tl_b$b.json" >/dev/null 2>>"$R/check.log"
        python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['results'][0]; print('traced bench-decode: ms/step %.3f' % r['decode_ms_per_step_median'])" "$R/tl_b$b.json" | tee -a "$R/timeline.txt"
        for f in /tmp/ktrace_b$b.*.csv; do
          [ "$(wc -l < "$f")" -gt 100 ] || continue
          python3 "$B/nsys_step.py" "$f" "batch $b" | tee -a "$R/timeline.txt"
          gzip -c "$f" > "$R/ktrace_b$b.csv.gz"
        done
      done
    fi
  fi
fi
if want ncu-chain; then
  # ncu's sections for one launch of each of a chain's kernels (NCU_KERNEL, a regex; NCU_ROWS):
  # bench-chain --reps 4 --iters 1 launches each projection's chain 12 times (eager, the first
  # replay, the timed one), qkv_proj then o_proj, gate_up_proj, down_proj.
  log "ncu: ${NCU_KERNEL:-tc_matmul} at ${NCU_ROWS:-64} rows, one launch per projection"
  for skip in 0 12 24 36; do
    /usr/local/cuda/bin/ncu --kernel-name "regex:${NCU_KERNEL:-tc_matmul}" --launch-skip $skip --launch-count 1 \
      --section SpeedOfLight --section Occupancy --section WarpStateStats --section LaunchStats --section MemoryWorkloadAnalysis \
      "$B/nanohost" bench-chain --model "$MODEL" --rows "${NCU_ROWS:-64}" --reps 4 --iters 1 --out /tmp/ncu_chain.json \
      > "$R/ncu_chain_skip$skip.txt" 2>>"$R/check.log"
    grep -E "tc_matmul|small_matmul|Duration|DRAM Throughput|Compute \(SM\)|Memory Throughput|Achieved Occupancy|Block Limit Shared|Stall|Registers Per|Dynamic Shared|Cluster" "$R/ncu_chain_skip$skip.txt" | head -30
  done
fi
if want capture-test; then
  log "the capture-links test (cuda_ops), with a backtrace where gdb exists"
  if command -v gdb >/dev/null; then
    gdb -batch -ex run -ex bt --args "$B/cuda_ops_test" captured_chain --test-threads=1 2>&1 | tail -40 | tee "$R/capture_test.txt"
  else
    "$B/cuda_ops_test" captured_chain --test-threads=1 2>&1 | tail -20 | tee "$R/capture_test.txt"
  fi
  NANOHOST_PDL=0 "$B/cuda_ops_test" captured_chain --test-threads=1 2>&1 | tail -3 | tee -a "$R/capture_test.txt"
fi
if want cascade-graphs; then
  log "cascade decode steps through CUDA graphs (NANOHOST_CASCADE_GRAPHS=1, the default) vs eager, shared 2048-token prefix"
  for c in 1 0; do
    NANOHOST_CASCADE_GRAPHS=$c "$B/nanohost" bench-decode --model "$MODEL" --plugin "$B/plugins/libcascade.so" --shared-prefix 2048 \
      --prompt-len 128 --batch-sizes 1,8,32,64 --out "$R/decode_cascade_graphs$c.json" 2>>"$R/check.log" >/dev/null
  done
  python3 - "$R" <<'PY'
import json, sys
on, off = (json.load(open(f"{sys.argv[1]}/decode_cascade_graphs{c}.json"))["results"] for c in (1, 0))
for a, b in zip(on, off):
    print(f"batch {a['batch_size']:3d}: ms/step cascade graphs {a['decode_ms_per_step_median']:.3f} (replays {a['graph_replays']}, captures {a['graph_captures']})"
          f" eager {b['decode_ms_per_step_median']:.3f} | grouped steps {a['decode_steps_with_cascade_groups']} | tokens equal {a['output_tokens_sha256'] == b['output_tokens_sha256']}")
PY
fi
if want sampling; then
  log "sampling: greedy vs temperature 0.6, and the latency workload, this build and the base"
  for temp in 0 0.6; do
    "$B/nanohost" bench-decode --model "$MODEL" --plugin "$B/plugins/libstandard.so" --batch-sizes "${BATCHES:-1,4,64}" \
      --temperature $temp --out "$R/decode_t$temp.json" 2>>"$R/check.log" >/dev/null
    python3 -c "
import json, sys
for r in json.load(open(sys.argv[1]))['results']:
    print('temperature', sys.argv[2], 'batch', r['batch_size'], 'ms/step %.3f' % r['decode_ms_per_step_median'], r['decode_step_split'], r['graph_host_us_mean'])
" "$R/decode_t$temp.json" $temp | tee -a "$R/sampling.txt"
  done
  for bin in nanohost nanohost-base; do
    [ -x "$B/$bin" ] || continue
    (cd "$B" && ./$bin run --model "$MODEL" --plugin plugins/libstandard.so --workload latency --out "$R/latency-$bin" --timeout 300 2>>"$R/check.log" >/dev/null)
    python3 -c "
import json, sys
for r in json.load(open(sys.argv[1])):
    print(sys.argv[2], 'latency workload batch', r['batch_size'], 'ms/step p50 %.3f' % r['decode_ms_per_step_p50'], 'tokens', r['output_tokens_sha256'][:12])
" "$R/latency-$bin/results_standard.json" $bin | tee -a "$R/sampling.txt"
  done
fi
if want chain; then
  log "bench-chain: one kernel's cost in a replayed chain, PDL on and off"
  # CHAIN_PDL: which of PDL on (1) and off (0) to run; CHAIN_TAG names the run (for knob variants).
  for pdl in ${CHAIN_PDL:-1 0}; do
    f="$R/chain${CHAIN_TAG:-}_pdl$pdl.json"
    NANOHOST_PDL=$pdl "$B/nanohost" bench-chain --model "$MODEL" --rows "${CHAIN_ROWS:-1,64}" --out "$f" 2>>"$R/check.log" >/dev/null
    python3 -c "
import json, sys
for r in json.load(open(sys.argv[1]))['results']:
    print(sys.argv[2], 'pdl', sys.argv[3], 'rows %3d' % r['rows'], '%7.2f us/op' % r['us_per_op'], '%6.0f GB/s' % r['gb_per_s'], r['chain'])
" "$f" "${CHAIN_TAG:-}" $pdl | tee -a "$R/chain.txt"
  done
fi
if want profile; then
  log "ncu: one decode step's kernels at batch 1 and 64"
  for b in 1 64; do
    /usr/local/cuda/bin/ncu --clock-control none --metrics gpu__time_duration.sum --csv \
      "$B/nanohost" bench-decode --model "$MODEL" --plugin "$B/plugins/libstandard.so" --batch-sizes $b \
      --warmup-steps 0 --steps 2 --cuda-graphs off > "$R/ncu_b$b.csv" 2>>"$R/check.log"
  done
  python3 "$B/ncu_step.py" "$R/ncu_b1.csv" "$R/ncu_b64.csv" 2>&1 | tee "$R/ncu_step.txt" | head -40
fi
if want tune; then
  log "tune: rows small_matmul takes over from cuBLAS; attention under ncu sections"
  for rows in 0 2 4 8; do
    NANOHOST_SMALL_MATMUL_ROWS=$rows "$B/nanohost" bench-decode --model "$MODEL" \
      --plugin "$B/plugins/libstandard.so" --batch-sizes 1,2,4,8 --warmup-steps 4 --steps 48 --out "$R/tune_rows$rows.json" 2>>"$R/check.log" >/dev/null
  done
  python3 - "$R" <<'PY'
import glob, json, os, sys
for f in sorted(glob.glob(f"{sys.argv[1]}/tune_*.json")):
    rows = json.load(open(f))["results"]
    print(os.path.basename(f), " ".join(f"b{r['batch_size']}={r['decode_ms_per_step_median']:.3f}" for r in rows))
PY
  /usr/local/cuda/bin/ncu --clock-control none -k regex:paged_attention --launch-skip 28 --launch-count 1 \
    --section SpeedOfLight --section Occupancy --section WarpStateStats --section MemoryWorkloadAnalysis \
    "$B/nanohost" bench-decode --model "$MODEL" --plugin "$B/plugins/libstandard.so" --batch-sizes 64 \
    --warmup-steps 0 --steps 2 --cuda-graphs off > "$R/ncu_attention_b64.txt" 2>>"$R/check.log"
  grep -E "Duration|Memory Throughput|DRAM Throughput|Achieved Occupancy|Theoretical Occupancy|Registers|Stall|Warp Cycles|L1/TEX Hit|L2 Hit|Compute \(SM\)" "$R/ncu_attention_b64.txt" | head -30
fi
if want ncu-sample; then
  log "ncu: one sampling launch at batch 64, greedy and temperature 0.6, this build and the base"
  for bin in nanohost nanohost-base; do
    [ -x "$B/$bin" ] || continue
    for temp in 0 0.6; do
      /usr/local/cuda/bin/ncu --clock-control none -k regex:sample_rows --launch-skip 2 --launch-count 1 \
        --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats --section SchedulerStats \
        --section MemoryWorkloadAnalysis --section InstructionStats "$B/$bin" bench-decode --model "$MODEL" \
        --plugin "$B/plugins/libstandard.so" --batch-sizes 64 --warmup-steps 1 --steps 3 --cuda-graphs off \
        --temperature $temp > "$R/ncu_sample_${bin}_t$temp.txt" 2>>"$R/check.log"
      grep -E "Duration|DRAM Throughput|Achieved Occupancy|Warp Cycles Per Issued|Issue Slots Busy|No Eligible|Executed Instructions  |Compute \(SM\)|Grid Size|Registers" \
        "$R/ncu_sample_${bin}_t$temp.txt" | sed "s/^/$bin t$temp /"
    done
  done
fi
if want ncu-attention; then
  log "ncu: one decode attention launch at batch 64, this build and the base"
  for bin in nanohost nanohost-base; do
    [ -x "$B/$bin" ] || continue
    /usr/local/cuda/bin/ncu --clock-control none -k regex:paged_attention --launch-skip 28 --launch-count 1 \
      --section SpeedOfLight --section Occupancy --section WarpStateStats --section SchedulerStats --section MemoryWorkloadAnalysis \
      --section InstructionStats "$B/$bin" bench-decode --model "$MODEL" --plugin "$B/plugins/libstandard.so" --batch-sizes 64 \
      --warmup-steps 0 --steps 2 --cuda-graphs off > "$R/ncu_attention_$bin.txt" 2>>"$R/check.log"
    grep -E "Duration|DRAM Throughput|Achieved Occupancy|Warp Cycles Per Issued|Issue Slots Busy|No Eligible|Executed Instructions  |Compute \(SM\)" "$R/ncu_attention_$bin.txt" | sed "s/^/$bin /"
  done
fi
if want hf; then
  log "transformers decode bench"
  python3 "$B/transformers_decode_bench.py" "$MODEL" "$R/decode_transformers.json" "${HF_MODES:-eager,static}" 2>>"$R/check.log"
fi
log "done"
tar czf "$DEST/gpu-results.tgz" -C "$(dirname "$R")" results
echo "results in $DEST/gpu-results.tgz"
