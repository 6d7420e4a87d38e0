"""``PairRMRemoteReward``: :class:`~pairrm_hf.trl.PairRMReward` computed by a ``pairrm serve`` server.

The reward code is :class:`PairRMReward`'s own (same modes, same text rules, same arithmetic); only the PairRM it
calls is :class:`~pairrm_hf.serve.client.RemotePairRM`, so a remote reward equals the in-process one.
"""

from __future__ import annotations

from collections.abc import Callable

from ..serve.client import RemotePairRM
from .rewards import PairRMReward

__all__ = ["PairRMRemoteReward"]


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
        timeout: seconds per HTTP request.

    Many trainer processes can share one server; the server batches their concurrent calls together.
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
        return f"PairRMRemoteReward({self.ranker.path!r}, mode={self.mode!r})"
