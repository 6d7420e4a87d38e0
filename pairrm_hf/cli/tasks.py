"""Row-level tasks of the ``pairrm`` command: check one row, then run a list of checked rows through :class:`PairRM`.

A task turns input rows (dicts) into new columns: ``rank`` adds ``pairrm_scores``/``pairrm_ranks``, ``compare``
adds ``pairrm_logit``/``pairrm_prob_a``, ``score`` adds ``pairrm_rewards``, and ``label`` turns each row into
preference pairs (``chosen``/``rejected`` + scores). Checking is separate from computing so that a whole input
can be validated before any forward pass. Chat-message values (``[{"role", "content"}, …]``) are accepted for
candidates and for the A/B columns (see :mod:`pairrm_hf.conversation`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..inputs import conversation_texts
from ..preferences import PAIR_STRATEGIES, preference_pairs

__all__ = ["TASKS", "LABEL_STRATEGIES", "TaskSpec", "RowError", "prepare_row", "run_task"]

TASKS = ("rank", "compare", "score", "label")
#: How ``label`` picks (chosen, rejected) among a row's ranked candidates.
LABEL_STRATEGIES = PAIR_STRATEGIES


class RowError(ValueError):
    """A row that cannot be processed; ``field`` names the offending column."""

    def __init__(self, field: str, message: str):
        super().__init__(f"field {field!r}: {message}")
        self.field = field


@dataclass(frozen=True)
class TaskSpec:
    """What to compute and from which columns; every field may change results (it goes into the job manifest)."""

    task: str = "rank"
    prompt_column: str = "prompt"
    candidates_column: str = "candidates"
    a_column: str = "a"
    b_column: str = "b"
    reference_column: str | None = None
    instruction_column: str | None = None
    aggregation: str = "max_logits"
    compare_mode: str = "symmetric"
    ref_mode: str = "longest"
    strategy: str = "best_vs_worst"
    seed: int = 0

    def __post_init__(self):
        from ..ranker import COMPARE_MODES, REF_MODES
        from ..schedules import RANKING_METHODS

        for name, value, allowed in [
            ("task", self.task, TASKS), ("aggregation", self.aggregation, RANKING_METHODS),
            ("compare_mode", self.compare_mode, COMPARE_MODES), ("ref_mode", self.ref_mode, REF_MODES),
            ("strategy", self.strategy, LABEL_STRATEGIES),
        ]:  # fmt: skip
            if value not in allowed:
                raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}")

    def to_dict(self) -> dict:
        """A JSON-able copy (for manifests)."""
        return asdict(self)


def _plain(value: Any) -> Any:
    # Ray and pandas hand over numpy arrays where JSON would have lists.
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()] if value.dtype == object else value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(m, Mapping) for m in value)


def _get(row: Mapping, column: str) -> Any:
    if column not in row:
        raise RowError(column, f"missing column (row has {sorted(row)})")
    value = row[column]
    if value is None:
        raise RowError(column, "is null; expected a value")
    return _plain(value)


def _text(row: Mapping, column: str) -> str:
    value = _get(row, column)
    if _is_messages(value):
        # A prompt given as chat messages: a single user turn is its text.
        if (
            len(value) == 1
            and str(value[0].get("role", "")).lower() == "user"
            and isinstance(value[0].get("content"), str)
        ):
            return value[0]["content"]
        raise RowError(
            column, "as chat messages the prompt must be one user message; put whole conversations in the candidates"
        )
    if not isinstance(value, str):
        raise RowError(column, f"expected a str, got {type(value).__name__}")
    return value


def _answer(value: Any, column: str) -> tuple[str | None, str]:
    """``(source or None, candidate text)`` of one answer: a str, or a conversation (list of messages)."""
    if isinstance(value, str):
        return None, value
    if _is_messages(value):
        try:
            return conversation_texts(value, column)
        except (TypeError, ValueError) as err:
            raise RowError(column, str(err)) from None
    raise RowError(column, f"expected a str or a list of chat messages, got {type(value).__name__}")


def _source(row: Mapping, spec: TaskSpec, conv_source: str | None) -> str:
    if conv_source is not None:
        return conv_source  # the conversation carries its user turns and upstream's instruction
    prompt = _text(row, spec.prompt_column)
    if spec.instruction_column is not None:
        # Same concatenation as PairRM(..., instructions=...): upstream joined them with no separator.
        prompt = _text(row, spec.instruction_column) + prompt
    return prompt


def _candidates(row: Mapping, column: str) -> tuple[str | None, list[str], list[Any]]:
    value = _get(row, column)
    if not isinstance(value, list):
        raise RowError(column, f"expected a list of candidates, got {type(value).__name__}")
    if not value:
        raise RowError(column, "is an empty list; each row needs at least one candidate")
    sources, texts = set(), []
    for k, item in enumerate(value):
        src, text = _answer(item, f"{column}[{k}]")
        sources.add(src)
        texts.append(text)
    if len(sources) > 1:
        raise RowError(column, "mixes plain answers and conversations, or conversations with different user turns")
    return sources.pop(), texts, value


def prepare_row(row: Mapping, spec: TaskSpec) -> dict:
    """Check one input row for ``spec.task`` and return what the model needs; raises :class:`RowError`."""
    if not isinstance(row, Mapping):
        raise RowError("<row>", f"expected an object, got {type(row).__name__}")
    if spec.task == "compare":
        a_value, b_value = _get(row, spec.a_column), _get(row, spec.b_column)
        src_a, a = _answer(a_value, spec.a_column)
        src_b, b = _answer(b_value, spec.b_column)
        if src_a != src_b:
            raise RowError(
                spec.b_column,
                f"must have the same user turns as {spec.a_column!r} (both plain text or both conversations)",
            )
        return {"source": _source(row, spec, src_a), "a": a, "b": b}
    conv_source, texts, raw = _candidates(row, spec.candidates_column)
    item = {"source": _source(row, spec, conv_source), "candidates": texts, "raw": raw}
    if spec.task == "score" and spec.reference_column is not None:
        src_ref, ref = _answer(_get(row, spec.reference_column), spec.reference_column)
        if src_ref is not None and src_ref != item["source"]:
            raise RowError(spec.reference_column, "conversation has different user turns from the candidates")
        item["reference"] = ref
    if spec.task == "label" and len(texts) < 2:
        raise RowError(spec.candidates_column, f"has {len(texts)} candidate; labelling needs at least 2")
    return item


def run_task(rm, spec: TaskSpec, items: list[dict], indices: Sequence[int]) -> tuple[list[Any], int]:
    """Run prepared rows through ``rm`` (a :class:`PairRM`). Returns (one output per row, ordered pairs scored).

    Each output is a dict of new columns; for ``label`` it is a list of such dicts (one per pair).
    ``indices`` are the rows' positions in the input: ``best_vs_random`` seeds its choice with (seed, index), so
    labels do not depend on chunking or sharding.
    """
    if not items:
        return [], 0
    sources = [it["source"] for it in items]
    if spec.task == "compare":
        logits = rm.compare(sources, [it["a"] for it in items], [it["b"] for it in items], mode=spec.compare_mode)
        prob = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
        pairs = len(items) * (2 if spec.compare_mode == "symmetric" else 1)
        return [{"pairrm_logit": float(x), "pairrm_prob_a": float(np.float32(p))} for x, p in zip(logits, prob)], pairs
    cands = [it["candidates"] for it in items]
    if spec.task == "score":
        refs = [it["reference"] for it in items] if spec.reference_column is not None else None
        rewards = rm.rank_with_ref(sources, cands, ref_mode=spec.ref_mode, references=refs)
        return [{"pairrm_rewards": [float(x) for x in r]} for r in rewards], 2 * sum(map(len, cands))
    rankings = rm.rank_batch(sources, cands, aggregation=spec.aggregation, seed=spec.seed)
    pairs = sum(r.comparisons for r in rankings)
    if spec.task == "rank":
        return [
            {"pairrm_scores": [float(x) for x in r.scores], "pairrm_ranks": [int(x) for x in r.ranks]} for r in rankings
        ], pairs
    out = []
    for it, index, r in zip(items, indices, rankings):
        rng = np.random.default_rng([spec.seed, int(index)])
        out.append([
            {"chosen": it["raw"][i], "rejected": it["raw"][j], "chosen_index": i, "rejected_index": j,
             "score_chosen": float(r.scores[i]), "score_rejected": float(r.scores[j]),
             "rank_chosen": int(r.ranks[i]), "rank_rejected": int(r.ranks[j])}
            for i, j in preference_pairs(r.scores, spec.strategy, rng=rng)
        ])  # fmt: skip
    return out, pairs
