"""``PairRMRemoteReward``: :class:`~pairrm_hf.trl.PairRMReward` computed by a ``pairrm serve`` server.

The reward code is :class:`PairRMReward`'s own (same modes, same text rules, same arithmetic); only the PairRM it
calls is :class:`~pairrm_hf.serve.client.RemotePairRM`, so a remote reward equals the in-process one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from ..serve.client import RemotePairRM
from .rewards import PairRMReward

__all__ = ["AsyncPairRMRemoteReward", "PairRMRemoteReward"]


class _RemoteHandle:
    """What :class:`PairRMReward` reads as ``self.ranker``: ``.rm`` is the remote model (pickles as its URL)."""

    def __init__(self, rm: RemotePairRM):
        self.rm = rm
        self.path = rm.url
        self.loaded = True


class PairRMRemoteReward(PairRMReward):
    """A TRL reward function (``GRPOTrainer``/``RLOOTrainer`` ``reward_funcs=``) served by ``pairrm serve``.

    Args:
        url: the server, e.g. ``"http://127.0.0.1:8000"`` (default: ``$PAIRRM_URL``).
        mode: as for :class:`PairRMReward`.
        reference_column: as for :class:`PairRMReward`.
        baseline_column: as for :class:`PairRMReward`.
        baseline_fn: as for :class:`PairRMReward` (it runs here, in the trainer process).
        name: as for :class:`PairRMReward`.
        api_key: the server's bearer token (default: ``$PAIRRM_API_KEY``).
        timeout: seconds one reward call may take, retries included (see
            :class:`~pairrm_hf.serve.client.RemotePairRM`).

    Many trainer processes can share one server; the server batches their concurrent calls together.
    :meth:`as_async` gives the same reward as an ``async`` function, which TRL's ``GRPOTrainer`` awaits
    concurrently with its other async rewards.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        mode: str = "reference",
        reference_column: str = "reference",
        baseline_column: str = "baseline",
        baseline_fn: Callable[[list], list[str]] | None = None,
        name: str | None = None,
        api_key: str | None = None,
        timeout: float = 300.0,
    ):
        remote = RemotePairRM(url, api_key=api_key, timeout=timeout)
        # the parent only records the path here (its model loads lazily); the handle below replaces it
        super().__init__(
            remote.url,
            mode=mode,
            reference_column=reference_column,
            baseline_column=baseline_column,
            baseline_fn=baseline_fn,
            name=name,
        )
        self.ranker = _RemoteHandle(remote)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.ranker.path!r}, mode={self.mode!r})"

    def as_async(self) -> AsyncPairRMRemoteReward:
        """This reward as an ``async`` reward function (same server, mode, columns and name)."""
        twin = AsyncPairRMRemoteReward.__new__(AsyncPairRMRemoteReward)
        twin.__dict__.update(self.__dict__)
        return twin


class AsyncPairRMRemoteReward(PairRMRemoteReward):
    """:class:`PairRMRemoteReward` as an ``async`` TRL reward function (same arguments and rewards).

    TRL (``trl.trainer.utils.is_async_callable``) sees the ``async def __call__`` and runs this reward with its
    other async rewards under one ``asyncio.gather``, so the HTTP round trip to ``pairrm serve`` overlaps them. The
    request itself runs in a worker thread (the client is the standard library's blocking ``urllib``).
    """

    async def __call__(self, prompts: Sequence, completions: Sequence, **kwargs: Any) -> list[float]:  # type: ignore[override]
        """The rewards of :meth:`PairRMRemoteReward.__call__`, awaited without blocking the event loop."""
        return await asyncio.to_thread(PairRMRemoteReward.__call__, self, prompts, completions, **kwargs)
