"""Sample n answers from a chat LM and keep the one PairRM ranks best.

python examples/best_of_n.py --model HuggingFaceTB/SmolLM2-135M-Instruct --ranker llm-blender/PairRM-hf
"""

import argparse

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from pairrm_hf import best_of_n_generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct", help="causal LM folder or Hub id")
    parser.add_argument("--ranker", default="llm-blender/PairRM-hf", help="PairRM folder or Hub id")
    parser.add_argument("-n", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    prompts = ["Write one sentence about the sea."]
    best = best_of_n_generate(
        model, tokenizer, prompts, n=args.n, ranker=args.ranker, method="full", max_new_tokens=args.max_new_tokens
    )
    print("best of", args.n, ":", best[0])


if __name__ == "__main__":
    main()
