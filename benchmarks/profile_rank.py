"""Where a ranking call's time goes: torch.profiler's per-operator table for one engine call, beside the model's
FLOP/s as a fraction of the machine's fp32 matmul rate measured in the same run.

Run from the repository root::

    python -m benchmarks.profile_rank --shape base --workload mixed --n 4 --inputs 2

``aten::addmm`` is the linear layers, ``aten::bmm``/``baddbmm_`` the attention products and position tables;
``index_select``, ``gather``, ``masked_fill_``, ``_softmax`` and ``copy_`` are the elementwise and layout passes
that the FLOP count (benchmarks/README.md) does not include.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.bench_rank import _real_row_lengths, gemm_rate, model_flops
from benchmarks.workloads import SHAPES, WORKLOADS, build_model, build_tokenizer, make_inputs
from pairrm_hf import PairRM


def main(argv: list[str] | None = None) -> int:
    """Time one call, print the fraction of the matmul rate, then profile the same call and print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="base", choices=list(SHAPES))
    p.add_argument("--workload", default="mixed", choices=list(WORKLOADS))
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--inputs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--attention", default="fused", choices=["fused", "eager"])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--rows", type=int, default=25, help="operators to list")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    tokenizer = build_tokenizer()
    model = build_model(args.shape, tokenizer)
    prompts, cands = make_inputs(tokenizer, args.workload, args.inputs, args.n, seed=0)
    rm = PairRM(model, tokenizer, device="cpu", batch_size=args.batch_size, attention=args.attention, backend="torch")
    rm.comparison_matrices(prompts[:1], [cands[0][:2]])  # warm-up
    rate = gemm_rate(torch.float32, torch.device("cpu"), seconds=1.0)
    start = time.perf_counter()
    rm.comparison_matrices(prompts, cands)
    seconds = time.perf_counter() - start
    flops = model_flops(rm.model, _real_row_lengths(rm, "rank", prompts, cands))
    stats = rm.engine.last_stats
    print(
        f"fp32 matmul {rate / 1e9:.1f} GFLOP/s; model {flops / seconds / 1e9:.1f} GFLOP/s = "
        f"{100 * flops / seconds / rate:.1f}% in {seconds:.1f} s; rows {stats['rows']}, "
        f"padding {100 * (1 - stats['real_tokens'] / max(stats['padded_tokens'], 1)):.1f}%"
    )
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        rm.comparison_matrices(prompts, cands)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
