"""Argument checks shared by every public entry point: clear errors naming the argument and the index."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["check_texts", "check_candidate_lists", "check_same_length"]


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
