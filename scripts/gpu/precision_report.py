"""How far each bf16 implementation is from the f32 truth (transformers in f32, which nanohost
in f32 matches to ~1e-6): top-1 agreement and largest relative row difference, per
implementation. Puts the bf16-vs-bf16 comparison in context: two bf16 engines disagree where
either one's rounding flips a near-tie.

usage: precision_report.py OURS_BF16.safetensors OURS_F32.safetensors OUT.json
(reads /tmp/nanohost-hf-{bf16,f32}.pt written by compare_transformers.py)
"""
import json
import sys

import torch
from safetensors.torch import load_file

ours_bf16 = load_file(sys.argv[1])["logits"]
ours_f32 = load_file(sys.argv[2])["logits"]
hf_bf16 = torch.load("/tmp/nanohost-hf-bf16.pt")
hf_f32 = torch.load("/tmp/nanohost-hf-f32.pt")


def against_truth(rows):
    agree = total = 0
    rel = 0.0
    for mine, truth in zip(rows, hf_f32):
        mine, truth = mine.float(), truth.float()
        agree += (mine.argmax(-1) == truth.argmax(-1)).sum().item()
        total += truth.shape[0]
        rel = max(rel, ((mine - truth).abs().max(-1).values / truth.abs().max(-1).values).max().item())
    return {"top1_agreement_with_f32": agree / total, "max_rel_diff_to_f32": rel, "positions": total}


result = {
    "truth": "transformers f32",
    "nanohost_f32": against_truth([ours_f32[i] for i in range(ours_f32.shape[0])]),
    "nanohost_bf16": against_truth([ours_bf16[i] for i in range(ours_bf16.shape[0])]),
    "transformers_bf16": against_truth(hf_bf16),
}
json.dump(result, open(sys.argv[3], "w"), indent=2)
print(json.dumps(result))
