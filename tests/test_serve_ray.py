"""The Ray Serve deployment: 2 local CPU replicas on loopback give the embedded server's results."""

from __future__ import annotations

import socket
import threading

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("ray.serve")
httpx = pytest.importorskip("httpx")

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_url(tiny_hf_dir):
    import ray
    from ray import serve

    from pairrm_hf.serve.ray_app import build_deployment

    port = _free_port()
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = build_deployment(
            str(tiny_hf_dir),
            replicas=2,
            model_kwargs={"device": "cpu", "batch_size": 4},
            limits={"max_candidates": 16},
            api_key="k",
        )
        serve.run(app, route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def test_ray_serve_two_replicas_equal_embedded(ray_url, tiny_rm):
    from pairrm_hf.serve.client import RemotePairRM

    headers = {"Authorization": "Bearer k"}
    assert httpx.post(f"{ray_url}/rank", json={"prompts": ["q"], "candidates": [["a"]]}).status_code == 401
    bad = httpx.post(f"{ray_url}/rank", json={"prompts": ["q"], "candidates": [["a"], ["b"]]}, headers=headers)
    assert bad.status_code == 422 and bad.json()["field"] == "candidates"
    remote = RemotePairRM(ray_url, api_key="k")
    results, n = {}, 16

    def client(k: int) -> None:
        prompts = [f"Question {k}?"]
        cands = [[f"answer {k}", "a longer answer " * (k % 3 + 1), "no"]]
        results[k] = (remote.rank_batch(prompts, cands)[0].scores, tiny_rm.rank_batch(prompts, cands)[0].scores)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for k in range(n):
        served, direct = results[k]
        assert np.allclose(served, direct, atol=1e-5, rtol=0), k
    reward = httpx.post(
        f"{ray_url}/get_reward",
        headers=headers,
        timeout=60,
        json={"query": ["qa", "qb"], "prompts": ["q", "q"], "labels": ["", ""]},
    ).json()
    c = tiny_rm.comparison_matrices(["q"], [["a", "b"]])[0]
    assert np.allclose(reward["rewards"], [c[0, 1] - c[1, 0], c[1, 0] - c[0, 1]], atol=1e-5)
    # two replicas behind Ray's proxy: /health answers from both processes
    # concurrent requests: with idle queues Ray's router may keep picking one replica for sequential calls
    from concurrent.futures import ThreadPoolExecutor

    pids: set = set()
    with ThreadPoolExecutor(8) as pool:
        for _ in range(5):
            pids |= set(pool.map(lambda _: httpx.get(f"{ray_url}/health", headers=headers).json()["pid"], range(40)))
            if len(pids) == 2:
                break
    assert len(pids) == 2
