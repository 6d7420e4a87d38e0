"""Distilled one-pass students against the teacher's own budgeted schedules, at their cost.

A tiny PairRM teacher learns the noisy synthetic rule of :mod:`benchmarks.bench_budget` (same recipe). Students
(tiny DeBERTa-v2 ``AutoModelForSequenceClassification`` on a word-level tokenizer) are distilled from its full
comparison matrices on ``--train-sets`` prompts of ``--train-n`` candidates, once per loss of
:data:`pairrm_hf.training.distillation.DISTILL_LOSSES`. On held-out candidate sets at each ``--n`` the table
reports, against the teacher's full ``max_logits`` ranking: forward passes per prompt (ordered pairs for the
teacher, n rows for a student), top-1 agreement (the method's best is a rank-1 candidate of the full ranking) and
mean Kendall tau-b of the scores. Run from the repository root (about 10 minutes on 2 CPU threads)::

    python -m benchmarks.bench_distill --json distill.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.bench_budget import ranking_inputs, train
from pairrm_hf import PairRM
from pairrm_hf.evaluation.metrics import kendall_tau
from pairrm_hf.ranking.aggregation import competition_ranks
from pairrm_hf.testing import build_tiny_encoder
from pairrm_hf.training.distillation import DISTILL_LOSSES, distill_pairrm, student_scores

TEACHER_METHODS = ("bubble", "knockout", "sort")


def agreement(full, scores: list[np.ndarray]) -> tuple[float, float]:
    """(top-1 agreement, mean Kendall tau-b) of per-set scores against the teacher's full rankings."""
    top1 = [bool(f.ranks[int(np.argmax(s))] == 1) for f, s in zip(full, scores)]
    taus = [kendall_tau(f.scores, s) for f, s in zip(full, scores)]
    return float(np.mean(top1)), float(np.nanmean(taus))


def student_top1(full, scores: list[np.ndarray]) -> float:
    """Top-1 agreement with the student's ties broken as a ranking would (its first rank-1 candidate)."""
    return float(np.mean([f.ranks[int(np.argmin(competition_ranks(s)))] == 1 for f, s in zip(full, scores)]))


def main(argv: list[str] | None = None) -> int:
    """Train a teacher, distil students with each loss, print the table and write JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", nargs="+", type=int, default=[8, 16])
    p.add_argument("--eval-sets", type=int, default=100, help="held-out prompts per n")
    p.add_argument("--teacher-steps", type=int, default=3000, help="teacher training steps (batch 16)")
    p.add_argument("--teacher", default=None, help="reuse a teacher trained by an earlier run (its folder)")
    p.add_argument("--temperature", type=float, default=1.0, help="distillation temperature")
    p.add_argument("--train-sets", type=int, default=600, help="distillation prompts")
    p.add_argument("--train-n", type=int, default=8, help="candidates per distillation prompt")
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--losses", nargs="+", default=list(DISTILL_LOSSES), choices=DISTILL_LOSSES)
    p.add_argument("--student-hidden", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="pairrm_distill_"))
    start = time.perf_counter()
    folder = args.teacher or train(work, args.teacher_steps, args.seed)
    teacher = PairRM.from_pretrained(folder, device="cpu", batch_size=64)
    teacher_s = time.perf_counter() - start
    print(f"teacher {folder}: {args.teacher_steps} steps in {teacher_s:.0f} s", flush=True)

    prompts, cands, _ = ranking_inputs(args.train_sets, args.train_n, seed=20_000 + args.seed)
    data = [{"prompt": q, "candidates": c} for q, c in zip(prompts, cands)]
    held = {n: ranking_inputs(args.eval_sets, n, seed=30_000 + args.seed + n) for n in args.n}
    full = {n: teacher.rank_batch(held[n][0], held[n][1]) for n in args.n}

    rows: list[dict] = []
    for method in TEACHER_METHODS:
        row = {"method": f"teacher {method}"}
        for n in args.n:
            got = teacher.rank_batch(held[n][0], held[n][1], aggregation=method)
            top1, tau = agreement(full[n], [g.scores for g in got])
            row[n] = {"passes": float(np.mean([g.comparisons for g in got])), "top1": top1, "tau": tau}
        rows.append(row)
    rows.append({"method": "teacher full", **{n: {"passes": n * (n - 1), "top1": 1.0, "tau": 1.0} for n in args.n}})

    steps_per_epoch = -(-args.train_sets // 8)
    for loss in args.losses:
        start = time.perf_counter()
        student = build_tiny_encoder(
            work / f"student-init-{loss}", "deberta-v2", seed=args.seed, hidden=args.student_hidden
        )
        result = distill_pairrm(
            teacher,
            data,
            student=student,
            output_dir=work / f"student-{loss}",
            loss=loss,
            temperature=args.temperature,
            max_length=64,
            max_steps=int(args.epochs * steps_per_epoch),
            per_device_train_batch_size=8,
            learning_rate=2e-3,
            lr_scheduler_type="linear",
            warmup_steps=30,
            weight_decay=0.0,
            seed=args.seed,
            use_cpu=True,
            disable_tqdm=True,
            logging_steps=10**6,
        )
        took = time.perf_counter() - start
        row = {"method": f"student {loss}", "train_seconds": took}
        for n in args.n:
            prompts_n, cands_n, _ = held[n]
            scores = student_scores(result.model, result.tokenizer, prompts_n, cands_n, max_length=64)
            _, tau = agreement(full[n], scores)
            row[n] = {"passes": n, "top1": student_top1(full[n], scores), "tau": tau}
        rows.append(row)
        print(f"student {loss}: {took:.0f} s", flush=True)

    head = f"{'method':26}" + "".join(f" {'passes n=' + str(n):>11} {'top1':>5} {'tau':>6}" for n in args.n)
    print(head)
    for row in rows:
        print(
            f"{row['method']:26}"
            + "".join(f" {row[n]['passes']:11.1f} {row[n]['top1']:5.2f} {row[n]['tau']:6.3f}" for n in args.n),
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "teacher_seconds": teacher_s, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
