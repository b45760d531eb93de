"""Where one replayed decode step's time goes on the device, from nsys's per-kernel trace
(`nsys profile --cuda-graph-trace=node`, then `nsys stats --report cuda_gpu_trace --format csv`).
The kernels after one `sample_rows` launch up to and including the next are one whole step.

Per step (median over the last steps of the trace) it reports:
  period   from one step's sampling end to the next's (what bench-decode's ms/step sees, minus
           the token readback that overlaps nothing);
  lead     from the previous sampling's end to this step's first kernel (host work, the graph
           launch, the token readback);
  busy     the union of the step's kernel intervals (kernels overlap under PDL);
  holes    the span from first kernel start to last kernel end that no kernel covers;
and, by kernel name, the summed duration and the summed hole before that kernel starts
(the idle time it waits after its predecessor ends: a launch the previous kernel did not hide).
    python3 nsys_step.py trace.csv [label]  -> a table, and JSON beside the CSV"""
import csv, json, statistics, sys
from collections import OrderedDict


def kernels(path):
    with open(path) as f:
        lines = [l for l in f if l.strip()]
    head = next(i for i, l in enumerate(lines) if "Start" in l and "Duration" in l)
    out = []
    for r in csv.DictReader(lines[head:]):
        start = next(v for k, v in r.items() if k and k.startswith("Start"))
        dur = next(v for k, v in r.items() if k and k.startswith("Duration"))
        name = r.get("Name") or r.get("Kernel Name") or ""
        if not name or "[CUDA mem" in name:
            continue
        short = name.split("(")[0].strip()
        if short.startswith("void "):
            short = short[5:]
        out.append((float(start) / 1000, float(dur) / 1000, short[:60]))
    out.sort()
    return out


def steps(ks, keep=6):
    ends = [i for i, k in enumerate(ks) if k[2].startswith("sample_rows")]
    return [ks[a + 1: b + 1] for a, b in zip(ends, ends[1:])][-keep:], ends


def analyse(step, prev_end):
    first, last_end = step[0][0], max(s + d for s, d, _ in step)
    busy, cur_s, cur_e = 0.0, None, None
    by = OrderedDict()
    frontier = prev_end
    for s, d, n in step:
        c = by.setdefault(n, [0, 0.0, 0.0])
        c[0] += 1
        c[1] += d
        c[2] += max(0.0, s - frontier)
        frontier = max(frontier, s + d)
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                busy += cur_e - cur_s
            cur_s, cur_e = s, s + d
        else:
            cur_e = max(cur_e, s + d)
    busy += cur_e - cur_s
    lead = first - prev_end
    return {"period_us": last_end - prev_end, "lead_us": lead, "busy_us": busy,
            "holes_us": (last_end - first) - busy, "kernels": len(step), "by_kernel": by}


def main():
    path, label = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else sys.argv[1])
    ks = kernels(path)
    ss, ends = steps(ks)
    if not ss:
        raise SystemExit(f"{path}: fewer than two sample_rows launches among {len(ks)} kernels")
    res = []
    for st in ss:
        i = ks.index(st[0]) - 1
        res.append(analyse(st, ks[i][0] + ks[i][1]))
    med = {k: statistics.median(r[k] for r in res) for k in ("period_us", "lead_us", "busy_us", "holes_us")}
    rep = min(res, key=lambda r: abs(r["period_us"] - med["period_us"]))
    print(f"== {label}: {len(res)} steps, medians: period {med['period_us']:.1f} us, lead {med['lead_us']:.1f}, "
          f"busy {med['busy_us']:.1f}, holes {med['holes_us']:.1f}; {rep['kernels']} kernels a step")
    print(f"{'sum us':>9} {'hole before':>11} {'count':>5} {'us each':>8}  kernel (the step nearest the median)")
    for n, (c, t, h) in sorted(rep["by_kernel"].items(), key=lambda kv: -kv[1][1]):
        print(f"{t:9.1f} {h:11.1f} {c:5d} {t / c:8.2f}  {n}")
    json.dump({"label": label, "median": med, "steps": [{k: v for k, v in r.items() if k != "by_kernel"} for r in res],
               "by_kernel": {n: {"count": c, "sum_us": t, "hole_before_us": h} for n, (c, t, h) in rep["by_kernel"].items()}},
              open(path.rsplit(".", 1)[0] + ".json", "w"), indent=1)


if __name__ == "__main__":
    main()
