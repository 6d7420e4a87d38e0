"""Rank candidates with PairRM, keep the best ones and fuse them with GenFuser (or a chat LM).

python examples/fuse.py --model llm-blender/gen_fuser_3b --ranker llm-blender/PairRM-hf
"""

import argparse

from transformers import pipeline

import pairrm_hf  # noqa: F401  (registers the pipeline tasks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--model", default="llm-blender/gen_fuser_3b", help="fuser folder or Hub id (seq2seq or chat LM)"
    )
    parser.add_argument("--ranker", default="llm-blender/PairRM-hf", help="PairRM folder or Hub id; '' to fuse all")
    parser.add_argument("--top-k", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    options = {"ranker": args.ranker, "top_k": args.top_k} if args.ranker else {}
    fuser = pipeline("generative-fusion", model=args.model, device=args.device, dtype="float32", **options)
    prompt = "Give three tips for staying healthy."
    candidates = [
        "Eat vegetables, sleep eight hours and walk every day.",
        "Drink water. Exercise.",
        "Sleep well, avoid smoking, and see a doctor once a year.",
    ]
    out = fuser(prompt, candidates, max_new_tokens=args.max_new_tokens)
    print("fused from:", out["candidates"])
    print("fused text:", out["fused_text"])


if __name__ == "__main__":
    main()
