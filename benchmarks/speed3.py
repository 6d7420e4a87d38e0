"""One driver for the measurements issue 22's targets need, in order and within a time budget (a quiet machine).

Run from the repository root::

    python -m benchmarks.speed3 --threads 2 --max-seconds 7200       # writes benchmarks/results/speed3_*.json
    python -m benchmarks.speed3 --smoke                              # tiny shape, minutes; results/smoke/
    python -m benchmarks.speed3 --parts b c                          # some parts only

Parts (each a separate process, so peak RSS and imports are its own; each prints its table and writes JSON):

* **a** — ``bench_rank --side-by-side`` (baseline, Blender.rank, torch eager / fused / flex, torch int8, OpenVINO
  fp32 / int8, interleaved rounds) on base short + mixed, base long, and large mixed;
* **b** — ``Blender.rank`` on mixed lengths, 3 prompts × 4 candidates and 8 × 6, against the original schedule on
  the same weights (base shape);
* **c** — ``bench_int8``: torch int8 and OpenVINO int8 against fp32 on ``bench_budget``'s trained ranker, speed
  and decision flips (target ≤ 1%);
* **d** — ``bench_warm_start``: a second process's time to its first ranking, every backend, base shape;
* **e** — ``bench_memory``: peak RSS at L = 2048, one batch of 8 rows, large shape, for the default path and for
  torch, against the weight bytes.

Each part gets the smaller of its own cap and what is left of ``--max-seconds``; bench_rank and bench_int8 stop
cleanly inside it (writing what they have), any part still running at its cap plus a grace period is killed and
reported as timed out. OpenVINO converts into a fresh cache (``PAIRRM_OPENVINO_CACHE``) once per model, so the
first configuration's setup column is the conversion and later ones are cache reads.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_rank import write_json

PARTS = {
    "a": "bench_rank side by side: base short/mixed/long, large mixed",
    "b": "Blender.rank 3x4 and 8x6 vs the original schedule (base, mixed)",
    "c": "int8 on bench_budget's trained ranker: torch int8, OpenVINO int8, fp32",
    "d": "warm start in a second process, every backend (base)",
    "e": "peak RSS at L = 2048, batch 8, large: default path and torch",
}
#: seconds a part may take after its own budget ran out (a setup or a forward pass cannot be cut short)
GRACE = 120


def plan(smoke: bool, threads: int) -> list[tuple[str, str, list[str], int]]:
    """``(part, json name, argv after python -m, cap seconds)`` in running order."""
    t = ["--threads", str(threads)]
    if smoke:
        base = large = "tiny"
        rank = [("base_short_mixed", ["short", "mixed"], ["2x3"], 2), ("base_long", ["long"], ["1x3"], 1)]
        rank.append(("large_mixed", ["mixed"], ["2x3"], 1))
        blender_repeats, int8 = 2, ["--steps", "30", "--n", "6", "--inputs", "4", "--repeats", "2"]
        warm = ["--shape", "tiny", "--rounds", "1", "--backends", "default", "torch+flex", "openvino"]
        caps = {"a": 300, "b": 120, "c": 180, "d": 300, "e": 120}
    else:
        base, large = "base", "large"
        rank = [("base_short_mixed", ["short", "mixed"], ["4x6"], 3), ("base_long", ["long"], ["2x4"], 3)]
        # batches of 2 rows at L = 2048: OpenVINO's attention graph keeps about a dozen [rows, heads, L, L] fp32
        # tensors (6.3 GB for 8 rows of the tiny shape's 4 heads), so 8 rows of base's 12 heads would need ~19 GB
        rank.append(("large_mixed", ["mixed"], ["4x6"], 3))
        blender_repeats, int8 = 5, ["--n", "16", "--inputs", "100", "--repeats", "3"]
        warm = ["--shape", "base", "--rounds", "3"]
        caps = {"a": 1500, "b": 600, "c": 900, "d": 900, "e": 400}
    steps = []
    for name, workloads, configs, repeats in rank:
        shape = large if name.startswith("large") else base
        argv = ["benchmarks.bench_rank", "--side-by-side", "--shapes", shape, "--workloads", *workloads]
        argv += ["--configs", *configs, "--repeats", str(repeats), *t]
        if name == "base_long":
            argv += ["--batch-size", "2"]
        steps.append(("a", f"rank_{name}", argv, caps["a"]))
    # smoke: short texts (the tiny shape's baseline on mixed lengths takes minutes on a loaded CPU)
    blender_workload = "short" if smoke else "mixed"
    blender = ["benchmarks.bench_rank", "--shapes", base, "--workloads", blender_workload, "--configs", "3x4", "8x6"]
    blender += ["--variants", "baseline", "blender", "engine", "--repeats", str(blender_repeats), *t]
    steps.append(("b", "blender", blender, caps["b"]))
    steps.append(("c", "int8", ["benchmarks.bench_int8", *int8, *t], caps["c"]))
    steps.append(("d", "warm_start", ["benchmarks.bench_warm_start", *warm, "--threads", str(threads)], caps["d"]))
    # one batch of 8 rows of 2048 tokens: n = 4 gives 12 rows, and --max-seconds 1 stops before the second batch
    memory = ["benchmarks.bench_memory", "--shape", large, "--workload", "long", "--n", "4", "--inputs", "1"]
    memory += ["--batch-size", "8", "--max-seconds", "1", *t]
    # torch first: should the default be OpenVINO, its L = 2048 batch may not fit in memory (see base_long above)
    steps.append(("e", "memory_torch", [*memory, "--backend", "torch"], caps["e"]))
    steps.append(("e", "memory_default", memory, caps["e"]))
    return steps


def main(argv: list[str] | None = None) -> int:
    """Run the selected parts in order within the budget; print a summary and write it as JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS))
    p.add_argument("--max-seconds", type=float, default=7200, help="budget of the whole run")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--smoke", action="store_true", help="tiny shape and inputs: checks the driver, measures nothing")
    p.add_argument("--out", default=None, help="default benchmarks/results (smoke: benchmarks/results/smoke)")
    args = p.parse_args(argv)
    out = Path(args.out or ("benchmarks/results/smoke" if args.smoke else "benchmarks/results"))
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    env["PAIRRM_OPENVINO_CACHE"] = tempfile.mkdtemp(prefix="pairrm_speed3_ov_")
    deadline = time.perf_counter() + args.max_seconds
    summary = []
    for part, name, command, cap in plan(args.smoke, args.threads):
        if part not in args.parts:
            continue
        path = out / f"speed3_{name}.json"
        left = deadline - time.perf_counter()
        entry = {"part": part, "name": name, "what": PARTS[part], "json": str(path), "command": command}
        if left < 10:
            summary.append({**entry, "status": "skipped: --max-seconds spent", "seconds": 0.0})
            continue
        budget = min(cap, left)
        if command[0] in ("benchmarks.bench_rank", "benchmarks.bench_int8"):
            command = [*command, "--max-seconds", f"{budget:.0f}"]
        command = [*command, "--json", str(path)]
        print(f"\n=== speed3 part {part} ({name}): {PARTS[part]}; budget {budget:.0f} s", flush=True)
        print("    python -m " + " ".join(command), flush=True)
        start = time.perf_counter()
        try:
            done = subprocess.run([sys.executable, "-m", *command], env=env, timeout=budget + GRACE)
            status = "ok" if done.returncode == 0 else f"failed (exit {done.returncode})"
        except subprocess.TimeoutExpired:
            status = f"timed out after {budget + GRACE:.0f} s"
        if status == "ok" and not path.exists():
            status = "failed (no JSON written)"
        summary.append({**entry, "command": command, "status": status, "seconds": time.perf_counter() - start})
    print("\n=== speed3 summary")
    print(f"{'part':4} {'name':22} {'status':28} {'seconds':>8}  json")
    for s in summary:
        print(f"{s['part']:4} {s['name']:22} {s['status'][:28]:28} {s['seconds']:8.0f}  {s['json']}")
    write_json(str(out / "speed3_summary.json"), {"args": vars(args), "parts": summary})
    shutil.rmtree(env["PAIRRM_OPENVINO_CACHE"], ignore_errors=True)  # the run's conversions (gigabytes for large)
    return 0 if all(s["status"] == "ok" for s in summary) else 1


if __name__ == "__main__":
    raise SystemExit(main())
