"""`pairrm serve --group-size N`: per-sample reward requests meet by prompt and get the in-process group reward.

The client is OpenRLHF's own ``SingleTurnAgentExecutor._fetch_rewards_via_http`` from ``openrlhf/utils/agent.py``,
loaded by file path as OpenRLHF's tests load it (``pip install --no-deps openrlhf``; its logging helper stubbed).
Expected values are :func:`pairrm_hf.ranking.rewards.group_rewards` on the tiny model in this process.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import random
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from pairrm_hf import PairRM  # noqa: E402
from pairrm_hf.ranking.rewards import group_rewards  # noqa: E402
from pairrm_hf.serve.app import BackgroundServer, create_app  # noqa: E402
from pairrm_hf.serve.protocol import Limits  # noqa: E402
from pairrm_hf.serve.rendezvous import GroupRendezvous  # noqa: E402
from pairrm_hf.serve.service import PairRMService  # noqa: E402

TOL = 1e-5


@pytest.fixture(scope="module")
def service(tiny_hf_dir):
    # batch_size 4 (tiny_rm uses 8): served groups run in differently cut, merged batches
    svc = PairRMService(
        PairRM.from_pretrained(tiny_hf_dir, device="cpu", batch_size=4),
        max_wait_ms=20.0,
        limits=Limits(max_items=64, max_candidates=16, labels="ignore"),
    )
    yield svc
    svc.close()


def serve(service, group_size: int, timeout_s: float, lone: str = "zero") -> BackgroundServer:
    rendezvous = GroupRendezvous(group_size, timeout_s, lone=lone, limits=service.limits)
    return BackgroundServer(create_app(service, rendezvous=rendezvous))


@pytest.fixture(scope="module")
def agent():
    """OpenRLHF's ``openrlhf/utils/agent.py``, loaded the way its own tests/test_agent.py loads it."""
    pytest.importorskip("aiohttp")
    spec = importlib.util.find_spec("openrlhf")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("OpenRLHF is not installed (pip install --no-deps openrlhf)")
    path = Path(list(spec.submodule_search_locations)[0]) / "utils" / "agent.py"
    saved = sys.modules.get("openrlhf.utils.logging_utils")
    sys.modules["openrlhf.utils.logging_utils"] = SimpleNamespace(init_logger=logging.getLogger)
    try:
        module_spec = importlib.util.spec_from_file_location("_openrlhf_agent_under_test", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    finally:
        if saved is None:
            sys.modules.pop("openrlhf.utils.logging_utils", None)
        else:
            sys.modules["openrlhf.utils.logging_utils"] = saved
    return module


def metrics(url: str) -> dict:
    return httpx.get(f"{url}/metrics", timeout=30).json()["rendezvous"]


def fetch_all(agent, url: str, samples: list[tuple[str, str]], label: str | None = None) -> list[dict]:
    """Every (prompt, response) in its own OpenRLHF request, all concurrent, in the given order."""
    executor = agent.SingleTurnAgentExecutor(f"{url}/get_reward")

    async def run():
        calls = [executor._fetch_rewards_via_http([p + r], [p], [label]) for p, r in samples]
        return [out[0] for out in await asyncio.gather(*calls)]

    return asyncio.run(run())


def expected(rm, prompt: str, responses: list[str]) -> list[float]:
    return group_rewards(rm, [prompt] * len(responses), responses)


def test_openrlhf_per_sample_requests_get_group_rewards(service, agent, tiny_rm):
    prompts = [f"Question {q}: what is {q} + {q}? " for q in range(4)]
    responses = {p: [f"It is {2 * q + k % 3}." + " really" * k for k in range(8)] for q, p in enumerate(prompts)}
    samples = [(p, r) for p in prompts for r in responses[p]]
    random.Random(0).shuffle(samples)
    with serve(service, group_size=8, timeout_s=60.0) as server:
        answers = fetch_all(agent, server.url, samples)
        counters = metrics(server.url)
    got = {(p, r): a for (p, r), a in zip(samples, answers)}
    for p in prompts:
        want = expected(tiny_rm, p, responses[p])
        served = [got[(p, r)]["rewards"][0] for r in responses[p]]
        assert np.allclose(served, want, atol=TOL, rtol=0), p
        assert abs(sum(served)) < 1e-4  # group-relative rewards sum to 0
        assert all(got[(p, r)]["extra_logs"]["pairrm_group_size"] == [8] for r in responses[p])
    assert counters["groups_completed"] == 4 and counters["groups_timed_out"] == 0
    assert counters["group_sizes"] == {"8": 4} and counters["open_groups"] == 0


def test_empty_shard_answers_empty_rewards(service):
    with serve(service, group_size=4, timeout_s=5.0) as server:
        answer = httpx.post(f"{server.url}/get_reward", json={"query": [], "prompts": [], "labels": []}, timeout=30)
    assert answer.status_code == 200 and answer.json()["rewards"] == []
    # the plain server (no rendezvous) answers it the same way
    with BackgroundServer(create_app(service)) as server:
        answer = httpx.post(f"{server.url}/get_reward", json={"query": []}, timeout=30)
    assert answer.status_code == 200 and answer.json()["rewards"] == []


def test_stragglers_timeout_and_lone_sample(service, agent, tiny_rm):
    prompt, responses = "Name a colour. ", ["red", "a deep blue", "green, I think"]
    with serve(service, group_size=4, timeout_s=2.0) as server:
        start = time.perf_counter()
        answers = fetch_all(agent, server.url, [(prompt, r) for r in responses])
        waited = time.perf_counter() - start
        straggler = fetch_all(agent, server.url, [(prompt, "yellow")])[0]
        counters = metrics(server.url)
        prometheus = httpx.get(f"{server.url}/metrics?format=prometheus", timeout=30).text
    assert waited >= 2.0  # the group of 3 waited for its timeout, then was scored with what arrived
    assert np.allclose([a["rewards"][0] for a in answers], expected(tiny_rm, prompt, responses), atol=TOL, rtol=0)
    assert [a["extra_logs"]["pairrm_group_size"] for a in answers] == [[3]] * 3
    assert straggler["rewards"] == [0.0]  # alone in a new group after the first was scored: lone="zero"
    assert counters["groups_timed_out"] == 2 and counters["groups_completed"] == 0
    assert counters["group_sizes"] == {"1": 1, "3": 1} and counters["lone_samples"] == 1
    assert (
        "pairrm_rendezvous_groups_timed_out 2.0" in prometheus and 'pairrm_rendezvous_groups{size="3"} 1' in prometheus
    )


def test_lone_sample_error_and_label(service, tiny_rm):
    body = {"query": ["Say hi. hello"], "prompts": ["Say hi. "], "labels": ["hi there"]}
    with serve(service, group_size=2, timeout_s=0.2, lone="error") as server:
        answer = httpx.post(f"{server.url}/get_reward", json=body, timeout=30)
    assert answer.status_code == 408 and answer.json()["field"] == "query"
    with serve(service, group_size=2, timeout_s=0.2, lone="label") as server:
        answer = httpx.post(f"{server.url}/get_reward", json=body, timeout=30)
    want = tiny_rm.rank_with_ref(["Say hi. "], [["hello"]], references=["hi there"])[0][0]
    assert answer.status_code == 200 and abs(answer.json()["rewards"][0] - want) < TOL


def test_two_groups_of_one_prompt_fill_in_arrival_order(service, tiny_rm):
    prompt = "Count to three. "
    first, second = ["1 2 3", "one two three", "3 2 1", "1, 2, 3"], ["123", "one, two, three!", "1 2", "three"]
    with serve(service, group_size=4, timeout_s=60.0) as server:
        # one request with 2N samples of the prompt: the first N make one group, the next N another
        body = {"query": [prompt + r for r in first + second], "prompts": [prompt] * 8, "labels": [None] * 8}
        answer = httpx.post(f"{server.url}/get_reward", json=body, timeout=60).json()
        counters = metrics(server.url)
    want = expected(tiny_rm, prompt, first) + expected(tiny_rm, prompt, second)
    assert np.allclose(answer["rewards"], want, atol=TOL, rtol=0)
    assert answer["extra_logs"]["pairrm_group_size"] == [4] * 8
    assert counters["groups_completed"] == 2 and counters["group_sizes"] == {"4": 2}


def test_disconnected_client_leaves_its_group(service, tiny_rm):
    prompt, responses = "Pick a fruit. ", ["apple", "a ripe banana", "cherry, please"]
    with serve(service, group_size=3, timeout_s=60.0) as server:
        url = f"{server.url}/get_reward"
        with pytest.raises(httpx.ReadTimeout):  # this client gives up and drops its connection
            httpx.post(url, json={"query": [prompt + "durian"], "prompts": [prompt]}, timeout=0.3)
        deadline = time.time() + 20
        while metrics(server.url)["samples_left"] < 1 and time.time() < deadline:
            time.sleep(0.05)
        assert metrics(server.url)["waiting_samples"] == 0

        async def rest():
            async with httpx.AsyncClient(timeout=60) as client:
                calls = [client.post(url, json={"query": [prompt + r], "prompts": [prompt]}) for r in responses]
                return [r.json()["rewards"][0] for r in await asyncio.gather(*calls)]

        served = asyncio.run(rest())
        counters = metrics(server.url)
    # the group is the three samples whose clients stayed: the dropped one is not part of anyone's reward
    assert np.allclose(served, expected(tiny_rm, prompt, responses), atol=TOL, rtol=0)
    assert counters["groups_completed"] == 1 and counters["group_sizes"] == {"3": 1}


@pytest.mark.slow
def test_randomized_per_sample_runs_match_in_process(service, agent, tiny_rm):
    """100 randomized runs: group size, prompts, responses and arrival order vary; no reward may differ."""
    rng = random.Random(20)
    words = "the a answer is four red blue maybe yes no because of it two plus".split()
    differing, total = 0, 0
    with serve(service, group_size=4, timeout_s=60.0) as server:
        for run in range(100):
            prompts = [f"run {run} prompt {p}: {rng.choice(words)}? " for p in range(rng.randint(1, 3))]
            responses = {p: [" ".join(rng.choices(words, k=rng.randint(1, 12))) for _ in range(4)] for p in prompts}
            samples = [(p, r) for p in prompts for r in responses[p]]
            rng.shuffle(samples)
            answers = fetch_all(agent, server.url, samples)
            for p in prompts:
                want = expected(tiny_rm, p, responses[p])
                # duplicates within a group are possible; look each sample up by its position in the group
                for k, r in enumerate(responses[p]):
                    idx = next(i for i, s in enumerate(samples) if s == (p, r))
                    total += 1
                    differing += abs(answers[idx]["rewards"][0] - want[k]) > TOL
    assert total >= 400 and differing == 0
