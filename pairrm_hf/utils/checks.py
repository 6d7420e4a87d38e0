"""Argument checks shared by every public entry point: clear errors naming the argument and the index.

This is the one place for them: lists (:func:`check_list`, :func:`check_texts`, :func:`check_candidate_lists`,
:func:`check_same_length`), counts (:func:`check_int`, :func:`check_positive_int`, :func:`check_top_k`, and
:func:`positive_int_argument` for ``argparse``), positive numbers such as a temperature
(:func:`check_positive_number`) and durations on the command line (:func:`duration_argument`).
"""

from __future__ import annotations

import argparse
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "check_candidate_lists",
    "check_int",
    "check_list",
    "check_positive_int",
    "check_positive_number",
    "check_same_length",
    "check_texts",
    "check_top_k",
    "duration_argument",
    "positive_int_argument",
]


def _is_sequence(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def check_list(name: str, value: Any, what: str | None = None) -> list:
    """``value`` must be a list/tuple (not a str); returns it as a list. ``what`` describes the items in the error
    (``"of str"`` → ``"prompts must be a list (of str), got str"``)."""
    if not _is_sequence(value):
        items = f" ({what})" if what else ""
        raise TypeError(f"{name} must be a list{items}, got {type(value).__name__}")
    return list(value)


def check_int(name: str, value: Any, *, minimum: int = 1, allow_none: bool = False) -> int | None:
    """``value`` must be an int ``>= minimum`` (or ``None`` when ``allow_none``); a bool is refused (``True`` is not
    a count). ``ValueError`` naming the argument; returns ``value``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        kind = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{name} must be {kind}{' or None' if allow_none else ''}, got {value!r}")
    return int(value)


def check_positive_int(name: str, value: Any, *, allow_none: bool = False) -> int | None:
    """:func:`check_int` with ``minimum=1``: batch sizes, counts, chunk sizes."""
    return check_int(name, value, minimum=1, allow_none=allow_none)


def check_positive_number(name: str, value: Any) -> float:
    """``value`` must be a real number > 0 (a temperature, a scale; NaN and bools are refused); returns it as float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return float(value)


def positive_int_argument(value: str) -> int:
    """An ``argparse`` ``type=``: the command-line string as an int >= 1, else a usage error."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return number


def duration_argument(*, allow_zero: bool = False, unit: str = "seconds") -> Callable[[str], float]:
    """An ``argparse`` ``type=`` for a duration flag: the command-line string as a finite number ``> 0`` of ``unit``
    (``>= 0`` with ``allow_zero``), else a usage error.

    argparse puts the flag in front of the message, so a bad value reads
    ``argument --body-timeout: expected a number of seconds > 0, got '-1'``. Words, ``nan`` and ``inf`` are refused:
    a duration is a finite number. Use: ``parser.add_argument("--body-timeout", type=duration_argument())``;
    ``duration_argument(allow_zero=True, unit="milliseconds")`` for ``--max-wait-ms``.
    """
    expected = f"a number of {unit} {'>= 0' if allow_zero else '> 0'}"

    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value!r}")
        return number

    parse.__name__ = unit  # argparse names the type by it in its own messages
    return parse


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
    top_k = check_positive_int("top_k", top_k, allow_none=True)
    if count is not None and top_k > count:
        raise ValueError(f"top_k={top_k} but {candidates_name} has only {count} candidates")
    return top_k
