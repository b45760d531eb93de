"""Compares nanohost's teacher-forced logits with transformers' on the same weights.

usage: compare_transformers.py MODEL_DIR INPUT.json NANOHOST_LOGITS.safetensors DTYPE OUT.json
Positions compared: the last prompt token and each continuation token (what the engine's
prefill and decode steps produce). Reports top-1 agreement and the largest differences; the
relative difference of a row is max|ours - ref| / max|ref|.
"""
import json
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

model_dir, input_json, ours_path, dtype_name, out_json = sys.argv[1:6]
dtype = {"bf16": torch.bfloat16, "f32": torch.float32}[dtype_name]
inp = json.load(open(input_json))
ours = load_file(ours_path)["logits"]
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).cuda().eval()
agree = total = 0
worst_abs = worst_rel = 0.0
per_seq = []
refs = []
with torch.no_grad():
    for i, (p, c) in enumerate(zip(inp["prompts"], inp["continuations"])):
        ids = torch.tensor([p + c], device="cuda")
        ref = model(ids).logits[0].float()[len(p) - 1 : len(p) + len(c)]
        refs.append(ref.cpu())
        mine = ours[i].cuda().float()
        same = (ref.argmax(-1) == mine.argmax(-1)).sum().item()
        diff = (ref - mine).abs()
        rel = (diff.max(-1).values / ref.abs().max(-1).values).max().item()
        agree += same
        total += ref.shape[0]
        worst_abs = max(worst_abs, diff.max().item())
        worst_rel = max(worst_rel, rel)
        per_seq.append({"prompt_len": len(p), "positions": ref.shape[0], "top1_agree": same, "max_abs_diff": diff.max().item(), "max_rel_diff": rel})
result = {
    "dtype": dtype_name,
    "transformers": __import__("transformers").__version__,
    "torch": torch.__version__,
    "positions": total,
    "top1_agreement": agree / total,
    "max_abs_logit_diff": worst_abs,
    "max_rel_logit_diff": worst_rel,
    "sequences": per_seq,
}
json.dump(result, open(out_json, "w"), indent=2)
torch.save(refs, f"/tmp/nanohost-hf-{dtype_name}.pt")  # for precision_report.py
print(json.dumps({k: v for k, v in result.items() if k != "sequences"}))
