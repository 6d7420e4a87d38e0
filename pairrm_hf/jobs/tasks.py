"""Row-level tasks of the ``pairrm`` command: check one row, then run a list of checked rows through :class:`PairRM`.

A task turns input rows (dicts) into new columns: ``rank`` adds ``pairrm_scores``/``pairrm_ranks``, ``compare``
adds ``pairrm_logit``/``pairrm_prob_a``, ``score`` adds ``pairrm_rewards``, and ``label`` turns each row into
preference pairs (``chosen``/``rejected`` + scores). Checking is separate from computing so that a whole input
can be validated before any forward pass. Values become PairRM texts by the one input rule (:mod:`pairrm_hf.ranking.inputs`,
switch ``input_format``): prompts are str or chat messages; candidates, the A/B columns and references are str or
chat messages (assistant turns, or whole conversations, which carry their own prompt: the prompt column is then
not read).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..ranking.inputs import INPUT_FORMATS, answer_texts, is_whole_conversation
from ..ranking.preferences import PAIR_STRATEGIES, preference_pairs
from ..ranking.rewards import win_probability

__all__ = ["TASKS", "LABEL_STRATEGIES", "OUTPUT_COLUMNS", "TaskSpec", "RowError", "prepare_row", "run_task"]

TASKS = ("rank", "compare", "score", "label")
#: The columns each task adds to a row; an input row may not hold them already (they would be overwritten).
OUTPUT_COLUMNS = {
    "rank": ("pairrm_scores", "pairrm_ranks"),
    "compare": ("pairrm_logit", "pairrm_prob_a"),
    "score": ("pairrm_rewards",),
    "label": (
        "chosen",
        "rejected",
        "chosen_index",
        "rejected_index",
        "score_chosen",
        "score_rejected",
        "rank_chosen",
        "rank_rejected",
    ),
}
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
    input_format: str = "auto"

    def __post_init__(self):
        from ..ranking.methods import RANKING_METHODS
        from ..ranking.ranker import COMPARE_MODES, REF_MODES

        for name, value, allowed in [
            ("task", self.task, TASKS),
            ("aggregation", self.aggregation, RANKING_METHODS),
            ("compare_mode", self.compare_mode, COMPARE_MODES),
            ("ref_mode", self.ref_mode, REF_MODES),
            ("strategy", self.strategy, LABEL_STRATEGIES),
            ("input_format", self.input_format, INPUT_FORMATS),
        ]:
            if value not in allowed:  # RANKING_METHODS is read now: methods registered after import count
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


def _get(row: Mapping, column: str) -> Any:
    if column not in row:
        raise RowError(column, f"missing column (row has {sorted(row)})")
    value = row[column]
    if value is None:
        raise RowError(column, "is null; expected a value")
    return _plain(value)


def _text(row: Mapping, column: str) -> str:
    value = _get(row, column)
    if not isinstance(value, str):
        raise RowError(column, f"expected a str, got {type(value).__name__}")
    return value


def _prompt(row: Mapping, spec: TaskSpec, answers: list) -> tuple[Any, str | None]:
    """``(prompt, instruction)`` for these answers; whole conversations carry their own prompt (column not read)."""
    if answers and all(is_whole_conversation(a) for a in answers):
        return None, None
    prompt = _get(row, spec.prompt_column)
    instruction = _text(row, spec.instruction_column) if spec.instruction_column is not None else None
    return prompt, instruction


def _texts(row: Mapping, spec: TaskSpec, answers: list, columns: list[str]) -> tuple[str, list[str]]:
    """The PairRM source and candidate texts of ``answers`` (named by ``columns``); all must share the source."""
    prompt, instruction = _prompt(row, spec, answers)
    source, texts = None, []
    for answer, column in zip(answers, columns):
        try:
            src, text = answer_texts(
                prompt,
                answer,
                instruction=instruction,
                input_format=spec.input_format,
                prompt_name=spec.prompt_column,
                answer_name=column,
            )
        except (TypeError, ValueError) as err:
            message = str(err)
            about_prompt = message.startswith((f"{spec.prompt_column} must", f"{spec.prompt_column}: "))
            field = spec.prompt_column if about_prompt else column
            if message.startswith((f"{field} must", f"{field}: ")):
                message = message[len(field) :].lstrip(": ")  # RowError names the field already
            raise RowError(field, message) from None
        if source is None:
            source = src
        elif src != source:
            raise RowError(
                column, f"must have the same user turns as {columns[0]} (all plain text or all conversations)"
            )
        texts.append(text)
    return source, texts


def prepare_row(row: Mapping, spec: TaskSpec) -> dict:
    """Check one input row for ``spec.task`` and return what the model needs; raises :class:`RowError`."""
    if not isinstance(row, Mapping):
        raise RowError("<row>", f"expected an object, got {type(row).__name__}")
    for column in OUTPUT_COLUMNS[spec.task]:
        if column in row:
            raise RowError(
                column,
                f"is a column that pairrm {spec.task} writes; the input's value would be overwritten "
                "(rename or drop that column)",
            )
    if spec.task == "compare":
        a = _get(row, spec.a_column)
        b = _get(row, spec.b_column)
        source, (text_a, text_b) = _texts(row, spec, [a, b], [spec.a_column, spec.b_column])
        return {"source": source, "a": text_a, "b": text_b}
    raw = _get(row, spec.candidates_column)
    if not isinstance(raw, list):
        raise RowError(spec.candidates_column, f"expected a list of candidates, got {type(raw).__name__}")
    if not raw:
        raise RowError(spec.candidates_column, "is an empty list; each row needs at least one candidate")
    answers, columns = list(raw), [f"{spec.candidates_column}[{k}]" for k in range(len(raw))]
    with_ref = spec.task == "score" and spec.reference_column is not None
    if with_ref:
        # the reference is rendered like one more answer to the same prompt
        answers.append(_get(row, spec.reference_column))
        columns.append(spec.reference_column)
    source, texts = _texts(row, spec, answers, columns)
    item = {"source": source, "candidates": texts[: len(raw)], "raw": raw}
    if with_ref:
        item["reference"] = texts[-1]
    if spec.task == "label" and len(raw) < 2:
        raise RowError(spec.candidates_column, f"has {len(raw)} candidate; labelling needs at least 2")
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
        prob = win_probability(logits)
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
        out.append(
            [
                {
                    "chosen": it["raw"][i],
                    "rejected": it["raw"][j],
                    "chosen_index": i,
                    "rejected_index": j,
                    "score_chosen": float(r.scores[i]),
                    "score_rejected": float(r.scores[j]),
                    "rank_chosen": int(r.ranks[i]),
                    "rank_rejected": int(r.ranks[j]),
                }
                for i, j in preference_pairs(r.scores, spec.strategy, rng=rng)
            ]
        )
    return out, pairs
