"""Rewards against a reference answer: C[c, ref] − C[ref, c] (> 0: better than the reference, 0 for the reference).

python examples/reward_with_ref.py [--model PATH_OR_ID] [--device cpu]
"""

import argparse

from pairrm_hf import PairRM

parser = argparse.ArgumentParser()
parser.add_argument("--model", default="llm-blender/PairRM-hf")
parser.add_argument("--device", default=None)
args = parser.parse_args()

rm = PairRM.from_pretrained(args.model, device=args.device)
prompts = ["What is the capital of France?"]
candidates = [["Paris.", "It is Paris, the city of light.", "Berlin."]]
references = ["The capital of France is Paris."]
for name, rewards in [
    ("explicit reference", rm.rank_with_ref(prompts, candidates, references=references)),
    ("longest candidate as reference", rm.rank_with_ref(prompts, candidates, ref_mode="longest")),
]:
    print(name)
    for text, reward in zip(candidates[0], rewards[0]):
        print(f"  {reward:+.3f}  {text}")
