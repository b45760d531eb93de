"""Per-kernel GPU time of one decode step, from ncu's CSV (gpu__time_duration.sum of every
kernel of a short bench-decode run with graphs off): the kernels between the last two
`sample_rows` launches are one whole step (forward and sampling).
    python3 ncu_step.py ncu_b1.csv [ncu_b64.csv ...]   -> a table per file, and JSON beside each"""
import csv, json, re, sys
from collections import OrderedDict

def step_kernels(path):
    rows = []
    with open(path) as f:
        lines = [l for l in f if l.startswith('"')]
    for r in csv.DictReader(lines):
        if r.get("Metric Name") != "gpu__time_duration.sum":
            continue
        name = re.sub(r"\(.*", "", r["Kernel Name"]).strip()
        unit = r.get("Metric Unit", "ns")
        v = float(r["Metric Value"].replace(",", ""))
        us = v / 1000 if unit in ("ns", "nsecond") else v if unit in ("us", "usecond") else v * 1000 if unit in ("ms", "msecond") else v / 1000
        rows.append((name, us))
    ends = [i for i, (n, _) in enumerate(rows) if n.startswith("sample_rows")]
    if len(ends) < 2:
        raise SystemExit(f"{path}: fewer than two sample_rows launches ({len(rows)} kernels)")
    return rows[ends[-2] + 1: ends[-1] + 1]

for path in sys.argv[1:]:
    ks = step_kernels(path)
    groups = OrderedDict()
    for n, us in ks:
        key = n if len(n) < 70 else n[:67] + "..."
        c, t = groups.get(key, (0, 0.0))
        groups[key] = (c + 1, t + us)
    total = sum(us for _, us in ks)
    print(f"== {path}: {len(ks)} kernels, {total:.1f} us of GPU time in one decode step")
    for n, (c, t) in sorted(groups.items(), key=lambda kv: -kv[1][1]):
        print(f"{t:9.1f} us  {100 * t / total:5.1f}%  {c:4d} x {t / c:7.2f} us  {n}")
    json.dump({"kernels": len(ks), "total_us": total, "by_kernel": {n: {"count": c, "total_us": t} for n, (c, t) in groups.items()}},
              open(path.replace(".csv", ".json"), "w"), indent=1)
