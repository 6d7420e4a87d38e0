"""Shared pieces of the TRL adapters: a lazily loaded, picklable PairRM handle and TRL's text formats → PairRM texts.

Nothing here imports ``trl``: TRL's reward/judge contracts are plain duck-typed callables.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..inputs import conversation_texts
from ..loading import DEFAULT_MODEL
from ..ranker import PairRM

__all__ = ["LazyPairRM", "pair_texts", "candidate_text", "is_conversational"]


def _default_device() -> torch.device:
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
        shared: load through :func:`pairrm_hf.ranker.shared_pairrm`, so every handle of this path and these
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
            self.path = str(getattr(ranker.model, "name_or_path", "") or "") or None
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
            device = self.device if self.device is not None else _default_device()
            if getattr(self, "shared", False):
                from ..ranker import shared_pairrm

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


def is_conversational(value: Any) -> bool:
    """True for a list of ``{"role", "content"}`` messages (TRL's conversational format)."""
    return (
        isinstance(value, Sequence)
        and not isinstance(value, (str, bytes))
        and len(value) > 0
        and all(isinstance(m, Mapping) and "role" in m for m in value)
    )


def _content(name: str, message: Any) -> str:
    if not isinstance(message, Mapping) or "content" not in message:
        raise TypeError(f"{name} must be a mapping with 'role' and 'content'")
    content = message["content"]
    if not isinstance(content, str):
        raise TypeError(
            f"{name}['content'] must be a str, got {type(content).__name__} (multimodal content is not supported)"
        )
    return content


def candidate_text(name: str, completion: Any) -> str:
    """A completion as PairRM's candidate text: a str as is; messages → their contents joined by newlines."""
    if isinstance(completion, str):
        return completion
    if is_conversational(completion):
        return "\n".join(_content(f"{name}[{k}]", m) for k, m in enumerate(completion))
    raise TypeError(
        f"{name} must be a str or a list of {{'role', 'content'}} messages, got {type(completion).__name__}"
    )


def pair_texts(name: str, prompt: Any, completion: Any) -> tuple[str, str]:
    """``(source, candidate)`` PairRM texts of one TRL prompt/completion, standard or conversational.

    * Standard: the prompt and the completion as they are.
    * Conversational, one user turn (optionally after system messages): the user message is the source and the
      completion's content the candidate, so a conversational dataset scores exactly like its standard twin.
    * Conversational, several turns: the whole conversation (prompt + completion) through
      :func:`pairrm_hf.conversation.conversation_texts` (upstream's multi-turn template).
    * System messages are prepended to the source, newline separated (PairRM has no system slot).
    """
    if isinstance(prompt, str):
        return prompt, candidate_text(f"completions[{name}]", completion)
    if not is_conversational(prompt):
        raise TypeError(
            f"prompts[{name}] must be a str or a list of {{'role', 'content'}} messages, got {type(prompt).__name__}"
        )
    cand = candidate_text(f"completions[{name}]", completion)
    system = [_content(f"prompts[{name}][{k}]", m) for k, m in enumerate(prompt) if str(m["role"]).lower() == "system"]
    turns = [m for m in prompt if str(m["role"]).lower() != "system"]
    if len(turns) == 1 and str(turns[0]["role"]).lower() == "user":
        source = _content(f"prompts[{name}]", turns[0])
    else:
        conversation = [*turns, {"role": "assistant", "content": cand}]
        source, cand = conversation_texts(conversation, f"prompts[{name}] + completion")
    if system:
        source = "\n".join(system) + "\n" + source
    return source, cand


def check_list(name: str, value: Any) -> list:
    """``value`` must be a list/tuple; returns it as a list."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a list, got {type(value).__name__}")
    return list(value)
