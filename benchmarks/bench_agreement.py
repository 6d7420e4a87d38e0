"""How well the budgeted schedules agree with the full ``max_logits`` ranking (all n(n−1) ordered pairs).

For each input it ranks the candidates fully and with ``bubble`` (2(n−1) pairs), ``reference`` (2n) and ``sort``
(≤ 2·n·⌈log2 n⌉), then reports top-1 agreement (the schedule's best is a rank-1 candidate of the full ranking),
mean Kendall tau-b of the scores (bubble: the pass's win counts, so its tau is low by construction) and the mean
ordered pairs scored. Run from the repository root::

    python -m benchmarks.bench_agreement --shapes tiny --workloads short mixed --n 6 16 --inputs 16
    python -m benchmarks.bench_agreement --model /path/to/PairRM-hf --workloads mixed --n 16   # a real checkpoint

Random-weight models (``--shapes``) only show that the machinery works; choose a schedule from numbers measured
with a real checkpoint (``--model``) on data like yours.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from benchmarks.workloads import SHAPES, WORKLOADS, build_model, build_tokenizer, make_inputs
from pairrm_hf import PairRM
from pairrm_hf.evaluation.metrics import kendall_tau

SCHEDULES = ("bubble", "reference", "sort")


def agreement(rm: PairRM, prompts, cands) -> dict[str, dict[str, float]]:
    """Per schedule: top-1 agreement, mean Kendall tau vs full max_logits, mean ordered pairs per input."""
    full = rm.rank_batch(prompts, cands, aggregation="max_logits")
    out = {}
    for name in SCHEDULES:
        got = rm.rank_batch(prompts, cands, aggregation=name)
        top1 = [bool(f.ranks[int(np.argmin(g.ranks))] == 1) for f, g in zip(full, got)]
        taus = [kendall_tau(f.scores, g.scores) for f, g in zip(full, got)]
        out[name] = {
            "top1_agreement": float(np.mean(top1)),
            "kendall_tau": float(np.nanmean(taus)),
            "pairs_per_input": float(np.mean([g.comparisons for g in got])),
        }
    out["max_logits"] = {
        "top1_agreement": 1.0,
        "kendall_tau": 1.0,
        "pairs_per_input": float(np.mean([f.comparisons for f in full])),
    }
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point: measure agreement for every selected shape/model, workload and n; print and save."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", nargs="+", default=["tiny"], choices=list(SHAPES))
    p.add_argument("--model", default=None, help="a PairRM checkpoint folder/id instead of random shapes")
    p.add_argument("--workloads", nargs="+", default=["short", "mixed"], choices=list(WORKLOADS))
    p.add_argument("--n", nargs="+", type=int, default=[6, 16])
    p.add_argument("--inputs", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    tokenizer = build_tokenizer()
    models = (
        [(args.model, PairRM.from_pretrained(args.model))]
        if args.model
        else [
            (s, PairRM(build_model(s, tokenizer), tokenizer, device="cpu" if not torch.cuda.is_available() else None))
            for s in args.shapes
        ]
    )
    rows = []
    for name, rm in models:
        for workload in args.workloads:
            for n in args.n:
                # texts come from the benchmark vocabulary; with a real checkpoint they are nonsense but valid
                prompts, cands = make_inputs(tokenizer, workload, args.inputs, n, seed=args.seed)
                for schedule, m in agreement(rm, prompts, cands).items():
                    rows.append({"model": name, "workload": workload, "n": n, "schedule": schedule, **m})
                    print(
                        f"{name:8} {workload:6} n={n:<3} {schedule:10} top1={m['top1_agreement']:.2f} "
                        f"tau={m['kendall_tau']:.3f} pairs/input={m['pairs_per_input']:.1f}",
                        flush=True,
                    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
