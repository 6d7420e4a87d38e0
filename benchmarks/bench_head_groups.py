"""The OpenVINO export graph with its attention scored a few heads at a time against all heads at once.

Run from the repository root::

    python -m benchmarks.bench_head_groups --shape base --groups 0 4 2 --batches 16x64 8x256 2x1024 1x2048 \
        --rounds 5 --threads 2 --json benchmarks/results/speed3_head_groups.json

Each ``--groups`` value is a ``PairRMSelfAttention.export_heads_per_group`` (``0``: every head at once, the graph
before Speed III part 8); each converts its own graph into a temporary cache. Every grouping then runs the same
padded batches through its ``OpenVINOBackbone`` (the engine's unit of work), in interleaved rounds (A B C … A B C …),
and reports its median time, its ratio to the first grouping, and its max |Δ hidden| against torch fp32 on the real
tokens. A batch whose rows are longer than a grouping's exact-Gather limit (``OpenVINOBackbone.longest_row``) would
run on torch, so it is reported as not run for that grouping. Peak memory needs one process per graph:
``bench_memory.py``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.bench_backends import make_batch
from benchmarks.workloads import SHAPES, build_model, build_tokenizer
from pairrm_hf.models.attention import PairRMSelfAttention
from pairrm_hf.ranking.openvino_backend import load_openvino_backbone


def main(argv: list[str] | None = None) -> int:
    """Time each head grouping on each batch shape; print a table and optionally write JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="base", choices=list(SHAPES))
    p.add_argument("--groups", nargs="+", type=int, default=[0, 4])
    p.add_argument("--batches", nargs="+", default=["16x64", "8x256", "2x1024", "1x2048"])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    tokenizer = build_tokenizer()
    model = build_model(args.shape, tokenizer).eval()
    default_group = PairRMSelfAttention.export_heads_per_group
    backbones = {}
    with tempfile.TemporaryDirectory(prefix="pairrm-head-groups-") as cache:
        try:
            for group in args.groups:
                PairRMSelfAttention.export_heads_per_group = group or None
                backbones[group] = load_openvino_backbone(
                    model.pretrained_model, cache_dir=cache, release_torch_weights=False
                )
        finally:
            PairRMSelfAttention.export_heads_per_group = default_group
        rows = [row for spec in args.batches for row in _bench_batch(model, tokenizer, backbones, spec, args.rounds)]
    _print(rows, args.groups)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


def _bench_batch(model, tokenizer, backbones: dict, spec: str, rounds: int) -> list[dict]:
    count, length = (int(v) for v in spec.split("x"))
    ids, mask = make_batch(tokenizer, model, count, length)
    real = mask.bool().numpy()
    with torch.inference_mode():
        want = model.pretrained_model(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
    runs = {g: b for g, b in backbones.items() if ids.shape[1] <= b.longest_row}
    times: dict[int, list[float]] = {g: [] for g in runs}
    deltas = {}
    for group, backbone in runs.items():  # warm-up: first-call allocations and shape inference, untimed
        got = backbone(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
        deltas[group] = float(np.abs(got[real] - want[real]).max())
    for _ in range(rounds):
        for group, backbone in runs.items():
            start = time.perf_counter()
            backbone(input_ids=ids, attention_mask=mask)
            times[group].append(time.perf_counter() - start)
    first = next(iter(times), None)
    rows = []
    for group, backbone in backbones.items():
        row = {"batch": spec, "heads_per_group": group or None, "gather_heads": backbone.gather_heads}
        if group not in runs:
            row["reason"] = (
                f"rows of {ids.shape[1]} tokens are over this graph's exact-Gather limit ({backbone.longest_row})"
            )
        else:
            seconds = statistics.median(times[group])
            row.update(seconds=seconds, times=times[group], max_abs_hidden_diff=deltas[group])
            row["ratio_to_first"] = statistics.median(times[first]) / seconds
        rows.append(row)
    return rows


def _print(rows: list[dict], groups: list[int]) -> None:
    names = [f"{g} heads" if g else "all heads" for g in groups]
    print("| batch | " + " | ".join(names) + " |")
    print("|---" * (len(groups) + 1) + "|")
    for spec in dict.fromkeys(r["batch"] for r in rows):
        cells = []
        for r in (r for r in rows if r["batch"] == spec):
            if "seconds" in r:
                cells.append(
                    f"{r['seconds'] * 1e3:,.0f} ms ({r['ratio_to_first']:.2f}×, |Δ| {r['max_abs_hidden_diff']:.1e})"
                )
            else:
                cells.append("not run: " + r["reason"])
        print(f"| {spec} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    raise SystemExit(main())
