"""Fine-tune PairRM on preference rows, then evaluate it (tiny local defaults: runs on a CPU in about a minute).

    python examples/train_pairrm.py                          # tiny random backbone + synthetic rule
    python examples/train_pairrm.py --model microsoft/deberta-v3-large --output pairrm-new  # real run (GPU)

With ``--model`` a DeBERTa-v2/v3 backbone starts a fresh PairRM; a PairRM checkpoint (e.g. llm-blender/PairRM-hf)
continues training. The synthetic task: the better answer holds a positive word, the worse one a negative word.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

from pairrm_hf import PairRM
from pairrm_hf.evaluation.metrics import pairwise_accuracy
from pairrm_hf.training import train_pairrm

GOOD, BAD = ["good", "yes", "best", "thanks"], ["bad", "no", "worst", "sorry"]
FILL = "the a is are to of and in that it for on with as at by this from or which one two three".split()


def synthetic_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)

    def filler(k):
        return " ".join(rng.choice(FILL) for _ in range(k))

    return [
        {
            "prompt": filler(4) + "?",
            "chosen": f"{filler(rng.randint(0, 3))} {rng.choice(GOOD)}",
            "rejected": f"{filler(rng.randint(0, 3))} {rng.choice(BAD)}",
        }
        for _ in range(n)
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="backbone or PairRM folder/id (default: a tiny random PairRM)")
    parser.add_argument("--output", default=None, help="output folder (default: a temporary folder)")
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--lr", type=float, default=5e-3)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="pairrm-train-"))
    model = args.model
    if model is None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from pairrm_hf.testing import build_tiny_pairrm

        model = str(build_tiny_pairrm(work / "start", hidden=32))
    output = args.output or str(work / "trained")
    held_out = synthetic_rows(100, seed=999)
    print(
        "held-out accuracy before:",
        pairwise_accuracy(PairRM.from_pretrained(model, device="cpu"), held_out)["accuracy"]
        if args.model is None
        else "(skipped)",
    )
    train_pairrm(
        model,
        synthetic_rows(1000, seed=0),
        output_dir=output,
        max_steps=args.steps,
        learning_rate=args.lr,
        per_device_train_batch_size=8,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        save_strategy="no",
        logging_steps=20,
    )
    rm = PairRM.from_pretrained(output)
    print("held-out accuracy after:", pairwise_accuracy(rm, held_out)["accuracy"])
    print("saved to", output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
