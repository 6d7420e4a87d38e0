"""Worker of tests/test_training_distributed.py: ``train_pairrm`` on the synthetic preference rule, under
``torchrun`` (N CPU processes, gloo) or alone. Rank 0 writes the loss curve and the world size to ``OUT/run.json``.

Usage: ``python -m torch.distributed.run --nproc_per_node 2 tests/workers/train_distributed.py START OUT STEPS``.
"""

from __future__ import annotations

import json
import os
import random
import sys

import torch

GOOD, BAD = ["good", "yes", "best", "thanks"], ["bad", "no", "worst", "sorry"]
FILL = "the a is are to of and in that it for on with as at by this from or which one two three".split()
GLOBAL_BATCH = 8


def synthetic(n: int, seed: int) -> list[dict]:
    """The chosen answer holds a positive word, the rejected one a negative word, among random filler."""
    rng = random.Random(seed)

    def filler(k):
        return " ".join(rng.choice(FILL) for _ in range(k))

    return [
        {
            "prompt": filler(4) + "?",
            "chosen": f"{filler(rng.randint(0, 3))} {rng.choice(GOOD)} {filler(rng.randint(0, 3))}",
            "rejected": f"{filler(rng.randint(0, 3))} {rng.choice(BAD)} {filler(rng.randint(0, 3))}",
        }
        for _ in range(n)
    ]


def main(start: str, out: str, steps: int) -> None:
    from pairrm_hf.training import train_pairrm

    torch.set_num_threads(1)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    trainer = train_pairrm(
        start,
        synthetic(1000, seed=0),
        output_dir=out,
        max_steps=steps,
        learning_rate=5e-3,
        per_device_train_batch_size=GLOBAL_BATCH // world,  # the same global batch in every run
        lr_scheduler_type="constant",
        weight_decay=0.0,
        seed=0,
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        logging_steps=5,
        ddp_backend="gloo" if world > 1 else None,
    )
    if trainer.args.process_index == 0:
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        record = {"world_size": trainer.args.world_size, "steps": trainer.state.global_step, "losses": losses}
        with open(os.path.join(out, "run.json"), "w") as f:
            json.dump(record, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
