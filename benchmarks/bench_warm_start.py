"""Warm start per backend: seconds from a fresh interpreter to the first ranking, with every cache already filled.

Run from the repository root::

    python -m benchmarks.bench_warm_start --shape base --rounds 3 --threads 2 \
        --json benchmarks/results/speed3_warm_start.json

The model of the shape is saved once; for each backend a first process loads it with
``PairRM.from_pretrained(folder, **kwargs)`` and ranks two answers (the cold start: OpenVINO converts and fills a
fresh cache here), then ``--rounds`` more processes per backend do the same, interleaved round by round (A B C … A B
C …), and the median of those warm starts is reported, split into imports, loading (and for OpenVINO, reading and
compiling the cached model) and the first ranking. ``default`` passes no options: whatever ``from_pretrained``
picks by default. A backend that cannot load (e.g. ``attention="flex"`` before it exists) is reported as unavailable
with the error's last line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

from benchmarks.bench_rank import write_json
from benchmarks.workloads import SHAPES, build_model, build_tokenizer

#: backend name → keyword arguments of ``PairRM.from_pretrained``
BACKENDS = {
    "default": {},
    "torch": {"backend": "torch"},
    "torch+eager": {"backend": "torch", "attention": "eager"},
    "torch+flex": {"backend": "torch", "attention": "flex"},
    "torch+int8": {"backend": "torch", "quantize": "int8"},
    "openvino": {"backend": "openvino"},
    "openvino+int8": {"backend": "openvino", "quantize": "int8"},
    "openvino+bf16": {"backend": "openvino", "dtype": "bfloat16"},
}

_CHILD = """
import json, sys, time
t0 = time.perf_counter()
import torch
torch.set_num_threads({threads})
from pairrm_hf import PairRM
t1 = time.perf_counter()
rm = PairRM.from_pretrained({folder!r}, device="cpu", **{kwargs!r})
t2 = time.perf_counter()
rm.rank("What is the capital of France?", ["Paris.", "Berlin."])
t3 = time.perf_counter()
print(json.dumps({{"import_s": t1 - t0, "load_s": t2 - t1, "first_rank_s": t3 - t2, "total_s": t3 - t0,
                  "backend": rm.engine.backend}}))
"""


def start_once(folder: str, kwargs: dict, threads: int, cache: str, timeout: float) -> dict:
    """One fresh process: its timings, or ``{"error": ...}`` when it failed."""
    code = _CHILD.format(threads=threads, folder=folder, kwargs=kwargs)
    env = {**os.environ, "PAIRRM_OPENVINO_CACHE": cache, "PYTHONPATH": os.getcwd(), "HF_HUB_OFFLINE": "1"}
    try:
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        return {"error": (lines[-1] if lines else f"exit status {done.returncode}")[:200]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    """Save the model, start every backend cold then warm in fresh processes, print the table and write JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="base", choices=list(SHAPES))
    p.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=list(BACKENDS))
    p.add_argument("--rounds", type=int, default=3, help="warm starts per backend (median reported)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--timeout", type=float, default=900, help="seconds one process may take")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    folder = tempfile.mkdtemp(prefix=f"pairrm_warm_{args.shape}_")
    tokenizer = build_tokenizer()
    build_model(args.shape, tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    cache = tempfile.mkdtemp(prefix="pairrm_warm_ov_")  # empty: the first OpenVINO start converts
    cold = {b: start_once(folder, BACKENDS[b], args.threads, cache, args.timeout) for b in args.backends}
    warm: dict[str, list[dict]] = {b: [] for b in args.backends if "error" not in cold[b]}
    for _ in range(args.rounds):
        for backend in warm:
            warm[backend].append(start_once(folder, BACKENDS[backend], args.threads, cache, args.timeout))
    rows = []
    for backend in args.backends:
        row = {"shape": args.shape, "backend": backend, "kwargs": BACKENDS[backend], "cold": cold[backend]}
        runs = [r for r in warm.get(backend, []) if "error" not in r]
        if "error" in cold[backend]:
            row.update(available=False, reason=cold[backend]["error"])
        elif runs:
            row.update({k: statistics.median(r[k] for r in runs) for k in ("import_s", "load_s", "first_rank_s")})
            row.update(available=True, warm_total_s=statistics.median(r["total_s"] for r in runs), runs=runs)
            row["ran_backend"] = runs[0]["backend"]
        else:
            row.update(available=False, reason=warm[backend][0]["error"] if warm[backend] else "no warm round ran")
        rows.append(row)
    head = f"{'shape':5} {'backend':14} {'ran':9} {'cold s':>7} {'warm s':>7} {'import':>7} {'load':>7} {'1st rank':>8}"
    print(head)
    print("-" * len(head))
    for r in rows:
        if not r["available"]:
            print(f"{r['shape']:5} {r['backend']:14} unavailable ({r['reason']})")
            continue
        print(
            f"{r['shape']:5} {r['backend']:14} {r['ran_backend']:9} {r['cold']['total_s']:7.1f} "
            f"{r['warm_total_s']:7.1f} {r['import_s']:7.1f} {r['load_s']:7.1f} {r['first_rank_s']:8.2f}"
        )
    if args.json:
        write_json(args.json, {"args": vars(args), "results": rows})
    for path in (folder, cache):  # a saved checkpoint and its OpenVINO conversions: gigabytes for base/large
        shutil.rmtree(path, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
