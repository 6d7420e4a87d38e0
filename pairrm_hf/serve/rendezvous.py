"""Group rendezvous for per-sample reward requests (``pairrm serve --group-size N``).

PairRM's RL reward is group-relative: a response's reward is its mean symmetric logit against the other responses
to the same prompt (:func:`~pairrm_hf.ranking.rewards.group_rewards`, ``PairRMReward(mode="group")``). OpenRLHF's
agent executor and verl's reward loop ask for each sample's reward in its own request, so a request alone holds one
response and would get 0. The rendezvous holds such samples, keyed by prompt, until ``group_size`` of them have
arrived (or ``timeout_s`` has passed since the first), scores the group with one ``/get_reward`` call on the engine,
and answers every waiting request with its own sample's reward.

The rules (also in ``docs/guides/rl-at-scale.md``):

* **Which samples wait:** those ``/get_reward`` would score group-relative (no label, or the server ignores
  labels). Samples scored against their label are answered at once, as without a rendezvous.
* **Arrival order:** a group takes the first ``group_size`` samples of its prompt; the next sample of the same
  prompt opens a new group. A request that carries several samples of one prompt puts them in, in order, so a
  request with ``group_size`` samples fills a group by itself and 2N samples of one prompt make two groups.
* **Timeout:** ``timeout_s`` after a group's first sample it is scored with what arrived if that is 2 or more
  samples (the rewards are those of the smaller group). A lone sample gets what ``lone`` says: ``"zero"`` (0.0,
  the reward ``PairRMReward(mode="group")`` gives a lone candidate), ``"error"`` (HTTP 408 naming ``query``), or
  ``"label"`` (``s(response, label)`` against its non-empty label, as ``/score`` with ``references``; 0.0 without
  one).
* **Disconnects:** a sample whose client goes away while its group is still open leaves the group (it is neither
  counted nor scored; a retried request joins again as a new sample). Once a group is being scored, a
  disconnected member's reward is computed with its group and dropped; its group-mates are unaffected.
* **Stragglers:** a sample arriving after its group was scored opens a new group of its prompt.

Groups, timeouts and sizes are counted in :meth:`GroupRendezvous.snapshot` (``/metrics`` → ``rendezvous``).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .batcher import RequestScope
from .protocol import Limits, RequestError, read_reward_request

__all__ = ["GroupRendezvous", "LONE_MODES"]

#: What a group that timed out with a single sample answers: see the module docstring.
LONE_MODES = ("zero", "error", "label")

#: ``execute(endpoint, payload, scope) -> response dict``: how a scored group reaches the engine.
Executor = Callable[[str, Any, RequestScope], Awaitable[dict]]


@dataclass
class _Sample:
    query: str
    prompt: str
    response: str
    label: str | None
    future: asyncio.Future
    group: _Group | None = None


@dataclass
class _Group:
    prompt: str
    execute: Executor
    members: list[_Sample] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


class GroupRendezvous:
    """Holds per-sample ``/get_reward`` samples by prompt and scores each group in one call (see the module docs).

    Args:
        group_size: samples per prompt to wait for (OpenRLHF's ``n_samples_per_prompt``); at least 2.
        timeout_s: how long a group waits after its first sample before it is scored with what arrived.
        lone: what a group that timed out with one sample answers: ``"zero"``, ``"error"`` or ``"label"``.
        limits: the server's request bounds (checks the request body; ``max_candidates`` bounds ``group_size``).

    All state lives on the event loop of the server that owns it: call :meth:`get_reward` from that loop only.
    """

    def __init__(self, group_size: int, timeout_s: float = 30.0, *, lone: str = "zero", limits: Limits | None = None):
        self.limits = limits or Limits()
        if not isinstance(group_size, int) or group_size < 2:
            raise ValueError(f"group_size must be an int >= 2, got {group_size!r}")
        if group_size > self.limits.max_candidates:
            raise ValueError(
                f"group_size {group_size} is over the server's max_candidates {self.limits.max_candidates}"
            )
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        if lone not in LONE_MODES:
            raise ValueError(f"lone must be one of {LONE_MODES}, got {lone!r}")
        self.group_size = group_size
        self.timeout_s = float(timeout_s)
        self.lone = lone
        self._open: dict[str, _Group] = {}
        self._tasks: set[asyncio.Task] = set()
        self.completed = 0
        self.timed_out = 0
        self.lone_samples = 0
        self.left = 0
        self.sizes: Counter[int] = Counter()

    # ------------------------------------------------------------------------------------------- requests
    async def get_reward(self, payload: Any, scope: RequestScope, execute: Executor) -> dict:
        """Answer one ``/get_reward`` request: labelled samples at once, the others when their groups are scored.

        The response has OpenRLHF's fields (``rewards``, ``scores``, ``extra_logs``); ``extra_logs`` adds
        ``pairrm_group_size``, the size of the group each sample was scored in (1 for labelled or lone samples).
        """
        request = read_reward_request(payload, self.limits)
        n = len(request.queries)
        if n == 0:
            return {"rewards": [], "scores": [], "extra_logs": {"pairrm_against_label": [], "pairrm_group_size": []}}
        rewards = [0.0] * n
        sizes = [1] * n
        labelled = [k for k in range(n) if request.use_label[k]]
        grouped = [k for k in range(n) if not request.use_label[k]]
        waiting: list[_Sample] = []
        loop = asyncio.get_running_loop()
        for k in grouped:
            label = request.labels[k] if request.labels is not None else None
            sample = _Sample(request.queries[k], request.sources[k], request.responses[k], label, loop.create_future())
            self._join(sample, execute)
            waiting.append(sample)
        try:
            if labelled:
                sub = {
                    "query": [request.queries[k] for k in labelled],
                    "prompts": [request.sources[k] for k in labelled],
                    "labels": [request.labels[k] for k in labelled],
                }
                answer = await execute("get_reward", sub, scope)
                for k, value in zip(labelled, answer["rewards"]):
                    rewards[k] = float(value)
            results = await asyncio.gather(*(sample.future for sample in waiting))
        except BaseException:
            for sample in waiting:  # a cancelled request leaves the groups that are still open
                self._leave(sample)
            raise
        for k, (value, size) in zip(grouped, results):
            rewards[k], sizes[k] = value, size
        return {
            "rewards": rewards,
            "scores": list(rewards),
            "extra_logs": {
                "pairrm_against_label": [1.0 if u else 0.0 for u in request.use_label],
                "pairrm_group_size": sizes,
            },
        }

    def _join(self, sample: _Sample, execute: Executor) -> None:
        group = self._open.get(sample.prompt)
        if group is None:
            # the group is scored through its first sample's executor (one per server; Ray: the model replicas)
            group = self._open[sample.prompt] = _Group(sample.prompt, execute)
            loop = asyncio.get_running_loop()
            group.timer = loop.call_later(self.timeout_s, self._expire, group)
        group.members.append(sample)
        sample.group = group
        if len(group.members) >= self.group_size:
            self._close(group)
            self.completed += 1
            self._start(group)

    def _leave(self, sample: _Sample) -> None:
        group = sample.group
        if group is None or self._open.get(group.prompt) is not group:
            return  # already being scored (or done): the group keeps its members
        before = len(group.members)
        group.members = [m for m in group.members if m is not sample]
        self.left += before - len(group.members)
        if not group.members:
            self._close(group)

    def _close(self, group: _Group) -> None:
        if self._open.get(group.prompt) is group:
            del self._open[group.prompt]
        if group.timer is not None:
            group.timer.cancel()

    def _expire(self, group: _Group) -> None:
        if self._open.get(group.prompt) is not group:
            return
        self._close(group)
        self.timed_out += 1
        self._start(group)

    def _start(self, group: _Group) -> None:
        self.sizes[len(group.members)] += 1
        task = asyncio.get_running_loop().create_task(self._score(group))
        self._tasks.add(task)  # keep a reference until it ends
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------------------------------- scoring
    async def _score(self, group: _Group) -> None:
        members = group.members
        execute = group.execute
        try:
            if len(members) >= 2:
                answer = await execute(
                    "get_reward",
                    {
                        "query": [m.query for m in members],
                        "prompts": [m.prompt for m in members],
                        "labels": [None] * len(members),
                    },
                    RequestScope(),  # the group's own: one member's disconnect does not cancel its group-mates
                )
                values = [float(v) for v in answer["rewards"]]
            else:
                self.lone_samples += 1
                values = [await self._lone_reward(members[0], execute)]
        except BaseException as err:  # noqa: BLE001 - every member's request gets the group's error
            for m in members:
                if not m.future.done():
                    m.future.set_exception(err)
            return
        for m, value in zip(members, values):
            if not m.future.done():
                m.future.set_result((value, len(members)))

    async def _lone_reward(self, sample: _Sample, execute: Executor) -> float:
        if self.lone == "error":
            raise RequestError(
                "query",
                f"no other sample of this prompt arrived within {self.timeout_s:g} s (group size {self.group_size}); "
                "a group-relative reward needs at least 2",
                408,
            )
        if self.lone == "label" and sample.label:
            payload = {"prompts": [sample.prompt], "candidates": [[sample.response]], "references": [sample.label]}
            answer = await execute("score", payload, RequestScope())
            return float(answer["rewards"][0][0])
        return 0.0

    # ------------------------------------------------------------------------------------------- metrics
    def snapshot(self) -> dict:
        """Counters for ``/metrics``: groups completed (full) and timed out, group sizes scored, open groups."""
        return {
            "group_size": self.group_size,
            "timeout_s": self.timeout_s,
            "groups_completed": self.completed,
            "groups_timed_out": self.timed_out,
            "group_sizes": {str(size): count for size, count in sorted(self.sizes.items())},
            "lone_samples": self.lone_samples,
            "samples_left": self.left,
            "open_groups": len(self._open),
            "waiting_samples": sum(len(g.members) for g in self._open.values()),
        }
