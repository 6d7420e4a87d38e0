"""Cost of a ``pairrm`` job's input fingerprint: a streaming blake2b of every byte, against reading the same file.

Writes a synthetic JSONL input of ``--size-mb`` MB (rows like the CLI's: a prompt and four candidates), then
times, on a warm page cache (the job reads the input just before fingerprinting it):

* ``blake2b``: :func:`pairrm_hf.jobs.io.content_fingerprint` (what the job's identity uses),
* ``sampled``: size + 3 × 1 MiB samples (what the model's identity uses; misses edits between samples),
* ``json parse``: ``json.loads`` of every line of the first ``--parse-mb`` MB (a lower bound of the job's own read),

and prints MB/s for each. ``python -m benchmarks.bench_fingerprint --size-mb 1024 --json fingerprint.json``
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from pairrm_hf.jobs.io import content_fingerprint


def _write_input(path: str, size_mb: int) -> int:
    line = json.dumps(
        {
            "prompt": "What is the capital of France? " * 4,
            "candidates": ["Paris is the capital. " * 6, "Berlin. " * 10, "I do not know. " * 8, "Lyon"],
        }
    )
    block = "".join(line.replace("France", f"France {k}") + "\n" for k in range(1000)).encode()
    with open(path, "wb") as f:
        written = 0
        while written < size_mb * 1_000_000:
            f.write(block)
            written += len(block)
    return os.path.getsize(path)


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mb", type=int, default=1024)
    p.add_argument("--parse-mb", type=int, default=100, help="MB parsed as JSON for the comparison")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    from pairrm_hf.jobs.runner import _sample_hash

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "input.jsonl")
        size = _write_input(path, args.size_mb)
        content_fingerprint(path)  # warm the page cache, as the job's own read does
        mb = size / 1e6
        rows = [
            {"method": "blake2b (full)", "mb": mb, "seconds": _timed(lambda: content_fingerprint(path))},
            {"method": "sampled (3 MiB + size)", "mb": mb, "seconds": _timed(lambda: _sample_hash(path))},
        ]

        def parse():
            limit = args.parse_mb * 1_000_000
            with open(path, "rb") as f:
                read = 0
                for raw in f:
                    json.loads(raw)
                    read += len(raw)
                    if read >= limit:
                        break

        rows.append({"method": "json parse (job's read)", "mb": min(mb, args.parse_mb), "seconds": _timed(parse)})
    print(f"{'method':<26} {'MB':>8} {'seconds':>9} {'MB/s':>9}")
    for row in rows:
        row["mb_per_s"] = row["mb"] / row["seconds"] if row["seconds"] > 0 else float("inf")
        print(f"{row['method']:<26} {row['mb']:>8.0f} {row['seconds']:>9.3f} {row['mb_per_s']:>9.0f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
