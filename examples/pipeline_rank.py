"""Rank candidate answers with the `pairwise-ranking` pipeline.

python examples/pipeline_rank.py --model llm-blender/PairRM-hf
"""

import argparse

from transformers import pipeline

import pairrm_hf  # noqa: F401  (registers the pipeline tasks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="llm-blender/PairRM-hf", help="PairRM checkpoint folder or Hub id")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    ranker = pipeline("pairwise-ranking", model=args.model, device=args.device)
    prompt = "What is the capital of France?"
    candidates = ["Paris is the capital of France.", "The capital of France is Berlin.", "I don't know."]
    for row in ranker(prompt, candidates):
        print(f"rank {row['rank']}  score {row['score']:+.3f}  {row['candidate']}")
    duel = ranker(prompt, candidates[:2])
    first = next(row for row in duel if row["index"] == 0)
    print(f"P(first answer is better) = {first['probability']:.3f}")


if __name__ == "__main__":
    main()
