"""Compare two answers per prompt: symmetric logit (> 0: A is better) and the probability that A is better.

python examples/compare.py [--model PATH_OR_ID] [--device cpu]
"""

import argparse

from pairrm_hf import PairRM

parser = argparse.ArgumentParser()
parser.add_argument("--model", default="llm-blender/PairRM-hf")
parser.add_argument("--device", default=None)
args = parser.parse_args()

rm = PairRM.from_pretrained(args.model, device=args.device)
prompts = ["hello!", "I love you!"]
answers_a = ["hi!", "I hate you!"]
answers_b = ["f**k off!", "I love you, too!"]
logits = rm.compare(prompts, answers_a, answers_b)
probs = rm.compare_proba(prompts, answers_a, answers_b)
for prompt, a, b, logit, p in zip(prompts, answers_a, answers_b, logits, probs):
    print(f"{prompt!r}: A={a!r} vs B={b!r}  logit {logit:+.3f}  P(A better) {p:.3f}")
