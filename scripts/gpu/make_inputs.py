"""Teacher-forcing inputs: 4 prompts of different lengths and 32 continuation tokens each,
random ids (the prototype's 0..=10000), seeded."""
import json
import random
import sys

rng = random.Random(42)
lens = [100, 173, 229, 256]
doc = {
    "prompts": [[rng.randint(0, 10000) for _ in range(n)] for n in lens],
    "continuations": [[rng.randint(0, 10000) for _ in range(32)] for _ in lens],
}
json.dump(doc, open(sys.argv[1], "w"))
