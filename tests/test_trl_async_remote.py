"""``PairRMRemoteReward.as_async()``: an ``async`` TRL reward that GRPOTrainer awaits alongside its other rewards."""

from __future__ import annotations

import asyncio
import pickle
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from pairrm_hf import PairRM  # noqa: E402
from pairrm_hf.serve.app import BackgroundServer, create_app  # noqa: E402
from pairrm_hf.serve.service import PairRMService  # noqa: E402
from pairrm_hf.trl import AsyncPairRMRemoteReward, PairRMRemoteReward, PairRMReward  # noqa: E402

PROMPTS = ["What is the capital of France?", "Write a poem about the sea."]


@pytest.fixture(scope="module")
def server(tiny_hf_dir):
    service = PairRMService(PairRM.from_pretrained(tiny_hf_dir, device="cpu", batch_size=4), max_wait_ms=20.0)
    with BackgroundServer(create_app(service)) as srv:
        yield srv
    service.close()


def test_as_async_is_an_async_callable_with_the_same_rewards(server, tiny_rm):
    from trl.trainer.utils import get_callable_name, is_async_callable

    sync = PairRMRemoteReward(server.url, mode="group", name="pairrm_remote")
    reward = sync.as_async()
    assert isinstance(reward, AsyncPairRMRemoteReward) and is_async_callable(reward) and not is_async_callable(sync)
    assert get_callable_name(reward) == "pairrm_remote" and reward.mode == "group"
    prompts, completions = ["q"] * 3 + ["r"] * 2, ["a", "bb", "a c", "x", "y z"]
    got = asyncio.run(reward(prompts=prompts, completions=completions))
    want = PairRMReward(tiny_rm, mode="group")(prompts, completions)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    assert is_async_callable(pickle.loads(pickle.dumps(reward)))


class RecordedAsync(AsyncPairRMRemoteReward):
    """The real async remote reward, keeping what TRL passed in, what it got back, and when it ran."""

    calls: list

    async def __call__(self, prompts, completions, **kwargs):
        start = time.perf_counter()
        out = await super().__call__(prompts, completions, **kwargs)
        self.calls.append((list(prompts), list(completions), out, start, time.perf_counter()))
        return out


@pytest.mark.slow
def test_grpo_step_awaits_the_remote_reward_concurrently(server, tiny_rm, tmp_path_factory, tmp_path):
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from pairrm_hf.testing import build_tiny_policy

    policy = build_tiny_policy(tmp_path_factory.mktemp("policy"))
    remote = RecordedAsync(server.url, mode="group", name="pairrm_remote")
    remote.calls = []
    other_runs = []

    async def length_reward(prompts, completions, **kwargs):
        start = time.perf_counter()
        await asyncio.sleep(0.2)
        other_runs.append((start, time.perf_counter()))
        return [float(len(c)) for c in completions]

    args = GRPOConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        report_to="none",
        activation_checkpointing=False,
        save_strategy="no",
        max_steps=1,
        logging_steps=1,
        learning_rate=1e-3,
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=8,
    )
    trainer = GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(policy),
        reward_funcs=[remote, length_reward],
        args=args,
        train_dataset=datasets.Dataset.from_dict({"prompt": PROMPTS * 2}),
        processing_class=AutoTokenizer.from_pretrained(policy),
    )
    trainer.train()
    prompts, completions, out, start, end = remote.calls[0]
    assert prompts[0] == prompts[1] and len(out) == len(completions)
    np.testing.assert_allclose(out, PairRMReward(tiny_rm, mode="group")(prompts, completions), atol=1e-5, rtol=0)
    other_start, other_end = other_runs[0]
    assert max(start, other_start) < min(end, other_end)  # both rewards were in flight at once
    assert any("rewards/pairrm_remote/mean" in h for h in trainer.state.log_history)
