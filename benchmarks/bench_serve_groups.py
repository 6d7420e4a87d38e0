"""Load test of group mode (``pairrm serve --group-size G``): per-sample clients vs in-process group rewards.

Run from the repository root::

    python -m benchmarks.bench_serve_groups --groups 64 --group-size 8 --clients 64 --json serve_groups.json

Workload: ``--groups`` prompts with ``--group-size`` responses each (random-weight model of ``--shape``, CPU). Every
sample is one ``POST /get_reward`` request (``{"query": [prompt + response], "prompts": [prompt]}``, as OpenRLHF's
agent executor sends it); ``--clients`` threads in a separate process post them, each the next one as soon as its
previous one is answered. Samples arrive in windows of ``--clients``: within a window the order is shuffled, so a
group's samples arrive interleaved with other groups' (a rollout step's samples are in flight together).

Side by side, in one run, on the same groups: in-process ``PairRMReward(mode="group")`` called once per window
(the same samples the server has in flight at once) and once per group. Reported: samples/s, the ratio to each
in-process configuration, p50/p99 request latency, errors, rewards that differ from the in-process group reward by
more than 1e-5, and the server's rendezvous counters.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import random
import sys
import threading
import time

import numpy as np
import torch

from benchmarks.workloads import build_model, build_tokenizer, make_inputs, make_ranker


def _client_process(url: str, payloads: list[bytes], clients: int, conn) -> None:
    import urllib.request

    lock = threading.Lock()
    state = {"next": 0}
    latencies = [0.0] * len(payloads)
    answers: list = [None] * len(payloads)
    errors: list[str] = []

    def worker() -> None:
        while True:
            with lock:
                k = state["next"]
                state["next"] += 1
            if k >= len(payloads):
                return
            start = time.perf_counter()
            req = urllib.request.Request(
                f"{url}/get_reward", data=payloads[k], headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(req, timeout=600) as r:
                    answers[k] = json.loads(r.read())["rewards"][0]
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


def _load(url: str, payloads: list[bytes], clients: int) -> dict:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_client_process, args=(url, payloads, clients, child))
    proc.start()
    out = parent.recv()
    proc.join()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="tiny", choices=["tiny", "base", "large"])
    parser.add_argument("--workload", default="short", choices=["short", "mixed", "long"])
    parser.add_argument("--groups", type=int, default=64)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32, help="engine rows per forward pass")
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--group-timeout", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.clients % args.group_size:
        parser.error("--clients must be a multiple of --group-size (a window holds whole groups)")
    torch.set_num_threads(args.threads)

    from pairrm_hf.ranking.rewards import group_rewards
    from pairrm_hf.serve.app import BackgroundServer, create_app
    from pairrm_hf.serve.protocol import Limits
    from pairrm_hf.serve.rendezvous import GroupRendezvous
    from pairrm_hf.serve.service import PairRMService
    from pairrm_hf.trl import PairRMReward

    tokenizer = build_tokenizer()
    prompts, cands = make_inputs(tokenizer, args.workload, args.groups, args.group_size, seed=args.seed)
    prompts = [f"{k}: {p}" for k, p in enumerate(prompts)]  # distinct prompt texts: one group each
    model = build_model(args.shape, tokenizer)
    rm = make_ranker(model, tokenizer, device="cpu", batch_size=args.batch_size)
    g = args.group_size
    per_window = args.clients // g
    samples = []  # (group, index) in arrival order
    rng = random.Random(args.seed)
    for w in range(0, args.groups, per_window):
        window = [(q, k) for q in range(w, min(w + per_window, args.groups)) for k in range(g)]
        rng.shuffle(window)
        samples += window

    # in-process, side by side: PairRMReward(mode="group") on the same groups
    reward = PairRMReward(rm, mode="group")
    reward([prompts[0]] * g, cands[0])  # warm-up
    rows, expected = [], {}
    for name, step in (("in-process, one call per window", per_window), ("in-process, one call per group", 1)):
        start = time.perf_counter()
        for q0 in range(0, args.groups, step):
            qs = range(q0, min(q0 + step, args.groups))
            out = reward([prompts[q] for q in qs for _ in range(g)], [c for q in qs for c in cands[q]])
            for i, q in enumerate(qs):
                for k in range(g):
                    expected.setdefault((q, k), out[i * g + k])
        seconds = time.perf_counter() - start
        rows.append(
            {"config": name, "samples": len(samples), "seconds": seconds, "samples_per_s": len(samples) / seconds}
        )
    check = group_rewards(rm, [prompts[0]] * g, cands[0])  # the shared arithmetic, as the server uses it
    assert max(abs(a - expected[(0, k)]) for k, a in enumerate(check)) < 1e-5

    service = PairRMService(
        make_ranker(model, tokenizer, device="cpu", batch_size=args.batch_size),
        max_wait_ms=args.max_wait_ms,
        limits=Limits(max_candidates=max(64, g)),
    )
    rendezvous = GroupRendezvous(g, args.group_timeout, limits=service.limits)
    payloads = [json.dumps({"query": [prompts[q] + cands[q][k]], "prompts": [prompts[q]]}).encode() for q, k in samples]
    with BackgroundServer(create_app(service, max_pending=max(256, 2 * args.clients), rendezvous=rendezvous)) as srv:
        warm = [json.dumps({"query": ["w" + c], "prompts": ["w"]}).encode() for c in cands[0]]
        _load(srv.url, warm, g)
        out = _load(srv.url, payloads, args.clients)
    counters = rendezvous.snapshot()
    batcher = service.batcher.snapshot()
    service.close()
    done = [i for i, a in enumerate(out["answers"]) if a is not None]
    lat = np.array([out["latencies"][i] for i in done]) * 1000.0
    differing = sum(abs(out["answers"][i] - expected[samples[i]]) > 1e-5 for i in done)
    max_delta = max((abs(out["answers"][i] - expected[samples[i]]) for i in done), default=float("nan"))
    rows.append(
        {
            "config": f"server, group mode, {args.clients} per-sample clients",
            "samples": len(done),
            "seconds": out["seconds"],
            "samples_per_s": len(done) / out["seconds"],
            "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
            "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
            "errors": len(out["errors"]) + (len(samples) - len(done) - len(out["errors"])),
            "differing": int(differing),
            "max_delta": float(max_delta),
            "groups_completed": counters["groups_completed"] - 1,  # minus the warm-up group
            "groups_timed_out": counters["groups_timed_out"],
            "jobs_per_batch": batcher["jobs_per_batch_mean"],
            "error_samples": out["errors"][:3],
        }
    )
    for row in rows:
        row["vs_window"] = row["samples_per_s"] / rows[0]["samples_per_s"]
        row["vs_group"] = row["samples_per_s"] / rows[1]["samples_per_s"]
    print(
        "| config | samples | samples/s | × in-process (per window) | × in-process (per group) | p50 ms | p99 ms | "
        "errors | differing rewards | groups full / timed out |"
    )
    print("|" + "---|" * 10)
    for row in rows:
        p50 = row.get("p50_ms")
        p99 = row.get("p99_ms")
        groups = f"{row['groups_completed']} / {row['groups_timed_out']}" if "groups_completed" in row else "–"
        print(
            f"| {row['config']} | {row['samples']} | {row['samples_per_s']:.1f} | {row['vs_window']:.2f} | "
            f"{row['vs_group']:.2f} | {'–' if p50 is None else f'{p50:.0f}'} | {'–' if p99 is None else f'{p99:.0f}'}"
            f" | {row.get('errors', 0)} | {row.get('differing', '–')} | {groups} |"
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
