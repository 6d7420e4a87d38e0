"""int8 on a ranker that has learned something: torch int8 and OpenVINO int8 against fp32, speed and decision flips.

Run from the repository root::

    python -m benchmarks.bench_int8 --n 16 --inputs 100 --repeats 3 --threads 2 \
        --json benchmarks/results/speed3_int8.json
    python -m benchmarks.bench_int8 --model /path/to/trained/checkpoint ...    # skip the training

It trains the ranker of ``bench_budget.py`` (the same rule, recipe and seed: a tiny PairRM, 3000 steps, about 2 CPU
minutes alone) unless ``--model`` names a checkpoint, then runs the full comparison matrices of that benchmark's
ranking inputs with torch fp32 (``engine``, fused attention: the torch default), torch int8
(``quantize="int8"``), OpenVINO fp32 and OpenVINO int8, interleaved round by round (``bench_rank.bench_config``).
Flips are symmetric decisions whose sign differs from torch fp32, as a count and a share of all decisions
(the issue's target: the best int8 ≥ 2.5× torch fp32 with ≤ 1% flips). Random-weight models would say nothing about
flips: their logits sit near 0, where any rounding flips decisions.

``openvino+int8-static`` is OpenVINO static int8 (``calibration=``): its calibration rows are drawn by the same rule
as the ranking inputs (``--calibration-inputs`` prompts with n candidates each, another seed), with every prompt
and candidate text that also appears in the evaluated inputs removed, so calibration and evaluation are disjoint.
``--calibration-size``, ``--calibration-preset`` and ``--calibration-alpha`` set its NNCF options. A ``+bf16``
variant adds ``dtype="bfloat16"``: OpenVINO computes what int8 leaves in floating point (or, for ``openvino+bf16``,
everything) in bf16 where the CPU has native bf16.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.bench_budget import ranking_inputs, train
from benchmarks.bench_rank import Budget, bench_config, gemm_rate, print_table, write_json
from pairrm_hf import load_pairrm
from pairrm_hf.ranking.openvino_quantization import CALIBRATION_SIZE, Calibration, read_calibration

VARIANTS = (
    "engine",
    "engine+int8",
    "openvino",
    "openvino+int8",
    "openvino+int8-static",
    "openvino+bf16",
    "openvino+int8+bf16",
    "openvino+int8-static+bf16",
)
#: the issue's ceiling on int8 decision flips against fp32
FLIP_TARGET = 0.01


def calibration_for(args, prompts: list[str], cands: list[list[str]], n: int) -> tuple[Calibration, int]:
    """Calibration rows by the ranking inputs' rule, disjoint from them: ``(Calibration, rows kept)``."""
    seen = set(prompts) | {c for row in cands for c in row}
    rows = []
    c_prompts, c_cands, _ = ranking_inputs(args.calibration_inputs, n, seed=args.seed + n + 7919)
    for prompt, answers in zip(c_prompts, c_cands):
        fresh = [a for a in answers if a not in seen]
        if prompt not in seen and len(fresh) >= 2:
            rows.append({"prompt": prompt, "candidates": fresh})
    options = {"preset": args.calibration_preset, "fast_bias_correction": not args.calibration_no_bias_correction}
    if args.calibration_alpha is not None:
        options["smooth_quant_alpha"] = args.calibration_alpha
    text = read_calibration(rows)
    return Calibration(text, args.calibration_size or CALIBRATION_SIZE, **options), len(rows)


def _json_args(args) -> dict:
    """The command-line arguments for the JSON report (the calibration rows are summarised in each result row)."""
    return {k: v for k, v in vars(args).items() if k != "calibration"}


def main(argv: list[str] | None = None) -> int:
    """Train (or load) the ranker, time every variant side by side per n, print the table and write JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="a trained PairRM checkpoint (default: train bench_budget's)")
    p.add_argument("--steps", type=int, default=3000, help="training steps when --model is not given")
    p.add_argument("--n", nargs="+", type=int, default=[16])
    p.add_argument("--inputs", type=int, default=100, help="prompts per n")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS))
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds (median reported)")
    p.add_argument("--max-seconds", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--calibration-inputs", type=int, default=32, help="prompts drawn for calibration (per n)")
    p.add_argument("--calibration-size", type=int, default=None, help="calibration pairs (default: the library's)")
    p.add_argument("--calibration-preset", default="mixed", choices=["mixed", "performance"])
    p.add_argument("--calibration-alpha", type=float, default=None, help="SmoothQuant alpha (-1: off)")
    p.add_argument("--calibration-no-bias-correction", action="store_true")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    budget = Budget(args.max_seconds)
    train_s = None
    folder = args.model
    if folder is None:
        start = time.perf_counter()
        folder = train(Path(tempfile.mkdtemp(prefix="pairrm_int8_")), args.steps, args.seed)
        train_s = time.perf_counter() - start
        print(f"trained bench_budget's ranker: {args.steps} steps in {train_s:.0f} s", flush=True)
    loaded = load_pairrm(folder)
    device = torch.device("cpu")
    half = any("bf16" in v for v in args.variants)  # the bf16 rate is the yardstick of the +bf16 variants
    gemm = {
        "fp32": gemm_rate(torch.float32, device),
        "bf16": gemm_rate(torch.bfloat16, device) if half else float("nan"),
    }
    rows = []
    for n in args.n:
        if budget.spent:
            break
        prompts, cands, _ = ranking_inputs(args.inputs, n, seed=args.seed + n)  # bench_budget's inputs for this n
        args.calibration, kept = calibration_for(args, prompts, cands, n)
        config = {"shape": "trained", "workload": "rule", "inputs": args.inputs, "n": n, "op": "rank"}
        config["calibration"] = {"rows": kept, "pairs": args.calibration.size, **args.calibration.options()}
        config_rows = bench_config(
            loaded.model, loaded.tokenizer, args, config, device, gemm, budget, texts=(prompts, cands)
        )
        decisions = args.inputs * n * (n - 1) // 2
        for r in config_rows:
            r["decisions"] = decisions
            if "decision_flips_vs_baseline" in r:
                r["flip_share"] = r["decision_flips_vs_baseline"] / decisions
                r["flips_within_target"] = r["flip_share"] <= FLIP_TARGET
        rows += config_rows
        print_table(config_rows)
        for r in config_rows:
            if "int8" in r["variant"] and "flip_share" in r:
                print(
                    f"    {r['variant']}: {r['decision_flips_vs_baseline']} of {decisions} symmetric decisions "
                    f"flipped vs torch fp32 ({100 * r['flip_share']:.2f}%, target ≤ {100 * FLIP_TARGET:.0f}%), "
                    f"{r['speedup_vs_engine']:.2f}× torch fp32",
                    flush=True,
                )
        if args.json:
            write_json(
                args.json, {"args": _json_args(args), "train_seconds": train_s, "model": str(folder), "results": rows}
            )
    if args.json:
        write_json(
            args.json,
            {
                "args": _json_args(args),
                "train_seconds": train_s,
                "model": str(folder),
                "complete": not budget.spent,
                "results": rows,
            },
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
