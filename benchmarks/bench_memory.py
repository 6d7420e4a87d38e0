"""Peak resident memory of one full ranking call on a benchmark shape, for several candidate counts.

Run from the repository root::

    python -m benchmarks.bench_memory --shape large --n 4 16 --threads 1 --json memory.json
    python -m benchmarks.bench_memory --shape large --n 16 --max-seconds 300   # stop early, report the peak so far
    python -m benchmarks.bench_memory --shape large --workload long --n 4 --batch-size 8 --backend openvino

Batches run longest first, so the peak of a call shows up in its first batches; ``--max-seconds`` stops a call
after that long (reporting how many of its rows were done) for slow machines. ``--workload long`` makes every row
2048 tokens (L = 2048); ``--backend``/``--quantize``/``--attention``/``--max-batch-tokens`` pick the path (default: ``PairRM``'s
defaults, the path a user gets; the row records the backend that ran). Run one process per path: RSS is per process, and a converted or quantized copy stays resident.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from benchmarks.bench_rank import PeakRSS
from benchmarks.workloads import SHAPES, build_model, build_tokenizer, make_inputs
from pairrm_hf import PairRM


class _Stop(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    """Measure peak RSS of ``comparison_matrices`` for each n; print and optionally write JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="large", choices=list(SHAPES))
    p.add_argument("--workload", default="short")
    p.add_argument("--n", nargs="+", type=int, default=[4, 16])
    p.add_argument("--inputs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-seconds", type=float, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--backend", default=None, choices=["auto", "torch", "openvino"], help="default: PairRM's default")
    p.add_argument("--quantize", default=None, choices=["int8"])
    p.add_argument("--dtype", default=None, help="bfloat16: torch's bf16 weights, or OpenVINO computing in bf16")
    p.add_argument("--attention", default=None, help="fused (default), eager or flex")
    p.add_argument(
        "--max-batch-tokens",
        default="auto",
        type=lambda v: v if v == "auto" else None if v == "none" else int(v),
        help="padded tokens per forward pass: 'auto' (PairRM's default, 2048 on CPU), 'none' (no limit) or a number",
    )
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    tokenizer = build_tokenizer()
    with PeakRSS() as base:
        model = build_model(args.shape, tokenizer)
    weights = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    with PeakRSS() as setup:  # OpenVINO conversion or int8 quantization: its own peak, apart from the calls'
        rm = PairRM(
            model,
            tokenizer,
            device="cpu",
            batch_size=args.batch_size,
            max_batch_tokens=args.max_batch_tokens,
            backend=args.backend,
            quantize=args.quantize,
            attention=args.attention,
            dtype=args.dtype,
        )
    # rm.engine.model, not rm.model: PairRM.model reads an OpenVINO engine's released torch weights back (a second
    # copy of the weights that a ranking call never holds)
    engine_forward = rm.engine.model.forward
    rows = []
    for n in args.n:
        prompts, cands = make_inputs(tokenizer, args.workload, args.inputs, n)
        done, start = [0], time.perf_counter()

        def forward(*a, _done=done, _start=start, **k):
            # counts rows and stops the call after --max-seconds (batches run longest first)
            if args.max_seconds is not None and time.perf_counter() - _start > args.max_seconds:
                raise _Stop
            out = engine_forward(*a, **k)
            _done[0] += int(k["input_ids"].shape[0])
            return out

        rm.engine.model.forward = forward
        finished = True
        with PeakRSS() as mem:
            try:
                rm.comparison_matrices(prompts, cands)
            except _Stop:
                finished = False
        rm.engine.model.forward = engine_forward
        row = {
            "shape": args.shape,
            "workload": args.workload,
            "n": n,
            "backend": rm.engine.backend,
            "quantize": args.quantize,
            "dtype": args.dtype,
            "inference_precision": getattr(rm.engine.openvino_backbone, "inference_precision", None),
            "attention": args.attention or "fused",
            "inputs": args.inputs,
            "batch_size": args.batch_size,
            "max_batch_tokens": rm.engine.max_batch_tokens,
            "rows_total": args.inputs * n * (n - 1),
            "rows_done": done[0],
            "finished": finished,
            "seconds": time.perf_counter() - start,
            "weights_mb": weights / 2**20,
            "rss_after_load_mb": base.peak / 2**20,
            "setup_peak_rss_mb": setup.peak / 2**20,
            "max_batch_rows": rm.engine.last_stats.get("max_batch_rows") if finished else None,
            "rss_before_call_mb": mem.start / 2**20,
            "peak_rss_mb": mem.peak / 2**20,
            "peak_anon_rss_mb": mem.peak_anon / 2**20,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(
        f"peak RSS − weights: {[round(r['peak_rss_mb'] - r['weights_mb']) for r in rows]} MB "
        f"(n = {[r['n'] for r in rows]}); spread {np.ptp([r['peak_rss_mb'] for r in rows]):.0f} MB; "
        f"anonymous part − weights: {[round(r['peak_anon_rss_mb'] - r['weights_mb']) for r in rows]} MB; "
        f"rise during the call: {[round(r['peak_rss_mb'] - r['rss_before_call_mb']) for r in rows]} MB"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
