"""Rank candidate answers for prompts with PairRM.

python examples/rank.py                                   # llm-blender/PairRM-hf from the Hub
python examples/rank.py --model path/to/checkpoint --device cpu
"""

import argparse

from pairrm_hf import PairRM

parser = argparse.ArgumentParser()
parser.add_argument("--model", default="llm-blender/PairRM-hf")
parser.add_argument("--device", default=None)
args = parser.parse_args()

rm = PairRM.from_pretrained(args.model, device=args.device)
prompts = ["hello, how are you!", "I love you!"]
candidates = [
    ["get out!", "hi! I am fine, thanks!", "bye!"],
    ["I love you too!", "I hate you!", "Thanks! You're a good guy!"],
]
for prompt, ranking in zip(prompts, rm.rank_batch(prompts, candidates)):
    print(f"# {prompt}")
    for item in ranking.ranked():
        print(f"  rank {item.rank}  score {item.score:+.3f}  {item.text}")
