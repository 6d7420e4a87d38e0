"""Shared piece of the TRL adapters: a lazily loaded, picklable PairRM handle (list checks: :mod:`pairrm_hf.utils.checks`).

Nothing here imports ``trl``: TRL's reward/judge contracts are plain duck-typed callables. TRL's prompts and
completions (standard or conversational) become PairRM texts by the one input rule, :mod:`pairrm_hf.ranking.inputs`.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from ..checkpoints.loading import DEFAULT_MODEL
from ..ranking.ranker import PairRM

__all__ = ["LazyPairRM", "default_device"]


def default_device() -> torch.device:
    """The current CUDA device when there is one, else CPU."""
    # The process's *current* CUDA device: under accelerate/torchrun each rank has already selected its own GPU,
    # so this puts the ranker next to that rank's policy without building an ``Accelerator``.
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


class LazyPairRM:
    """A PairRM that loads on first use and pickles as its path.

    Args:
        ranker: a local folder / Hub id, or an already loaded :class:`~pairrm_hf.PairRM`.
        device: where to load it; ``None`` = the current CUDA device when there is one, else CPU, decided at load.
        shared: load through :func:`pairrm_hf.ranking.ranker.shared_pairrm`, so every handle of this path and these
            settings in the process uses one model (``load_kwargs`` then limited to ``dtype``, ``batch_size``,
            ``backbone_config``).
        **load_kwargs: passed to :meth:`PairRM.from_pretrained` (``dtype``, ``batch_size``, ...).

    Pickling keeps the path and the load arguments and drops the model, which the unpickled copy reloads on first
    use (TRL's async GRPO runs rewards in a spawned process). A ``PairRM`` given as an object pickles as its
    ``model.name_or_path`` with ``batch_size`` kept and ``device`` reset to automatic.
    """

    def __init__(
        self,
        ranker: str | os.PathLike | PairRM | LazyPairRM = DEFAULT_MODEL,
        *,
        device: Any = None,
        shared: bool = False,
        **load_kwargs,
    ):
        self.shared = shared or getattr(ranker, "shared", False)
        if isinstance(ranker, LazyPairRM):
            self.path, self.device, self.load_kwargs, self._rm = (
                ranker.path,
                ranker.device,
                dict(ranker.load_kwargs),
                ranker._rm,
            )
            return
        if isinstance(ranker, PairRM):
            if device is not None or load_kwargs:
                raise ValueError(
                    "device/load arguments only apply when ranker is a path; this PairRM is already loaded"
                )
            self._rm = ranker
            self.path = str(getattr(ranker.engine.model, "name_or_path", "") or "") or None
            self.device = None
            self.load_kwargs = {"batch_size": ranker.engine.batch_size}
            return
        if not isinstance(ranker, (str, os.PathLike)):
            raise TypeError(f"ranker must be a model path/id or a pairrm_hf.PairRM, got {type(ranker).__name__}")
        self._rm = None
        self.path = os.fspath(ranker)
        self.device = device
        self.load_kwargs = load_kwargs

    @property
    def rm(self) -> PairRM:
        """The loaded :class:`PairRM` (loads it on first access)."""
        if self._rm is None:
            device = self.device if self.device is not None else default_device()
            if getattr(self, "shared", False):
                from ..ranking.ranker import shared_pairrm

                self._rm = shared_pairrm(self.path, device=str(device), **self.load_kwargs)
            else:
                self._rm = PairRM.from_pretrained(self.path, device=device, **self.load_kwargs)
        return self._rm

    @property
    def loaded(self) -> bool:
        """Whether the model is in memory."""
        return self._rm is not None

    def __getstate__(self) -> dict:
        if self.path is None:
            raise TypeError(
                "this PairRM reward/judge wraps a PairRM with no model path (model.name_or_path is empty), so it "
                "cannot be pickled; build it from a folder or Hub id instead"
            )
        state = dict(self.__dict__)
        state["_rm"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"LazyPairRM({self.path!r}, loaded={self.loaded})"
