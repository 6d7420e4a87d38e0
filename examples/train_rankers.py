"""Train LLM-Blender's three ranker types on the same data and compare them as the paper does.

By default everything is tiny and offline: a random 2-layer BERT-style encoder (``pairrm_hf.testing``) and a
synthetic MixInstruct-style task (an answer is better the more positive words it holds); a run takes about a
minute on a CPU. Point ``--backbone`` at a real encoder (``roberta-base``, ``answerdotai/ModernBERT-base``, ...) and
``--train``/``--test`` at MixInstruct ``.jsonl`` files to reproduce the comparison on real data.

    python examples/train_rankers.py                       # tiny, synthetic, CPU
    python examples/train_rankers.py --backbone roberta-base --train train.jsonl --test test.jsonl \\
        --metric bartscore --steps 2000 --source-max-length 128 --candidate-max-length 128
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from pairrm_hf import PairRM, compare_rankers, format_comparison_table
from pairrm_hf.data.mixinstruct import read_jsonl
from pairrm_hf.testing import build_tiny_encoder, synthetic_ranking_rows
from pairrm_hf.tokenization.tokenization_pairrm import PairLengths
from pairrm_hf.training.rankers import train_ranker

#: ranker type → (steps, learning rate) for the tiny default run; PairRanker's pair rows need more steps.
TINY_SETTINGS = {"pairranker": (300, 5e-3), "summareranker": (100, 3e-3), "dual": (100, 3e-3)}


def main(argv: list[str] | None = None) -> list[dict]:
    """Train the three rankers, print the comparison table and return its rows."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", help="encoder folder or Hub id (default: a tiny random BERT built here)")
    parser.add_argument("--family", default="bert", help="tiny backbone family when --backbone is not given")
    parser.add_argument("--train", help="MixInstruct .jsonl for training (default: 600 synthetic rows)")
    parser.add_argument("--test", help="MixInstruct .jsonl for the comparison (default: 100 synthetic rows)")
    parser.add_argument("--metric", action="append", help="metric(s) to learn and to rank by (default: quality)")
    parser.add_argument("--types", nargs="+", default=list(TINY_SETTINGS), choices=list(TINY_SETTINGS))
    parser.add_argument("--steps", type=int, help="training steps for every type (default: tiny settings)")
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--source-max-length", type=int, default=32)
    parser.add_argument("--candidate-max-length", type=int, default=32)
    parser.add_argument("--output-dir", help="where to save the trained rankers (default: a temporary folder)")
    parser.add_argument("--json", help="also write the comparison rows to this file")
    args = parser.parse_args(argv)

    out = Path(args.output_dir or tempfile.mkdtemp(prefix="rankers-"))
    backbone = args.backbone or str(build_tiny_encoder(out / "backbone", args.family, seed=0))
    train = read_jsonl(args.train) if args.train else synthetic_ranking_rows(600, seed=0)
    test = read_jsonl(args.test) if args.test else synthetic_ranking_rows(100, seed=999)
    metrics = args.metric or ["quality"]
    lengths = PairLengths(args.source_max_length, args.candidate_max_length)
    rankers = {}
    for kind in args.types:
        steps, lr = TINY_SETTINGS[kind]
        train_ranker(
            backbone,
            train,
            ranker_type=kind,
            output_dir=out / kind,
            metrics=metrics,
            lengths=lengths,
            max_steps=args.steps or steps,
            learning_rate=args.learning_rate or lr,
            per_device_train_batch_size=8,
            lr_scheduler_type="constant",
            weight_decay=0.0,
            seed=0,
            save_strategy="no",
            disable_tqdm=True,
            logging_steps=10_000,
        )
        rankers[kind] = PairRM.from_pretrained(out / kind)
    results = compare_rankers(rankers, test, metrics=metrics, top_k=(1, 2), beat=[0])
    print(format_comparison_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
