"""``pairrm serve`` under abuse (issue 21): the four figures of the hardening work, measured on loopback.

Run from the repository root::

    python -m benchmarks.bench_server_abuse --json server_abuse.json
    python -m benchmarks.bench_server_abuse --shape base --big-n 32 --json server_abuse_base.json

1. **fuzz**: ``--requests`` hostile or random requests (valid bodies with a field swapped for random JSON, random
   bytes, deep nesting, NaN, 5,000-digit integers, huge temperatures and seeds, bodies over the cost limit,
   uploads dropped halfway); reported: requests tried, 4xx, 5xx (target 0).
2. **abandoned**: a client posts a ``--big-n``-candidate ``max_logits`` ranking (n(n−1) pairs), gives up after
   ``--give-up`` s; a 1-pair ``/compare`` is sent right after. Reported: the 1-pair request's latency, the time of one
   forward batch of the engine (target: latency ≤ about one batch), and the pairs computed after the client left.
   Side by side, the same run with ``step_pairs`` as large as the request (the engine call of the old batcher).
3. **busy**: the same 1-pair request while the big ranking is still wanted (nobody leaves).
4. **stalled**: ``--max-pending`` sockets send headers and 5 body bytes, then nothing; reported: slots they hold
   after ``--body-timeout`` (target 0) and the status a normal request gets then.
5. **step cost**: the big ranking alone, in steps of one forward batch vs one engine call (throughput ratio).

The server runs in this process (uvicorn in a thread, random-weight model of the shape, CPU).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import socket
import threading
import time

import httpx
import numpy as np
import torch

from benchmarks.workloads import build_model, build_tokenizer, make_inputs, make_ranker
from pairrm_hf.serve.app import BackgroundServer, create_app
from pairrm_hf.serve.protocol import Limits, request_schemas
from pairrm_hf.serve.service import PairRMService


def _random_value(rng: random.Random, depth: int = 0):
    kinds = ["none", "bool", "int", "float", "str"] + (["list", "dict"] if depth < 3 else [])
    kind = rng.choice(kinds)
    if kind == "none":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return rng.choice([0, -1, 2**31, 2**63, 2**64, -(2**70), 10**30, rng.randint(-100, 100)])
    if kind == "float":
        return rng.choice([0.0, -0.0, 1e-320, 1e308, -1.5, rng.random()])
    if kind == "str":
        return rng.choice(["", "a", "é" * 3, "\x00", "<|source|>", "x" * rng.randint(0, 50)])
    if kind == "list":
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {
        rng.choice(["a", "prompts", "seed", "mode"]): _random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))
    }


def _valid(rng: random.Random, endpoint: str, limits: Limits) -> dict:
    n = rng.randint(1, limits.max_items)
    texts = lambda k: [rng.choice(["q", "answer", "a b c", ""]) + str(i) for i in range(k)]  # noqa: E731
    if endpoint == "compare":
        return {"prompts": texts(n), "candidates_a": texts(n), "candidates_b": texts(n)}
    if endpoint == "get_reward":
        return {"query": texts(n), "prompts": ["p"] * n}
    return {"prompts": texts(n), "candidates": [texts(rng.randint(1, limits.max_candidates)) for _ in range(n)]}


def _hostile(rng: random.Random, limits: Limits) -> tuple[str, bytes]:
    endpoint = rng.choice(["rank", "compare", "score", "get_reward"])
    choice = rng.randrange(8)
    if choice == 0:
        return endpoint, b"[" * 100_000 + b"]" * 100_000
    if choice == 1:
        return endpoint, b'{"prompts": ["q"], "candidates": [["a"]], "seed": NaN}'
    if choice == 2:
        return "rank", b'{"prompts": ["q"], "candidates": [["a", "b"]], "seed": ' + b"7" * 5000 + b"}"
    if choice == 3:
        return "compare", json.dumps(
            {"prompts": ["q"], "candidates_a": ["a"], "candidates_b": ["b"], "temperature": 10**400}
        ).encode()
    if choice == 4:
        return endpoint, bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
    body = _valid(rng, endpoint, limits)
    if choice == 5:  # one field swapped for random JSON
        fields = list(request_schemas(limits)[endpoint]["properties"])
        body[rng.choice(fields)] = _random_value(rng)
    if choice == 6 and endpoint == "rank":
        body["seed"] = rng.choice([2**64, -(2**63) - 1, 2**200])
    return endpoint, json.dumps(body).encode()


def fuzz(url: str, port: int, limits: Limits, requests: int, seed: int) -> dict:
    rng = random.Random(seed)
    counts: dict[int, int] = {}
    with httpx.Client(base_url=url, timeout=120) as client:
        for k in range(requests):
            if k % 25 == 24:  # an upload dropped halfway
                sock = socket.create_connection(("127.0.0.1", port))
                sock.sendall(b'POST /rank HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{"prompts": [')
                sock.close()
                continue
            endpoint, body = _hostile(rng, limits)
            status = client.post(f"/{endpoint}", content=body, headers={"Content-Type": "application/json"}).status_code
            counts[status] = counts.get(status, 0) + 1
        time.sleep(0.5)
        server_side = client.get("/metrics").json()["requests"]
    server_5xx = sum(n for by in server_side.values() for code, n in by.items() if code.startswith("5"))
    return {
        "requests": requests,
        "statuses": {str(k): v for k, v in sorted(counts.items())},
        "4xx": sum(v for k, v in counts.items() if 400 <= k < 500),
        "5xx": sum(v for k, v in counts.items() if k >= 500) + server_5xx,
    }


def _one_pair_latency(url: str) -> float:
    start = time.perf_counter()
    r = httpx.post(
        f"{url}/compare", json={"prompts": ["q"], "candidates_a": ["a"], "candidates_b": ["b"]}, timeout=3600
    )
    r.raise_for_status()
    return time.perf_counter() - start


def abandoned(service: PairRMService, url: str, big: dict, give_up: float, leave: bool) -> dict:
    batcher = service.batcher
    pairs_before = batcher.stats.pairs
    out: dict = {}

    def big_client() -> None:
        try:
            httpx.post(f"{url}/rank", json=big, timeout=give_up if leave else 3600)
        except httpx.TimeoutException:
            pass
        out["big_done"] = time.perf_counter()

    thread = threading.Thread(target=big_client)
    thread.start()
    time.sleep(give_up + 0.05)
    left_at = batcher.stats.pairs
    out["one_pair_latency_s"] = _one_pair_latency(url)
    if leave:
        thread.join()
    else:
        out["big_still_running"] = thread.is_alive()
        thread.join()
    time.sleep(0.2)
    out["pairs_after_leaving"] = batcher.stats.pairs - left_at - 2 if leave else None
    out["pairs_computed"] = batcher.stats.pairs - pairs_before
    return out


def stalled(service: PairRMService, max_pending: int, body_timeout: float) -> dict:
    app = create_app(service, max_pending=max_pending, body_timeout=body_timeout)
    with BackgroundServer(app) as srv:
        head = b"POST /rank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        socks = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(max_pending)]
        for sock in socks:
            sock.sendall(head + b'{"pro')
        time.sleep(0.2)
        good = {"prompts": ["q"], "candidates": [["a", "b"]]}
        during = httpx.post(f"{srv.url}/rank", json=good, timeout=60).status_code
        time.sleep(body_timeout + 0.5)
        held = httpx.get(f"{srv.url}/metrics").json()["pending"]
        after = httpx.post(f"{srv.url}/rank", json=good, timeout=60).status_code
        for sock in socks:
            sock.close()
    return {"stalled_sockets": max_pending, "status_during": during, "slots_held_after": held, "status_after": after}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="tiny", choices=["tiny", "base", "large"])
    parser.add_argument("--batch-size", type=int, default=32, help="engine rows per forward pass")
    parser.add_argument("--big-n", type=int, default=64, help="candidates of the abandoned ranking")
    parser.add_argument("--give-up", type=float, default=1.0, help="seconds before the big client leaves")
    parser.add_argument("--requests", type=int, default=500, help="fuzz requests")
    parser.add_argument("--max-pending", type=int, default=4)
    parser.add_argument("--body-timeout", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    tokenizer = build_tokenizer()
    rm = make_ranker(build_model(args.shape, tokenizer, seed=args.seed), tokenizer, batch_size=args.batch_size)
    prompts, cands = make_inputs(tokenizer, "short", 1, args.big_n, seed=args.seed)
    big = {"prompts": prompts, "candidates": cands}
    big_pairs = args.big_n * (args.big_n - 1)
    limits = Limits(max_items=8, max_candidates=max(8, args.big_n), max_pairs=max(64, big_pairs))
    rows: dict = {}

    # one forward batch, the unit of the targets
    examples = rm.engine.encode(prompts, cands)
    batch_pairs = np.array([(0, i, j) for i in range(args.big_n) for j in range(args.big_n) if i != j])
    rm.engine.pair_logits(examples, batch_pairs[: args.batch_size])
    start = time.perf_counter()
    for _ in range(3):
        rm.engine.pair_logits(examples, batch_pairs[: args.batch_size])
    batch_s = (time.perf_counter() - start) / 3
    rows["forward_batch_s"] = batch_s

    for label, step in (("steps of one batch", None), ("one engine call", big_pairs)):
        service = PairRMService(rm, max_wait_ms=5.0, limits=limits)
        service.batcher.step_pairs = step or service.batcher.step_pairs
        with BackgroundServer(create_app(service, max_body_bytes=8 * 2**20)) as srv:
            start = time.perf_counter()
            httpx.post(f"{srv.url}/rank", json=big, timeout=3600).raise_for_status()
            alone = time.perf_counter() - start
            rows[label] = {
                "big_alone_s": alone,
                "abandoned": abandoned(service, srv.url, big, args.give_up, leave=True),
                "busy": abandoned(service, srv.url, big, args.give_up, leave=False),
            }
        service.close()

    fuzz_service = PairRMService(rm, max_wait_ms=1.0, limits=Limits(max_items=3, max_candidates=4, max_pairs=40))
    with BackgroundServer(create_app(fuzz_service, max_body_bytes=64 * 1024, body_timeout=5.0)) as srv:
        rows["fuzz"] = fuzz(srv.url, srv.port, fuzz_service.limits, args.requests, args.seed)
    rows["stalled"] = stalled(fuzz_service, args.max_pending, args.body_timeout)
    fuzz_service.close()

    steps, whole = rows["steps of one batch"], rows["one engine call"]
    print(f"shape {args.shape}, batch_size {args.batch_size}, big request {args.big_n} candidates = {big_pairs} pairs")
    print(f"one forward batch: {batch_s * 1000:.1f} ms")
    print(f"{'':34} {'steps of one batch':>20} {'one engine call':>20}")
    table = [
        ("1-pair wait, big one abandoned (ms)", lambda r: r["abandoned"]["one_pair_latency_s"] * 1000),
        ("  … in forward batches", lambda r: r["abandoned"]["one_pair_latency_s"] / batch_s),
        ("pairs computed after leaving", lambda r: r["abandoned"]["pairs_after_leaving"]),
        ("1-pair wait, big one running (ms)", lambda r: r["busy"]["one_pair_latency_s"] * 1000),
        ("big request alone (s)", lambda r: r["big_alone_s"]),
    ]
    for name, get in table:
        print(f"{name:34} {get(steps):>20.1f} {get(whole):>20.1f}")
    print(f"step overhead (alone, steps / one call): {steps['big_alone_s'] / whole['big_alone_s']:.2f}x")
    f = rows["fuzz"]
    print(f"fuzz: {f['requests']} requests, {f['4xx']} 4xx, {f['5xx']} 5xx; statuses {f['statuses']}")
    s = rows["stalled"]
    print(
        f"stalled: {s['stalled_sockets']} sockets -> {s['status_during']} while held; "
        f"{s['slots_held_after']} slots held after {args.body_timeout:g} s; then {s['status_after']}"
    )
    if args.json:
        meta = {"args": vars(args), "python": platform.python_version(), "torch": torch.__version__}
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
