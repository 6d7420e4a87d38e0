"""Comparison budgets on a ranker that has learned something: each schedule against the full ``max_logits`` ranking.

It trains a tiny PairRM (``train_pairrm`` from a random tiny checkpoint, linear schedule with warm-up, the recipe
of the ranker learning tests) on a noisy synthetic preference rule, then ranks ``n`` candidates per prompt with
every ranking method of :data:`pairrm_hf.ranking.methods.RANKING_METHODS` and reports, against that model's own full
``max_logits`` ranking: top-1 agreement (the schedule's best is a rank-1 candidate of the full ranking), mean
Kendall tau-b of the scores and the ordered pairs scored per input. ``--int8`` also reports the decision flips of
``quantize="int8"`` on the same data. Run from the repository root (about 10 minutes on 2 CPU threads)::

    python -m benchmarks.bench_budget --n 16 64 --inputs 100 24 --json budget.json

**The rule.** A candidate holds 0–3 words from a positive list and 0–3 from a negative list among 2–6 filler
words; its quality is the sum of the words' weights (positive words +1.0…+2.2, negative −0.8…−1.9, fillers 0).
Training pairs prefer the higher-quality answer, and 10% of their labels are flipped. Candidates for ranking are
drawn the same way, distinct texts within each prompt (candidates with the same positive and negative words tie).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pairrm_hf import PairRM
from pairrm_hf.evaluation.metrics import kendall_tau
from pairrm_hf.ranking.methods import RANKING_METHODS
from pairrm_hf.testing import build_tiny_pairrm
from pairrm_hf.training import train_pairrm

GOOD = ["good", "yes", "best", "thanks"]
BAD = ["bad", "no", "worst", "sorry"]
WEIGHTS = {"good": 1.0, "yes": 1.3, "best": 1.7, "thanks": 2.2, "bad": -1.1, "no": -1.4, "worst": -1.9, "sorry": -0.8}
FILL = "the a is are to of and in that it for on with as at by this from or which one two three".split()


def candidate(rng: random.Random) -> tuple[str, float]:
    """A synthetic answer and its quality under the rule in the module docstring."""
    good, bad = rng.randint(0, 3), rng.randint(0, 3)
    words = [rng.choice(FILL) for _ in range(rng.randint(2, 6))]
    words += [rng.choice(GOOD) for _ in range(good)] + [rng.choice(BAD) for _ in range(bad)]
    rng.shuffle(words)
    return " ".join(words), sum(WEIGHTS.get(w, 0.0) for w in words)


def prompt(rng: random.Random) -> str:
    """A filler question (the rule ignores it)."""
    return " ".join(rng.choice(FILL) for _ in range(4)) + "?"


def preference_rows(count: int, seed: int, noise: float = 0.1) -> list[dict]:
    """TRL-style ``{"prompt", "chosen", "rejected"}`` rows; ``noise`` of them have the labels swapped."""
    rng = random.Random(seed)
    rows = []
    while len(rows) < count:
        (a, qa), (b, qb) = candidate(rng), candidate(rng)
        if qa == qb:
            continue
        chosen, rejected = (a, b) if qa > qb else (b, a)
        if rng.random() < noise:
            chosen, rejected = rejected, chosen
        rows.append({"prompt": prompt(rng), "chosen": chosen, "rejected": rejected})
    return rows


def ranking_inputs(inputs: int, n: int, seed: int) -> tuple[list[str], list[list[str]], list[list[float]]]:
    """Prompts with ``n`` distinct candidates each, and the rule's quality of every candidate."""
    rng = random.Random(seed)
    prompts, cands, quality = [], [], []
    for _ in range(inputs):
        seen: dict[str, float] = {}
        while len(seen) < n:
            text, q = candidate(rng)
            seen.setdefault(text, q)
        prompts.append(prompt(rng))
        cands.append(list(seen))
        quality.append(list(seen.values()))
    return prompts, cands, quality


def train(folder: Path, steps: int, seed: int) -> Path:
    """A tiny PairRM trained on the noisy rule (one pass over fresh rows); returns the checkpoint folder."""
    start = build_tiny_pairrm(folder / "start", hidden=32, seed=seed)
    out = folder / "trained"
    # A warmed-up linear 2e-3 schedule: a constant 5e-3 over 150 steps left a model that followed the rule at 0.81
    # and was strongly intransitive; 3000 steps of this one reach about 0.97 (see benchmarks/RESULTS.md).
    train_pairrm(
        str(start),
        preference_rows(16 * steps, seed=seed),
        output_dir=out,
        max_steps=steps,
        learning_rate=2e-3,
        per_device_train_batch_size=16,
        lr_scheduler_type="linear",
        warmup_steps=50,
        weight_decay=0.0,
        seed=seed,
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        logging_steps=10**6,
    )
    return out


def measure(rm: PairRM, prompts, cands, quality) -> dict[str, dict[str, float]]:
    """Per ranking method: top-1 agreement, Kendall tau vs full max_logits, pairs per input, seconds."""
    start = time.perf_counter()
    full = rm.rank_batch(prompts, cands, aggregation="max_logits")
    seconds = time.perf_counter() - start
    # how well the trained model itself follows the rule (its full ranking vs the rule's quality)
    rule_tau = float(np.nanmean([kendall_tau(np.asarray(q), f.scores) for q, f in zip(quality, full)]))
    out = {}
    for name in RANKING_METHODS:
        if name == "max_logits":
            got, took = full, seconds
        else:
            start = time.perf_counter()
            got = rm.rank_batch(prompts, cands, aggregation=name)
            took = time.perf_counter() - start
        top1 = [bool(f.ranks[int(np.argmin(g.ranks))] == 1) for f, g in zip(full, got)]
        taus = [kendall_tau(f.scores, g.scores) for f, g in zip(full, got)]
        out[name] = {
            "top1_agreement": float(np.mean(top1)),
            "kendall_tau": float(np.nanmean(taus)),
            "pairs_per_input": float(np.mean([g.comparisons for g in got])),
            "seconds": took,
            "model_vs_rule_tau": rule_tau,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    """Train, rank with every method, print a table and write JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", nargs="+", type=int, default=[16, 64])
    p.add_argument("--inputs", nargs="+", type=int, default=[100, 24], help="prompts per n (one value or one per n)")
    p.add_argument("--steps", type=int, default=3000, help="training steps (batch 16)")
    p.add_argument("--int8", action="store_true", help="also report quantize='int8' decision flips on the same data")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    inputs = args.inputs * len(args.n) if len(args.inputs) == 1 else args.inputs
    start = time.perf_counter()
    folder = train(Path(tempfile.mkdtemp(prefix="pairrm_budget_")), args.steps, args.seed)
    train_s = time.perf_counter() - start
    rm = PairRM.from_pretrained(folder, device="cpu", batch_size=64, backend="torch")
    held = preference_rows(400, seed=10_000 + args.seed, noise=0.0)
    margins = rm.compare([r["prompt"] for r in held], [r["chosen"] for r in held], [r["rejected"] for r in held])
    accuracy = float(np.mean(margins > 0))
    print(f"trained {args.steps} steps in {train_s:.0f} s; held-out pairwise accuracy on the clean rule {accuracy:.3f}")
    rows, int8_rows = [], []
    rm_int8 = (
        PairRM.from_pretrained(folder, device="cpu", batch_size=64, quantize="int8", backend="torch")
        if args.int8
        else None
    )
    print(
        f"{'n':>3} {'inputs':>6} {'method':10} {'top1':>5} {'tau':>6} {'pairs/input':>11} {'% of n(n-1)':>11} {'s':>6}"
    )
    for n, count in zip(args.n, inputs):
        prompts, cands, quality = ranking_inputs(count, n, seed=args.seed + n)
        for name, m in measure(rm, prompts, cands, quality).items():
            rows.append({"n": n, "inputs": count, "method": name, **m})
            print(
                f"{n:>3} {count:>6} {name:10} {m['top1_agreement']:5.2f} {m['kendall_tau']:6.3f} "
                f"{m['pairs_per_input']:11.1f} {100 * m['pairs_per_input'] / (n * (n - 1)):11.1f} "
                f"{m['seconds']:6.1f}",
                flush=True,
            )
        print(f"    model's full ranking vs the rule: Kendall tau {rows[-1]['model_vs_rule_tau']:.3f}")
        if args.int8:
            report = rm_int8.check_precision(prompts, cands)
            decisions = count * n * (n - 1) // 2
            int8_rows.append({"n": n, "inputs": count, "decisions": decisions, **dataclasses.asdict(report)})
            print(
                f"    int8 vs fp32 on these inputs: max |Δ logit| {report.max_abs_logit_diff:.3g}, "
                f"{report.symmetric_flips} of {decisions} symmetric decisions flipped "
                f"({100 * report.symmetric_flips / decisions:.2f}%), top-1 changed on {report.top1_changes} "
                f"of {count} inputs",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "args": vars(args),
                    "train_seconds": train_s,
                    "heldout_accuracy": accuracy,
                    "rows": rows,
                    "int8": int8_rows,
                },
                f,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
