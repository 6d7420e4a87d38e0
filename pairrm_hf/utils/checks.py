"""Argument checks shared by every public entry point: clear errors naming the argument and the index."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["check_texts", "check_candidate_lists", "check_same_length", "check_top_k"]


def _is_sequence(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def check_texts(name: str, texts: Any, *, allow_empty: bool = False) -> list[str]:
    """``texts`` must be a list/tuple of str; returns it as a list."""
    if not _is_sequence(texts):
        raise TypeError(f"{name} must be a list of str, got {type(texts).__name__}")
    if not texts and not allow_empty:
        raise ValueError(f"{name} is empty: pass at least one item")
    for k, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{name}[{k}] must be a str, got {type(text).__name__}")
    return list(texts)


def check_candidate_lists(name: str, candidates: Any) -> list[list[str]]:
    """``candidates`` must be a list of non-empty lists of str."""
    if not _is_sequence(candidates):
        raise TypeError(f"{name} must be a list of lists of str, got {type(candidates).__name__}")
    if not candidates:
        raise ValueError(f"{name} is empty: pass one list of candidates per input")
    out = []
    for k, cands in enumerate(candidates):
        if not _is_sequence(cands):
            raise TypeError(f"{name}[{k}] must be a list of str, got {type(cands).__name__}")
        if not cands:
            raise ValueError(f"{name}[{k}] is empty: each input needs at least one candidate")
        for m, text in enumerate(cands):
            if not isinstance(text, str):
                raise TypeError(f"{name}[{k}][{m}] must be a str, got {type(text).__name__}")
        out.append(list(cands))
    return out


def check_same_length(reference_name: str, reference: Sequence, **others: Sequence | None) -> None:
    """Every non-None sequence in ``others`` must have ``len(reference)`` items."""
    for name, seq in others.items():
        if seq is not None and len(seq) != len(reference):
            raise ValueError(f"{name} has {len(seq)} items but {reference_name} has {len(reference)}; they must match")


def check_top_k(top_k: Any, count: int | None = None, *, candidates_name: str = "candidates") -> int | None:
    """The one ``top_k`` rule (``PairRM.rank``, the pipelines, fusion): ``None`` (keep all) or a positive int, never a
    bool (``True`` is not 1 here), and not more than the ``count`` candidates there are (``ValueError`` naming both)."""
    if top_k is None:
        return None
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
    if count is not None and top_k > count:
        raise ValueError(f"top_k={top_k} but {candidates_name} has only {count} candidates")
    return top_k
