"""Throughput of PairRM operations: the pairrm-hf engine (fp32, bf16 autocast, torch.compile) vs upstream's schedule.

Run from the repository root::

    python -m benchmarks.bench_rank --shapes tiny --workloads short mixed --n 2 6 --inputs 8 --json out.json
    python -m benchmarks.bench_rank --shapes base --workloads mixed --n 6 --inputs 4 \
        --variants baseline engine engine+bf16 engine+compile+bf16

Per configuration it prints pairs/s, real tokens/s, padding fraction, peak RSS (or peak GPU memory), achieved
model FLOP/s and its fraction of the machine's measured GEMM rate, the speed-up over the baseline and the max
|Δ logit| / decision flips against the fp32 baseline. See benchmarks/README.md for the FLOP formula.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time

import numpy as np
import torch

from benchmarks.baseline import baseline_pair_logits
from benchmarks.workloads import SHAPES, WORKLOADS, build_model, build_tokenizer, make_inputs, nonembedding_params
from pairrm_hf import PairRM

VARIANTS = (
    "baseline",
    "engine",
    "engine+eager",
    "engine+bf16",
    "engine+compile",
    "engine+compile+bf16",
    "engine+fp16",
    "engine+int8",
    "openvino",
    "openvino+int8",
)
OPS = ("rank", "compare", "rank_with_ref")


class PeakRSS:
    """Samples this process's resident memory every few ms; ``peak`` is the max since ``start``."""

    def __init__(self):
        try:
            import psutil

            self._proc = psutil.Process()
        except ImportError:  # fall back to /proc (Linux) — resource.getrusage only gives the lifetime max
            self._proc = None
        self.peak = 0

    def _rss(self) -> int:
        if self._proc is not None:
            return self._proc.memory_info().rss
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        self.peak, self._stop = self._rss(), threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _loop(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


def gemm_rate(dtype: torch.dtype, device: torch.device, size: int = 1024, seconds: float = 0.5) -> float:
    """Measured FLOP/s of a square matmul in ``dtype`` (the machine's practical peak for the model's main op)."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    a @ b  # warm-up
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        reps += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * size**3 * reps / (time.perf_counter() - start)


def model_flops(model, row_lengths: np.ndarray) -> float:
    """Useful forward FLOPs for rows of the given real lengths (formula in benchmarks/README.md)."""
    cfg = model.config
    h, layers = cfg.hidden_size, cfg.num_hidden_layers
    span = cfg.position_buckets if cfg.position_buckets > 0 else cfg.max_position_embeddings
    lengths = row_lengths.astype(np.float64)
    dense = 2.0 * nonembedding_params(model) * lengths.sum()
    # QKᵀ and A·V: 2·L²·h each; c2p and p2c scores: 2·L·(2·span)·h each, per layer.
    attention = layers * (4.0 * h * (lengths**2).sum() + 8.0 * h * span * lengths.sum())
    return dense + attention


def schedule_for(op: str, n: int) -> tuple[list[tuple[int, int]], int]:
    """Upstream's ordered pairs for an op over ``n`` candidates (+1 reference slot for rank_with_ref)."""
    if op == "rank":
        return [(i, j) for i in range(n) for j in range(n) if i != j], n
    if op == "compare":
        return [(0, 1), (1, 0)], 2
    return [p for j in range(n) for p in ((j, n), (n, j))], n


def run_baseline(rm: PairRM, op: str, prompts, cands, batch_size: int):
    """Outputs of ``op`` computed with upstream's schedule (fp32, same rows, same model)."""
    n = len(cands[0])
    schedule, _ = schedule_for(op, n)
    if op == "rank_with_ref":
        cands = [[*c, max(c, key=len)] for c in cands]
    examples = rm.engine.encode(prompts, cands)
    logits, stats = baseline_pair_logits(rm.model, rm.engine.encoder, examples, schedule, batch_size)
    if op == "rank":
        mats = np.zeros((len(prompts), n, n), dtype=np.float32)
        for k, (i, j) in enumerate(schedule):
            mats[:, i, j] = logits[:, k]
        out = mats
    else:
        out = (logits[:, 0::2] - logits[:, 1::2]).astype(np.float32)
    return out, stats


def run_engine(rm: PairRM, op: str, prompts, cands):
    """Outputs of ``op`` through the public :class:`PairRM` API (one engine call each)."""
    if op == "rank":
        out = np.stack(rm.comparison_matrices(prompts, cands))
    elif op == "compare":
        out = rm.compare(prompts, [c[0] for c in cands], [c[1] for c in cands])[:, None]
    else:
        out = np.stack(rm.rank_with_ref(prompts, cands)).astype(np.float32)
    return out, dict(rm.engine.last_stats)


def decision_flips(op: str, out: np.ndarray, ref: np.ndarray) -> int:
    """Comparisons whose symmetric decision differs from the fp32 baseline (rank: per unordered pair)."""
    if op == "rank":
        s, r = out - out.transpose(0, 2, 1), ref - ref.transpose(0, 2, 1)
        iu = np.triu_indices(out.shape[1], k=1)
        return int((np.sign(s[:, iu[0], iu[1]]) != np.sign(r[:, iu[0], iu[1]])).sum())
    return int((np.sign(out) != np.sign(ref)).sum())


def make_variant(model, tokenizer, variant: str, device, batch_size: int) -> PairRM:
    if variant.startswith("openvino"):  # converted once per model and cached (PAIRRM_OPENVINO_CACHE)
        quantize = "int8" if "int8" in variant else None
        return PairRM(model, tokenizer, device=device, batch_size=batch_size, backend="openvino", quantize=quantize)
    # "engine+eager" keeps transformers' attention module: it separates the schedule's gain from the attention's.
    kwargs = {"device": device, "batch_size": batch_size, "attention": "eager" if "eager" in variant else "fused"}
    if "bf16" in variant:
        kwargs["autocast_dtype"] = torch.bfloat16
    if "fp16" in variant:
        kwargs["dtype"] = torch.float16
    if "compile" in variant:
        kwargs["compile"] = True
    if "int8" in variant:
        kwargs["quantize"] = "int8"
    return PairRM(model, tokenizer, **kwargs)


def bench_config(model, tokenizer, args, shape, workload, n, op, device, gemm):
    prompts, cands = make_inputs(tokenizer, workload, args.inputs, 2 if op == "compare" else n, seed=args.seed)
    results, reference = [], None
    for variant in args.variants:
        if (variant == "engine+fp16" and device.type != "cuda") or (
            variant in ("engine+int8", "openvino", "openvino+int8") and device.type != "cpu"
        ):
            continue
        start = time.perf_counter()
        rm = make_variant(model, tokenizer, variant, device, args.batch_size)
        # OpenVINO converts (first time) or reads its cache and compiles here: reported as the warm-up
        warmup = time.perf_counter() - start if variant.startswith("openvino") else None
        if "compile" in variant:  # compile happens on the first call; time it separately
            start = time.perf_counter()
            run_engine(rm, op, prompts, cands)
            warmup = time.perf_counter() - start
        times, peak = [], 0
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for _ in range(args.repeats):
            with PeakRSS() as mem:
                start = time.perf_counter()
                if variant == "baseline":
                    out, stats = run_baseline(rm, op, prompts, cands, args.batch_size)
                else:
                    out, stats = run_engine(rm, op, prompts, cands)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
            peak = max(peak, mem.peak)
        # max|Δ| and flips are against the baseline, or against the first variant when the baseline is not run
        if variant == "baseline" or (reference is None and "baseline" not in args.variants):
            reference = out
        seconds = statistics.median(times)
        pairs = len(prompts) * len(schedule_for(op, len(cands[0]))[0])
        # useful FLOPs: every distinct real row once, at its real length
        real_lengths = _real_row_lengths(rm, op, prompts, cands)
        flops = model_flops(rm.model, real_lengths)
        peak_rate = gemm["bf16"] if ("bf16" in variant or "fp16" in variant) else gemm["fp32"]
        if "int8" in variant:
            peak_rate = float("nan")  # int8 products have their own peak; the fp32 one would flatter them
        row = {
            "shape": shape,
            "workload": workload,
            "n": len(cands[0]),
            "op": op,
            "variant": variant,
            "inputs": len(prompts),
            "pairs": pairs,
            "rows": stats["rows"],
            "seconds": seconds,
            "times": times,
            "warmup_s": warmup,
            "pairs_per_s": pairs / seconds,
            "tokens_per_s": stats["real_tokens"] / seconds,
            "padding_fraction": 1 - stats["real_tokens"] / max(stats["padded_tokens"], 1),
            "max_batch_rows": stats["max_batch_rows"],
            "peak_rss_mb": peak / 2**20,
            "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
            "model_flops": flops,
            "flops_per_s": flops / seconds,
            "fraction_of_gemm_peak": flops / seconds / peak_rate,
            "logit_std": float(np.std(out)),
        }
        if reference is not None:
            row["max_abs_diff_vs_baseline"] = float(np.abs(out - reference).max())
            row["decision_flips_vs_baseline"] = decision_flips(op, out, reference)
        results.append(row)
    base = next((r for r in results if r["variant"] == "baseline"), None)
    for r in results:
        r["speedup_vs_baseline"] = base["seconds"] / r["seconds"] if base else None
    return results


def _real_row_lengths(rm: PairRM, op: str, prompts, cands) -> np.ndarray:
    n = len(cands[0])
    schedule, _ = schedule_for(op, n)
    if op == "rank_with_ref":
        cands = [[*c, max(c, key=len)] for c in cands]
    examples = rm.engine.encode(prompts, cands)
    pairs = np.array([(ex, i, j) for ex in range(len(prompts)) for i, j in schedule], dtype=np.int64)
    return rm.engine._row_lengths(examples, pairs)


def print_table(rows: list[dict]) -> None:
    head = (
        f"{'shape':6} {'work':6} {'n':>3} {'op':13} {'variant':20} {'pairs/s':>9} {'tok/s':>9} {'pad%':>5} "
        f"{'RSS MB':>7} {'GFLOP/s':>8} {'%peak':>6} {'×base':>6} {'max|Δ|':>9} {'flips':>5}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        diff = r.get("max_abs_diff_vs_baseline")
        print(
            f"{r['shape']:6} {r['workload']:6} {r['n']:>3} {r['op']:13} {r['variant']:20} {r['pairs_per_s']:9.2f} "
            f"{r['tokens_per_s']:9.0f} {100 * r['padding_fraction']:5.1f} {r['peak_rss_mb']:7.0f} "
            f"{r['flops_per_s'] / 1e9:8.1f} {100 * r['fraction_of_gemm_peak']:6.1f} "
            f"{(r['speedup_vs_baseline'] or float('nan')):6.2f} {(diff if diff is not None else float('nan')):9.2e} "
            f"{r.get('decision_flips_vs_baseline', '-')!s:>5}"
        )


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse flags, build models, run every selected configuration, print and save results."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", nargs="+", default=["tiny"], choices=list(SHAPES))
    p.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    p.add_argument("--n", nargs="+", type=int, default=[2, 6, 16])
    p.add_argument("--ops", nargs="+", default=["rank"], choices=list(OPS))
    p.add_argument("--variants", nargs="+", default=["baseline", "engine", "engine+bf16"], choices=list(VARIANTS))
    p.add_argument("--inputs", type=int, default=8, help="prompts per configuration")
    p.add_argument("--batch-size", type=int, default=8, help="rows per forward (baseline: inputs per forward)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--json", default=None, help="write all results here")
    p.add_argument("--llm-blender-python", default=None, help="not implemented; see benchmarks/README.md")
    args = p.parse_args(argv)
    if args.llm_blender_python:
        print(
            "--llm-blender-python: the subprocess comparison with the original package is not implemented; "
            "see benchmarks/README.md",
            file=sys.stderr,
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    # bf16 GEMM is measured only when a half-precision variant runs: CPUs without native bf16 take seconds per call.
    half = any("bf16" in v or "fp16" in v for v in args.variants)
    gemm = {
        "fp32": gemm_rate(torch.float32, device),
        "bf16": gemm_rate(torch.bfloat16, device) if half else float("nan"),
    }
    machine = {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "gemm_fp32_gflops": gemm["fp32"] / 1e9,
        "gemm_bf16_gflops": gemm["bf16"] / 1e9,
    }
    print(json.dumps(machine))
    tokenizer = build_tokenizer()
    rows = []
    for shape in args.shapes:
        model = build_model(shape, tokenizer)
        for workload in args.workloads:
            for op in args.ops:
                for n in args.n if op != "compare" else [2]:
                    # Re-probe the matmul rate next to each configuration (the best of the run so far): on a shared
                    # or throttling machine a single probe at the start says little about the minutes that follow.
                    gemm["fp32"] = max(gemm["fp32"], gemm_rate(torch.float32, device))
                    if half:
                        gemm["bf16"] = max(gemm["bf16"], gemm_rate(torch.bfloat16, device))
                    config_rows = bench_config(model, tokenizer, args, shape, workload, n, op, device, gemm)
                    for r in config_rows:
                        r["gemm_gflops"] = {k: v / 1e9 for k, v in gemm.items()}
                    rows += config_rows
                    print_table(rows[-len(args.variants) :])
                    sys.stdout.flush()
    print()
    print_table(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "args": vars(args), "results": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
