"""transformers' decode step time on the same weights and card, for comparison with
`nanohost bench-decode`: eager (dynamic cache) and static cache (compiled forward).

usage: transformers_decode_bench.py MODEL_DIR OUT.json [MODES] [BATCHES]
ms/step = (time(generate 1 + N tokens) - time(generate 1 token)) / N, greedy, 256-token prompts,
so prefill and set-up cancel out.
"""
import json
import sys
import time

import torch
from transformers import AutoModelForCausalLM

model_dir, out_json = sys.argv[1:3]
modes = (sys.argv[3] if len(sys.argv) > 3 else "eager,static").split(",")
batches = [int(b) for b in (sys.argv[4] if len(sys.argv) > 4 else "1,4,64").split(",")]
N, PROMPT = 64, 256
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).cuda().eval()
gen = torch.Generator().manual_seed(42)
results = []


def timed(ids, new, **kw):
    torch.cuda.synchronize()
    t = time.perf_counter()
    model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new, do_sample=False, **kw)
    torch.cuda.synchronize()
    return time.perf_counter() - t


for mode in modes:
    kw = {"cache_implementation": "static"} if mode == "static" else {}
    for b in batches:
        ids = torch.randint(0, 10001, (b, PROMPT), generator=gen).cuda()
        started = time.perf_counter()
        for _ in range(2):  # warm-up (compiles the static-cache forward)
            timed(ids, N + 1, **kw)
        warmup_s = time.perf_counter() - started
        one = min(timed(ids, 1, **kw) for _ in range(3))
        full = min(timed(ids, N + 1, **kw) for _ in range(3))
        r = {"mode": mode, "batch_size": b, "prompt_len": PROMPT, "decode_ms_per_step": (full - one) / N * 1e3, "warmup_s": warmup_s}
        print(json.dumps(r), flush=True)
        results.append(r)
        json.dump({"partial": True, "results": results}, open(out_json, "w"), indent=2)
json.dump({"transformers": __import__("transformers").__version__, "torch": torch.__version__, "gpu": torch.cuda.get_device_name(), "results": results}, open(out_json, "w"), indent=2)
