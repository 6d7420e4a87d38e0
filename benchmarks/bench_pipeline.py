"""The `pairwise-ranking` pipeline's input batching: engine calls, forward passes, padding and time per batch_size.

python -m benchmarks.bench_pipeline --shape tiny --workload mixed --inputs 64 --n 4 --batch-sizes 1 4 16 64 \
    --json pipeline.json

Each configuration ranks the same inputs, fed as a generator (the streaming form), and reports how many engine
calls and forward passes the pipeline made, the padding fraction of the rows fed to the model and the wall time.
Scores are checked against ``batch_size=1`` (max |Δ| ≤ 1e-5).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from transformers import pipeline

import pairrm_hf  # noqa: F401  (registers the pipeline tasks)
from benchmarks.workloads import build_model, build_tokenizer, make_inputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="tiny")
    parser.add_argument("--workload", default="mixed")
    parser.add_argument("--inputs", type=int, default=64)
    parser.add_argument("--n", type=int, default=4, help="candidates per input")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--pair-batch-size", type=int, default=16)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    tokenizer = build_tokenizer()
    model = build_model(args.shape, tokenizer)
    pipe = pipeline(
        "pairwise-ranking", model=model, tokenizer=tokenizer, device="cpu", pair_batch_size=args.pair_batch_size
    )
    prompts, cands = make_inputs(tokenizer, args.workload, args.inputs, args.n, seed=0)
    rows = [{"prompt": p, "candidates": c} for p, c in zip(prompts, cands)]
    engine = pipe.ranker.engine
    real = engine.pair_logits
    totals: dict[str, int] = {}

    def counting(examples, pairs):
        out = real(examples, pairs)
        totals["calls"] = totals.get("calls", 0) + 1
        for key in ("forward_calls", "rows", "real_tokens", "padded_tokens"):
            totals[key] = totals.get(key, 0) + engine.last_stats[key]
        return out

    engine.pair_logits = counting  # counts the real engine's calls (nothing is replaced)
    results, reference = [], None
    for batch_size in args.batch_sizes:
        totals.clear()
        start = time.perf_counter()
        out = list(pipe((r for r in rows), batch_size=batch_size))
        seconds = time.perf_counter() - start
        scores = np.array([[r["score"] for r in sorted(o, key=lambda r: r["index"])] for o in out])
        reference = scores if reference is None else reference
        results.append(
            {
                "batch_size": batch_size,
                "engine_calls": totals["calls"],
                "forward_passes": totals["forward_calls"],
                "rows": totals["rows"],
                "padding": round(1 - totals["real_tokens"] / totals["padded_tokens"], 4),
                "seconds": round(seconds, 3),
                "max_abs_diff": float(np.abs(scores - reference).max()),
            }
        )
    print(
        f"shape={args.shape} workload={args.workload} inputs={args.inputs} n={args.n} pair_batch_size={args.pair_batch_size}"
    )
    print("| batch_size | engine calls | forward passes | rows | padding | seconds | max abs Δ vs bs=1 |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['batch_size']} | {r['engine_calls']} | {r['forward_passes']} | {r['rows']} | {r['padding']:.1%} "
            f"| {r['seconds']:.2f} | {r['max_abs_diff']:.1e} |"
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
