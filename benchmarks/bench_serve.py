"""Load test of ``pairrm serve``: concurrent HTTP clients on loopback vs direct in-process calls on the same data.

Run from the repository root::

    python -m benchmarks.bench_serve --shapes tiny --requests 512 --json serve_tiny.json
    python -m benchmarks.bench_serve --shapes base --requests 48 --json serve_base.json

Each request is ``POST /rank`` of one prompt with ``--n`` candidates (``max_logits``: n(n−1) ordered pairs).
The server runs in this process (uvicorn in a thread, random-weight model of the shape, CPU); the ``--clients``
concurrent clients run as threads of a separate process (so they do not share the server's interpreter lock),
each posting the next request as soon as its previous one is answered. Reported per configuration:
requests/s and pairs/s, the ratio to direct in-process calls on the same data (``direct (per request)``: one
``rank_batch`` call per request, one after the other; ``direct (one call)``: one ``rank_batch`` over all of them,
the engine's best case), p50/p99 latency, errors, and the max |Δ score| against the direct results.
Bounded: ``--requests`` per configuration and ``--time-limit`` seconds per configuration.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import threading
import time

import numpy as np
import torch

from benchmarks.workloads import build_model, build_tokenizer, make_inputs, make_ranker


def _client_process(url: str, payloads: list[bytes], clients: int, time_limit: float, conn) -> None:
    """Runs in a child process: ``clients`` threads post the payloads; sends back latencies, answers, errors."""
    import urllib.request

    lock = threading.Lock()
    state = {"next": 0}
    latencies: list[float] = [0.0] * len(payloads)
    answers: list = [None] * len(payloads)
    errors: list[str] = []
    deadline = time.perf_counter() + time_limit

    def worker() -> None:
        while True:
            with lock:
                k = state["next"]
                state["next"] += 1
            if k >= len(payloads) or time.perf_counter() > deadline:
                return
            start = time.perf_counter()
            req = urllib.request.Request(f"{url}/rank", data=payloads[k], headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=600) as r:
                    answers[k] = json.loads(r.read())["rankings"][0]["scores"]
            except Exception as err:  # noqa: BLE001 - counted as an error of the load test
                with lock:
                    errors.append(f"{k}: {type(err).__name__}: {err}")
            latencies[k] = time.perf_counter() - start

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    conn.send({"seconds": time.perf_counter() - start, "latencies": latencies, "answers": answers, "errors": errors})
    conn.close()


def _load(url: str, payloads: list[bytes], clients: int, time_limit: float) -> dict:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_client_process, args=(url, payloads, clients, time_limit, child))
    proc.start()
    out = parent.recv()
    proc.join()
    return out


def run_shape(args: argparse.Namespace, shape: str, tokenizer) -> list[dict]:
    from pairrm_hf.serve.app import BackgroundServer, create_app
    from pairrm_hf.serve.service import PairRMService

    requests = args.requests if shape == "tiny" else args.base_requests
    n = args.n if shape == "tiny" else args.base_n
    prompts, cands = make_inputs(tokenizer, args.workload, requests, n, seed=args.seed)
    payloads = [json.dumps({"prompts": [p], "candidates": [c]}).encode() for p, c in zip(prompts, cands)]
    pairs_per_request = n * (n - 1)
    model = build_model(shape, tokenizer)
    rm = make_ranker(model, tokenizer, device="cpu", batch_size=args.batch_size)
    rows = []

    # direct, one call per request, one after the other (a trainer calling PairRM in-process)
    rm.rank_batch(prompts[:2], cands[:2])  # warm-up
    start = time.perf_counter()
    direct = [rm.rank_batch([p], [c])[0].scores for p, c in zip(prompts, cands)]
    per_request_s = time.perf_counter() - start
    start = time.perf_counter()
    one_call = rm.rank_batch(prompts, cands)
    one_call_s = time.perf_counter() - start
    one_call_delta = max(float(np.abs(r.scores - d).max()) for r, d in zip(one_call, direct))
    for name, seconds, delta in (
        ("direct (per request)", per_request_s, 0.0),
        ("direct (one call)", one_call_s, one_call_delta),
    ):
        rows.append(
            {
                "shape": shape,
                "n": n,
                "config": name,
                "requests": requests,
                "seconds": seconds,
                "req_per_s": requests / seconds,
                "pairs_per_s": requests * pairs_per_request / seconds,
                "p50_ms": None,
                "p99_ms": None,
                "errors": 0,
                "max_delta": delta,
            }
        )

    for batching in (True, False):
        service = PairRMService(
            make_ranker(model, tokenizer, device="cpu", batch_size=args.batch_size),
            max_wait_ms=args.max_wait_ms,
            batching=batching,
        )
        with BackgroundServer(create_app(service, max_pending=max(256, args.clients))) as server:
            _load(server.url, payloads[: min(len(payloads), 2 * args.clients)][:4], 4, args.time_limit)  # warm-up
            out = _load(server.url, payloads, args.clients, args.time_limit)
        batcher = service.batcher.snapshot()
        service.close()
        done = [k for k, a in enumerate(out["answers"]) if a is not None]
        lat = np.array([out["latencies"][k] for k in done]) * 1000.0
        delta = max(
            (float(np.abs(np.asarray(out["answers"][k]) - direct[k]).max()) for k in done), default=float("nan")
        )
        rows.append(
            {
                "shape": shape,
                "n": n,
                "config": f"server, batching {'on' if batching else 'off'}",
                "requests": len(done),
                "seconds": out["seconds"],
                "req_per_s": len(done) / out["seconds"],
                "pairs_per_s": len(done) * pairs_per_request / out["seconds"],
                "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
                "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
                "errors": len(out["errors"]) + (requests - len(done) - len(out["errors"])),
                "max_delta": delta,
                "jobs_per_batch": batcher["jobs_per_batch_mean"],
                "batch_fill": batcher["batch_fill"],
                "error_samples": out["errors"][:3],
            }
        )
    for row in rows:
        row["vs_direct_per_request"] = row["req_per_s"] / rows[0]["req_per_s"]
        row["vs_direct_one_call"] = row["req_per_s"] / rows[1]["req_per_s"]
    return rows


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", default=["tiny"], choices=["tiny", "base", "large"])
    parser.add_argument("--workload", default="short", choices=["short", "mixed", "long"])
    parser.add_argument("--requests", type=int, default=512, help="requests of the tiny shape")
    parser.add_argument("--base-requests", type=int, default=48, help="requests of the base/large shapes")
    parser.add_argument("--n", type=int, default=4, help="candidates per request (tiny shape)")
    parser.add_argument("--base-n", type=int, default=2, help="candidates per request (base/large shapes)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32, help="engine rows per forward pass")
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--time-limit", type=float, default=300.0, help="seconds per configuration")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: on a CPU shared with other work, 2 spinning OpenMP threads "
        "can be many times slower than 1)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    tokenizer = build_tokenizer()
    rows = []
    for shape in args.shapes:
        rows += run_shape(args, shape, tokenizer)
    header = (
        "| shape | n | config | requests | req/s | pairs/s | × direct (per request) | × direct (one call) | p50 ms | "
        "p99 ms | errors | max\\|Δ\\| vs direct | jobs/batch |"
    )
    print(header)
    print("|" + "---|" * 13)
    for row in rows:
        print(
            f"| {row['shape']} | {row['n']} | {row['config']} | {row['requests']} | {row['req_per_s']:.2f} | "
            f"{row['pairs_per_s']:.1f} | {row['vs_direct_per_request']:.2f} | {row['vs_direct_one_call']:.2f} | "
            f"{_fmt(row['p50_ms'], '.0f')} | {_fmt(row['p99_ms'], '.0f')} | {row['errors']} | "
            f"{row['max_delta']:.1e} | {_fmt(row.get('jobs_per_batch'), '.1f')} |"
        )
    if args.json:
        meta = {
            "args": vars(args),
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d"),
        }
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
