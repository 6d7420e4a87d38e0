"""Group rendezvous on Ray Serve: one ingress, 2 CPU model replicas; every prompt's samples are scored together."""

from __future__ import annotations

import asyncio
import random
import socket

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("ray.serve", reason="Ray Serve is not installed (pip install 'pairrm-hf[ray]')")
httpx = pytest.importorskip("httpx")

from pairrm_hf.ranking.rewards import group_rewards  # noqa: E402

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ingress_url(tiny_hf_dir):
    import ray
    from ray import serve

    from pairrm_hf.serve.ray_ingress import build_group_deployment

    port = _free_port()
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = build_group_deployment(
            str(tiny_hf_dir),
            replicas=2,
            group_size=8,
            group_timeout_s=120.0,
            limits={"max_candidates": 16},
            api_key="k",
            model_kwargs={"device": "cpu", "batch_size": 4},
        )
        serve.run(app, route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def test_ray_ingress_groups_samples_across_two_replicas(ingress_url, tiny_rm):
    headers = {"Authorization": "Bearer k"}
    assert httpx.post(f"{ingress_url}/get_reward", json={"query": ["x"]}, timeout=30).status_code == 401
    bad = httpx.post(f"{ingress_url}/get_reward", json={"query": ["x"], "prompts": 3}, headers=headers, timeout=30)
    assert bad.status_code == 422 and bad.json()["field"] == "prompts"
    empty = httpx.post(f"{ingress_url}/get_reward", json={"query": []}, headers=headers, timeout=30)
    assert empty.status_code == 200 and empty.json()["rewards"] == []

    prompts = [f"Prompt {q}: say something. " for q in range(4)]
    responses = {p: [f"reply {k} to {q}" + " more" * k for k in range(8)] for q, p in enumerate(prompts)}
    samples = [(p, r) for p in prompts for r in responses[p]]
    random.Random(1).shuffle(samples)

    async def run():
        async with httpx.AsyncClient(timeout=300, headers=headers) as client:
            calls = [
                client.post(f"{ingress_url}/get_reward", json={"query": [p + r], "prompts": [p], "labels": [None]})
                for p, r in samples
            ]
            return [r.json() for r in await asyncio.gather(*calls)]

    answers = asyncio.run(run())
    got = {s: a["rewards"][0] for s, a in zip(samples, answers)}
    for p in prompts:
        want = group_rewards(tiny_rm, [p] * 8, responses[p])
        assert np.allclose([got[(p, r)] for r in responses[p]], want, atol=1e-5, rtol=0), p
    assert all(a["extra_logs"]["pairrm_group_size"] == [8] for a in answers)
    counters = httpx.get(f"{ingress_url}/metrics", headers=headers, timeout=30).json()["rendezvous"]
    assert counters["groups_completed"] == 4 and counters["groups_timed_out"] == 0
    assert counters["group_sizes"] == {"8": 4}
    # /rank goes through the ingress to the model replicas too
    ranked = httpx.post(
        f"{ingress_url}/rank", json={"prompts": ["q"], "candidates": [["a", "bb"]]}, headers=headers, timeout=60
    ).json()
    assert np.allclose(ranked["rankings"][0]["scores"], tiny_rm.rank_batch(["q"], [["a", "bb"]])[0].scores, atol=1e-5)
