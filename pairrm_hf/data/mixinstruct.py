"""Preference data for training and evaluating PairRM: TRL preference rows and MixInstruct-style candidate sets.

Two row formats are understood:

* **TRL preference rows** (``prompt``/``chosen``/``rejected``), standard (strings) or conversational (messages,
  implicit prompt included): they become PairRM texts by the one input rule,
  :func:`pairrm_hf.ranking.inputs.preference_texts`.
* **MixInstruct rows** (:class:`MixInstructExample`): an instruction, an input and candidates with metric scores.
  :func:`mixinstruct_to_pairs` draws preference pairs from them by the sign of the score difference.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..ranking.inputs import source_text
from ..utils.checks import check_positive_int

__all__ = [
    "METRIC_WEIGHTS",
    "Candidate",
    "MixInstructExample",
    "candidate_scores",
    "weighted_metrics",
    "weighted_score",
    "is_mixinstruct_row",
    "mixinstruct_to_pairs",
    "load_mixinstruct",
    "read_jsonl",
]

#: Upstream's metric scaling (``common/evaluation.py``): these metrics are multiplied by 0.01, all others by 1.
METRIC_WEIGHTS = {"bleu": 0.01, "bleu4": 0.01, "cider": 0.01, "spice": 0.01}


@dataclass
class Candidate:
    """One generated answer: its text, the generating model and decoding method, and metric scores (higher = better)."""

    text: str
    model: str = ""
    decoding_method: str = ""
    scores: dict[str, float] = field(default_factory=dict)


@dataclass
class MixInstructExample:
    """One MixInstruct item (``llm-blender/mix-instruct`` schema).

    ``source`` is ``instruction + input`` with no separator, as upstream fed PairRM. ``output`` is the reference
    answer (may be empty). Serialise with :meth:`to_dict`; parse with :meth:`from_dict`.
    """

    id: str
    instruction: str = ""
    input: str = ""
    output: str = ""
    candidates: list[Candidate] = field(default_factory=list)

    @property
    def source(self) -> str:
        """The PairRM source text."""
        return source_text(self.input, self.instruction)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict in the MixInstruct layout."""
        return asdict(self)

    @classmethod
    def from_dict(cls, row: Mapping[str, Any], index: int = 0) -> MixInstructExample:
        """Parse one row; ``index`` only names the row in error messages."""
        if not isinstance(row, Mapping):
            raise TypeError(f"row {index} must be a mapping, got {type(row).__name__}")
        if "candidates" not in row:
            raise ValueError(f"row {index} has no 'candidates' (MixInstruct rows need a list of candidates)")
        cands = []
        for k, c in enumerate(row["candidates"] or []):
            if isinstance(c, str):
                cands.append(Candidate(c))
                continue
            if not isinstance(c, Mapping) or not isinstance(c.get("text"), str):
                raise TypeError(f"row {index} candidates[{k}] must be a str or a mapping with a str 'text'")
            scores = {str(m): float(v) for m, v in (c.get("scores") or {}).items() if v is not None}
            cands.append(Candidate(c["text"], str(c.get("model") or ""), str(c.get("decoding_method") or ""), scores))
        return cls(
            id=str(row.get("id", index)),
            instruction=str(row.get("instruction") or ""),
            input=str(row.get("input") or ""),
            output=str(row.get("output") or ""),
            candidates=cands,
        )


def is_mixinstruct_row(row: Any) -> bool:
    """True for rows with a ``candidates`` list (MixInstruct layout) rather than chosen/rejected."""
    return isinstance(row, MixInstructExample) or (isinstance(row, Mapping) and "candidates" in row)


def weighted_metrics(scores: Mapping[str, float], metrics: Sequence[str] | None = None) -> list[float] | None:
    """``scores[m] · METRIC_WEIGHTS[m]`` (weight 1 for unlisted metrics) for each of ``metrics`` (default: every
    metric in ``scores``, in its order); ``None`` when one is missing or there are none."""
    names = list(scores) if metrics is None else list(metrics)
    if not names or any(m not in scores for m in names):
        return None
    return [float(scores[m]) * METRIC_WEIGHTS.get(m, 1.0) for m in names]


def weighted_score(scores: Mapping[str, float], metrics: Sequence[str] | None = None) -> float | None:
    """The sum of :func:`weighted_metrics` (upstream's single score of a candidate), or ``None`` like it."""
    values = weighted_metrics(scores, metrics)
    return None if values is None else sum(values)


def candidate_scores(example: MixInstructExample, metrics: Sequence[str] | None = None) -> list[float]:
    """:func:`weighted_score` of each candidate of ``example``; ``ValueError`` naming the example when one of them
    lacks a metric."""
    values = [weighted_score(c.scores, metrics) for c in example.candidates]
    if any(v is None for v in values):
        raise ValueError(f"example {example.id!r} has a candidate without the metric(s) {list(metrics or [])}")
    return values


def mixinstruct_to_pairs(
    rows: Iterable[MixInstructExample | Mapping[str, Any]],
    *,
    metrics: Sequence[str] | None = None,
    pairs_per_example: int = 5,
    seed: int = 42,
) -> list[dict[str, str]]:
    """Preference rows ``{"prompt", "chosen", "rejected"}`` drawn from candidate sets by metric scores.

    Per example, candidates with identical text are merged (upstream de-duplicated token rows), every unordered
    pair whose weighted score sum (:data:`METRIC_WEIGHTS`) differs is a candidate pair, and ``pairs_per_example``
    of them are drawn at random (upstream's ``all_pair`` sampling with ``min(num_pos, num_neg)`` = 5). Tied pairs
    are skipped: upstream's loss gives them a constant, gradient-free term. Candidates lacking one of ``metrics``
    are skipped. The better-scored answer is ``chosen``; the order within a row is irrelevant because the
    collator feeds both orders.
    """
    check_positive_int("pairs_per_example", pairs_per_example)
    rng = random.Random(seed)
    out: list[dict[str, str]] = []
    for index, row in enumerate(rows):
        ex = row if isinstance(row, MixInstructExample) else MixInstructExample.from_dict(row, index)
        scored: dict[str, float] = {}
        for cand in ex.candidates:
            score = weighted_score(cand.scores, metrics)
            if score is not None and cand.text not in scored:
                scored[cand.text] = score
        texts = list(scored)
        pairs = [(a, b) for i, a in enumerate(texts) for b in texts[i + 1 :] if scored[a] != scored[b]]
        rng.shuffle(pairs)
        for a, b in pairs[:pairs_per_example]:
            better, worse = (a, b) if scored[a] > scored[b] else (b, a)
            out.append({"prompt": ex.source, "chosen": better, "rejected": worse})
    return out


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Rows of a ``.jsonl`` file (one JSON object a line; a torn last line from an interrupted write is ignored)
    or a ``.json`` file holding a list."""
    path = os.fspath(path)
    with open(path, encoding="utf-8") as f:
        if path.endswith(".json"):
            data = json.load(f)
            if not isinstance(data, list):
                raise ValueError(f"{path!r} must hold a JSON list of rows")
            return data
        lines = f.read().split("\n")
    rows = []
    for k, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if k == len(lines) - 1:  # a crash mid-append leaves an unterminated last line
                break
            raise ValueError(f"{path!r} line {k + 1} is not valid JSON") from None
    return rows


def load_mixinstruct(
    path_or_id: str | os.PathLike = "llm-blender/mix-instruct", *, split: str = "validation", limit: int | None = None
) -> list[MixInstructExample]:
    """MixInstruct examples from local ``.jsonl``/``.json`` files (a file or a folder of them) or a Hub dataset.

    Hub datasets are read with ``datasets.load_dataset(path_or_id, split=split)``; ``limit`` keeps the first rows.
    """
    path = os.fspath(path_or_id)
    if os.path.isdir(path):
        files = sorted(f for f in os.listdir(path) if f.endswith((".jsonl", ".json")))
        if not files:
            raise ValueError(f"{path!r} holds no .jsonl or .json files")
        rows = [r for f in files for r in read_jsonl(os.path.join(path, f))]
    elif os.path.isfile(path):
        rows = read_jsonl(path)
    else:
        try:
            import datasets
        except ImportError as err:
            raise ImportError("loading from the Hub needs `datasets`: pip install 'pairrm-hf[train]'") from err
        rows = datasets.load_dataset(path, split=split)
    out = []
    for k, row in enumerate(rows):
        if limit is not None and k >= limit:
            break
        out.append(MixInstructExample.from_dict(row, k))
    return out
