"""`pairrm serve`: every endpoint against direct in-process calls, batching across concurrent requests, bad
requests, auth, cancellation, OpenRLHF's remote reward protocol, the TRL and verl clients, the CLI."""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from pairrm_hf import PairRM  # noqa: E402
from pairrm_hf.serve.app import BackgroundServer, create_app  # noqa: E402
from pairrm_hf.serve.batcher import Cancelled, PairBatcher, RequestScope  # noqa: E402
from pairrm_hf.serve.client import RemotePairRM, compute_score, compute_score_batch  # noqa: E402
from pairrm_hf.serve.protocol import Limits  # noqa: E402
from pairrm_hf.serve.service import PairRMService  # noqa: E402
from pairrm_hf.trl import PairRMRemoteReward, PairRMReward  # noqa: E402

TOL = 1e-5
PROMPTS = ["What is 2+2?", "Name a primary color.", "Say hello."]
CANDIDATES = [["4", "four", "5", "It is 4."], ["red", "blue"], ["hello", "hi there", "bye"]]


@pytest.fixture(scope="module")
def service(tiny_hf_dir):
    # batch_size 4 (the direct model uses 8): served results come from differently cut batches
    svc = PairRMService(
        PairRM.from_pretrained(tiny_hf_dir, device="cpu", batch_size=4),
        max_wait_ms=50.0,
        limits=Limits(max_items=64, max_candidates=16),
    )
    yield svc
    svc.close()


@pytest.fixture(scope="module")
def server(service):
    with BackgroundServer(create_app(service, max_body_bytes=64 * 1024)) as srv:
        yield srv


@pytest.fixture(scope="module")
def remote(server):
    return RemotePairRM(server.url, retries=0)


def close(a, b) -> bool:
    return np.allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), atol=TOL, rtol=0)


@pytest.mark.parametrize("aggregation", ["max_logits", "max_wins", "bubble", "reference", "sort"])
def test_rank_equals_direct(remote, tiny_rm, aggregation):
    served = remote.rank_batch(PROMPTS, CANDIDATES, aggregation=aggregation, seed=3)
    direct = tiny_rm.rank_batch(PROMPTS, CANDIDATES, aggregation=aggregation, seed=3)
    for s, d in zip(served, direct):
        assert close(s.scores, d.scores)
        assert s.ranks.tolist() == d.ranks.tolist() and s.comparisons == d.comparisons
        assert (s.matrix is None) == (d.matrix is None)
        if d.matrix is not None:
            assert close(s.matrix, d.matrix)
    top = remote.rank(PROMPTS[0], CANDIDATES[0], top_k=2)
    assert [r.index for r in top] == [r.index for r in tiny_rm.rank(PROMPTS[0], CANDIDATES[0], top_k=2)]


@pytest.mark.parametrize("mode", ["symmetric", "ab", "ba"])
def test_compare_equals_direct(remote, tiny_rm, mode):
    a, b = ["4", "red", "hello"], ["5", "blue", "bye"]
    assert close(remote.compare(PROMPTS, a, b, mode=mode), tiny_rm.compare(PROMPTS, a, b, mode=mode))
    assert close(
        remote.compare_proba(PROMPTS, a, b, mode=mode, temperature=2.0),
        tiny_rm.compare_proba(PROMPTS, a, b, mode=mode, temperature=2.0),
    )
    # identical answers give exactly 0 in symmetric mode, served or not
    assert remote.compare(["q"], ["same"], ["same"])[0] == 0.0


def test_score_equals_direct(remote, tiny_rm):
    refs = ["It is 4.", "green", "hello"]
    for kwargs in ({"references": refs}, {"ref_mode": "shortest"}, {"ref_mode": "first"}):
        for s, d in zip(
            remote.rank_with_ref(PROMPTS, CANDIDATES, **kwargs), tiny_rm.rank_with_ref(PROMPTS, CANDIDATES, **kwargs)
        ):
            assert close(s, d)
    instr = ["Answer briefly. ", "", "Be polite. "]
    assert close(
        remote.rank_with_ref(PROMPTS, CANDIDATES, instructions=instr)[0],
        tiny_rm.rank_with_ref(PROMPTS, CANDIDATES, instructions=instr)[0],
    )


def test_health_and_metrics(server, remote):
    health = httpx.get(f"{server.url}/health").json()
    assert health["status"] == "ok" and health["device"] == "cpu" and health["batching"] is True
    remote.compare(["q"], ["a"], ["b"])
    metrics = httpx.get(f"{server.url}/metrics").json()
    assert metrics["requests"]["compare"]["200"] >= 1
    assert metrics["latency"]["compare"]["p50_ms"] > 0
    assert metrics["batcher"]["pairs"] >= 2 and metrics["batcher"]["forward_calls"] >= 1
    text = httpx.get(f"{server.url}/metrics", params={"format": "prometheus"}).text
    assert re.search(r'pairrm_requests_total\{endpoint="compare",status="200"\} \d+', text)


def _work(k: int):
    """Request k of the concurrency test: an endpoint and its direct twin."""
    prompt = [f"Question number {k}?"]
    cands = [[f"answer {k}", "a longer answer " * (k % 4 + 1), "no", f"{k} {k}"][: 2 + k % 3]]
    kind = k % 4
    if kind == 0:
        return lambda rm: rm.rank_batch(prompt, cands)[0].scores
    if kind == 1:
        return lambda rm: rm.rank_batch(prompt, cands, aggregation="bubble", seed=k)[0].scores
    if kind == 2:
        return lambda rm: rm.compare(prompt, [cands[0][0]], [cands[0][1]])
    return lambda rm: rm.rank_with_ref(prompt, cands, references=["reference answer"])[0]


def test_concurrent_requests_are_batched_and_equal_direct(service, remote, tiny_rm):
    before = service.batcher.snapshot()
    n = 24
    results: list = [None] * n
    barrier = threading.Barrier(n)

    def client(k: int) -> None:
        barrier.wait()
        results[k] = _work(k)(remote)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for k in range(n):
        assert close(results[k], _work(k)(tiny_rm)), k
    after = service.batcher.snapshot()
    # fewer engine calls than jobs: concurrent requests shared batches
    assert after["batches"] - before["batches"] < after["jobs"] - before["jobs"]


def test_bad_requests_name_the_field_and_server_keeps_serving(server, remote, tiny_rm):
    url = server.url
    good = {"prompts": ["q"], "candidates": [["a", "b"]]}
    cases = [
        ("rank", b'{"prompts": [', 400, "body"),
        ("rank", b"\xff\xfe", 400, "body"),
        ("rank", [1, 2], 422, "body"),
        ("rank", {"prompts": "q", "candidates": [["a"]]}, 422, "prompts"),
        ("rank", {"prompts": ["q", "r"], "candidates": [["a"], [1]]}, 422, "candidates[1][0]"),
        ("rank", {"prompts": ["q", "r"], "candidates": [["a"]]}, 422, "candidates"),
        ("rank", {"prompts": [], "candidates": []}, 422, "prompts"),
        ("rank", {"prompts": ["q"], "candidates": [[]]}, 422, "candidates[0]"),
        ("rank", {"candidates": [["a"]]}, 422, "prompts"),
        ("rank", {**good, "aggregaton": "bubble"}, 422, "aggregaton"),
        ("rank", {**good, "aggregation": "best"}, 422, "aggregation"),
        ("rank", {**good, "seed": True}, 422, "seed"),
        ("rank", {**good, "instructions": ["x", "y"]}, 422, "instructions"),
        ("rank", {"prompts": ["q"], "candidates": [[str(i) for i in range(17)]]}, 422, "candidates[0]"),
        ("compare", {"prompts": ["q"], "candidates_a": ["a"], "candidates_b": ["b", "c"]}, 422, "candidates_b"),
        (
            "compare",
            {"prompts": ["q"], "candidates_a": ["a"], "candidates_b": ["b"], "temperature": 0},
            422,
            "temperature",
        ),
        ("compare", {"prompts": ["q"], "candidates_a": [None], "candidates_b": ["b"]}, 422, "candidates_a[0]"),
        ("score", {**good, "references": ["r", "s"]}, 422, "references"),
        ("score", {**good, "ref_mode": "middle"}, 422, "ref_mode"),
        ("get_reward", {"prompts": ["q"]}, 422, "query"),
        ("get_reward", {"query": ["qa"], "prompts": ["q"], "labels": [3]}, 422, "labels[0]"),
        ("get_reward", {"query": ["qa", "qb"], "prompts": ["q"]}, 422, "prompts"),
        ("get_reward", {"query": ["a", "b"]}, 422, "prompts"),  # group rewards need prompts
        ("rank", {"prompts": ["x" * 70_000], "candidates": [["a"]]}, 413, "body"),
        ("nope", good, 404, "path"),
    ]
    for endpoint, body, status, field in cases:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        r = httpx.post(f"{url}/{endpoint}", content=content, headers={"Content-Type": "application/json"})
        assert r.status_code == status, (endpoint, body, r.text)
        answer = r.json()
        assert answer["field"] == field, (endpoint, body, answer)
        if status == 422:
            assert field.split("[")[0] in answer["error"]
    assert httpx.get(f"{url}/rank").status_code == 405
    # a body sent in chunks without Content-Length is bounded too
    chunks = (b'{"prompts": ["' + b"x" * 10_000 for _ in range(8))
    assert httpx.post(f"{url}/rank", content=chunks).status_code == 413
    # still serving, with the right numbers
    assert close(remote.rank_batch(["q"], [["a", "b"]])[0].scores, tiny_rm.rank_batch(["q"], [["a", "b"]])[0].scores)


def test_auth(service, tiny_rm):
    with BackgroundServer(create_app(service, api_key="s3cret")) as srv:
        body = {"prompts": ["q"], "candidates_a": ["a"], "candidates_b": ["b"]}
        assert httpx.post(f"{srv.url}/compare", json=body).status_code == 401
        wrong = httpx.post(f"{srv.url}/compare", json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["field"] == "Authorization"
        ok = httpx.post(f"{srv.url}/compare", json=body, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert httpx.post(f"{srv.url}/compare", json=body, headers={"X-Api-Key": "s3cret"}).status_code == 200
        assert httpx.get(f"{srv.url}/metrics").status_code == 401
        assert httpx.get(f"{srv.url}/health").status_code == 200  # liveness probes need no key
        reward = PairRMRemoteReward(srv.url, mode="baseline", api_key="s3cret")
        assert close(reward(["q"], ["a"], baseline=["b"]), tiny_rm.compare(["q"], ["a"], ["b"]))
        with pytest.raises(ValueError, match="API key"):
            RemotePairRM(srv.url, api_key="nope", retries=0).compare(["q"], ["a"], ["b"])


def test_openrlhf_get_reward(server, tiny_rm):
    """An OpenRLHF-style request: query = prompt + response, prompts, labels; rewards/scores/extra_logs back."""
    requests = pytest.importorskip("requests")
    prompts = ["<user>2+2?</user>"] * 3 + ["<user>Color?</user>"] * 2 + ["<user>Lone?</user>", "<user>Ref?</user>"]
    responses = ["4", "four", "five", "red", "blue", "only me", "close to ref"]
    labels = ["", None, "", "", "", "", "the reference"]
    queries = [p + r for p, r in zip(prompts, responses)]
    queries[5] = "a rendering that does not start with its prompt"
    r = requests.post(
        f"{server.url}/get_reward",
        json={"query": queries, "prompts": prompts, "labels": labels},
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    r.raise_for_status()
    out = r.json()
    assert set(out) == {"rewards", "scores", "extra_logs"} and out["scores"] == out["rewards"]
    rewards = out["rewards"]
    assert out["extra_logs"]["pairrm_against_label"] == [0, 0, 0, 0, 0, 0, 1]
    # group-relative: mean symmetric logit against the other responses to the same prompt, from the full matrix
    for start, end in ((0, 3), (3, 5)):
        c = tiny_rm.comparison_matrices([prompts[start]], [responses[start:end]])[0].astype(np.float64)
        assert close(rewards[start:end], (c - c.T).sum(axis=1) / (end - start - 1))
    assert abs(sum(rewards[0:3])) < TOL
    assert rewards[5] == 0.0  # alone in its group
    direct = tiny_rm.rank_with_ref([prompts[6]], [[responses[6]]], references=["the reference"])[0][0]
    assert close(rewards[6], direct)
    # OpenRLHF's older clients only read "rewards" and send only the query: fine when every query has a label
    r = requests.post(f"{server.url}/get_reward", json={"query": ["x", "y"], "labels": ["x", "z"]}, timeout=60).json()
    assert r["rewards"][0] == 0.0 and close(r["rewards"][1], tiny_rm.rank_with_ref([""], [["y"]], references=["z"])[0])


def test_remote_reward_equals_local(server, tiny_rm):
    prompts = ["Tell me a joke."] * 3 + ["Capital of France?"] * 2
    completions = ["Why did the chicken cross the road?", "No.", "Knock knock.", "Paris.", "Lyon."]
    refs = ["A joke.", "A joke.", "A joke.", "Paris.", "Paris."]
    chat_prompts = [[{"role": "user", "content": p}] for p in prompts]
    chat_completions = [[{"role": "assistant", "content": c}] for c in completions]
    for mode, columns in (("reference", {"reference": refs}), ("group", {}), ("baseline", {"baseline": refs})):
        local = PairRMReward(tiny_rm, mode=mode)
        served = PairRMRemoteReward(server.url, mode=mode)
        assert served.__name__ == local.__name__ == f"pairrm_{mode}"
        assert close(served(prompts, completions, **columns), local(prompts, completions, **columns))
        assert close(
            served(chat_prompts, chat_completions, **columns), local(chat_prompts, chat_completions, **columns)
        )
    baseline_fn = lambda ps: ["I do not know."] * len(ps)  # noqa: E731
    local = PairRMReward(tiny_rm, mode="baseline", baseline_fn=baseline_fn)
    served = PairRMRemoteReward(server.url, mode="baseline", baseline_fn=baseline_fn)
    assert close(served(prompts, completions), local(prompts, completions))
    # pickles as its URL (TRL may run rewards in a spawned process)
    clone = pickle.loads(pickle.dumps(PairRMRemoteReward(server.url, mode="group")))
    assert close(clone(prompts, completions), PairRMReward(tiny_rm, mode="group")(prompts, completions))
    with pytest.raises(ValueError, match="reference"):
        PairRMRemoteReward(server.url)(prompts, completions)  # the column is missing: the local error


def test_verl_compute_score(server, tiny_rm):
    direct = tiny_rm.rank_with_ref(["Capital of France?"], [["Paris"]], references=["Paris."])[0][0]
    got = compute_score("demo", "Paris", "Paris.", {"question": "Capital of France?"}, url=server.url)
    assert isinstance(got, float) and close(got, direct)
    assert compute_score("demo", "same", "same", None, url=server.url) == 0.0
    batch = compute_score_batch(
        ["d", "d"], ["Paris", "Lyon"], ["Paris.", "Paris."], [{"question": "Capital of France?"}, None], url=server.url
    )
    assert close(batch[0], direct)
    assert close(batch[1], tiny_rm.rank_with_ref([""], [["Lyon"]], references=["Paris."])[0][0])


def test_batcher_drops_cancelled_jobs_and_isolates_failures(service, tiny_rm):
    """Deterministic: the batch waits until every active request has queued a job (max_wait is long)."""
    engine = service.rm.engine
    batcher = PairBatcher(engine, max_wait_ms=60_000)
    try:
        examples = engine.encode(["q"], [["a", "b", "c"]])
        pairs = [(0, 0, 1), (0, 1, 2), (0, 2, 0)]
        expected = tiny_rm.engine.pair_logits(tiny_rm.engine.encode(["q"], [["a", "b", "c"]]), pairs)
        out: dict = {}

        def submit(name, scope, job_pairs):
            try:
                out[name] = batcher.pair_logits(examples, job_pairs, scope)
            except Exception as err:  # noqa: BLE001 - recorded for the assertions
                out[name] = err
            finally:
                batcher.leave()  # as PairRMService.handle does when the request's call returns or raises

        scopes = {name: RequestScope() for name in "abcd"}
        for _ in scopes:
            batcher.enter()
        threads = {name: threading.Thread(target=submit, args=(name, scopes[name], pairs)) for name in "ab"}
        threads["a"].start(), threads["b"].start()
        while batcher.queued < 2:
            time.sleep(0.005)
        scopes["b"].cancel()  # its client went away while its job waited for batch-mates
        # a job with a pair index past its candidates fails alone, in its own thread, and no batch-mate with it
        threads["c"] = threading.Thread(target=submit, args=("c", scopes["c"], [(0, 0, 7)]))
        threads["d"] = threading.Thread(target=submit, args=("d", scopes["d"], pairs[:2]))
        threads["c"].start(), threads["d"].start()
        for t in threads.values():
            t.join(60)
        assert isinstance(out["b"], Cancelled)
        assert isinstance(out["c"], IndexError)
        assert close(out["a"], expected) and close(out["d"], expected[:2])
        assert batcher.stats.cancelled_jobs == 1
    finally:
        batcher.close()


def test_client_disconnect_does_not_poison_batch(server, remote, tiny_rm):
    big = [[f"candidate {i} " * 20 for i in range(16)]]
    results = {}

    def impatient() -> None:
        try:
            httpx.post(f"{server.url}/rank", json={"prompts": ["slow"], "candidates": big}, timeout=0.05)
            results["impatient"] = "answered"
        except httpx.TimeoutException:
            results["impatient"] = "gave up"

    def patient(k: int) -> None:
        results[k] = remote.rank_batch([f"q{k}"], [["a", "bb", f"c{k}"]])[0].scores

    threads = [threading.Thread(target=impatient)] + [threading.Thread(target=patient, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for k in range(6):
        assert close(results[k], tiny_rm.rank_batch([f"q{k}"], [["a", "bb", f"c{k}"]])[0].scores)
    assert close(remote.compare(["q"], ["a"], ["b"]), tiny_rm.compare(["q"], ["a"], ["b"]))


def test_cli_serve_subprocess(tiny_hf_dir, tiny_rm):
    """`python -m pairrm_hf.cli serve` binds 127.0.0.1 by default and answers an OpenRLHF-style request."""
    env = {**os.environ, "PAIRRM_API_KEY": "k"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pairrm_hf.cli", "serve", "--model", str(tiny_hf_dir), "--port", "0", "--device", "cpu"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        url = None
        deadline = time.time() + 120
        while url is None and time.time() < deadline:
            line = proc.stdout.readline()
            match = re.search(r"Uvicorn running on (http://[\d.]+:\d+)", line)
            if match:
                url = match.group(1)
            assert line or proc.poll() is None, "server exited"
        assert url is not None and url.startswith("http://127.0.0.1:")
        body = {"query": ["qa", "qb"], "prompts": ["q", "q"], "labels": [None, None]}
        assert httpx.post(f"{url}/get_reward", json=body).status_code == 401
        r = httpx.post(f"{url}/get_reward", json=body, headers={"Authorization": "Bearer k"}, timeout=60).json()
        c = tiny_rm.comparison_matrices(["q"], [["a", "b"]])[0]
        assert close(r["rewards"], [c[0, 1] - c[1, 0], c[1, 0] - c[0, 1]])
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.slow
def test_example_runs(tiny_hf_dir):
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, "examples/serve_rewards.py", "--model", str(tiny_hf_dir), "--device", "cpu"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "OpenRLHF /get_reward" in done.stdout and done.stdout.count("rank ") == 3
