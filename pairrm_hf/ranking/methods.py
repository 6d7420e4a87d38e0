"""The one registry of ranking methods.

A ranking method turns a batch of encoded inputs into one score per candidate, asking the engine for the logits
it needs. Each :class:`RankingMethod` holds its name, the function that runs it (one signature for all:
``run(batch: RankingBatch) -> list[MethodResult]``), its cost (ordered pairs for ``n`` candidates) and a one-line
description. :meth:`PairRM.rank_batch <pairrm_hf.PairRM.rank_batch>`, ``best_of_n``, the ``pairwise-ranking``
pipeline, the ``pairrm`` command (its ``--aggregation`` choices and its progress total), the server's ``/rank``,
``selection_tradeoff`` and the docs all read :data:`RANKING_METHODS`, so a method added with
:func:`register_ranking_method` works through every one of them.

============  ==========================  ==========================================================
method        ordered pairs for n         scores
============  ==========================  ==========================================================
max_logits    n(n−1)                      mean symmetric logit against the others (upstream ``rank``)
max_wins      n(n−1)                      share of the ordered comparisons won
bubble        2(n−1)                      comparisons won in one seeded bubble pass (winner first)
reference     2n                          symmetric logit against the longest candidate
sort          ≤ 98 (n = 16), ≤ 642 (64)   n − position after a merge sort on symmetric logits
knockout      60 (n = 16), 282 (n = 64)   n − position after a knockout and a round robin of finalists
============  ==========================  ==========================================================

The cost is exact for every method but ``sort``, whose cost is its worst case; ``sort`` credits the comparisons it
did not need to the engine's progress, so a progress total taken from the cost is exact for all of them. Costs
count a pairwise model's ordered pairs; a pointwise or dual model ranks ``max_logits``/``max_wins`` by its own
scores (n rows, or 1 + n encodings).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from .aggregation import competition_ranks, partial_scores, scores_from_matrix
from .engine import EncodedExample, PairwiseEngine
from .schedules import (
    bubble_pass,
    bubble_wins,
    knockout_comparisons,
    knockout_rank,
    merge_sort_budget,
    merge_sort_rank,
)

__all__ = [
    "MethodResult",
    "RANKING_METHODS",
    "RankingBatch",
    "RankingMethod",
    "full_matrices",
    "get_ranking_method",
    "own_scores",
    "register_ranking_method",
    "unregister_ranking_method",
]


@dataclass(frozen=True)
class RankingBatch:
    """What a ranking method gets: the engine, the encoded inputs, their candidate texts and the seed.

    Attributes:
        engine: ask it for logits (``batch.pair_logits`` is a shortcut); never change it.
        examples: one :class:`~pairrm_hf.ranking.engine.EncodedExample` per input.
        texts: each input's candidate texts (as PairRM sees them), in input order.
        seed: the caller's seed, for methods with a random element (``bubble``).
    """

    engine: PairwiseEngine
    examples: Sequence[EncodedExample]
    texts: Sequence[Sequence[str]]
    seed: int = 0

    @property
    def sizes(self) -> list[int]:
        """Candidates per input."""
        return [len(t) for t in self.texts]

    def pair_logits(self, pairs: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
        """``C[ex][i, j]`` for ordered pairs ``(ex, i, j)`` of this batch, all in one engine call."""
        return self.engine.pair_logits(self.examples, pairs)


@dataclass
class MethodResult:
    """One input's outcome of a ranking method.

    Attributes:
        scores: float32 ``[n]``, higher is better.
        comparisons: what the input cost the model (ordered pairs, or rows for a model scoring candidates alone).
        matrix: float32 ``[n, n]`` logits when the method computed every ordered pair, else None.
        ranks: int32 ``[n]``, 1 = best; competition ranks of ``scores`` when not given.
    """

    scores: np.ndarray
    comparisons: int
    matrix: np.ndarray | None = None
    ranks: np.ndarray | None = None

    def __post_init__(self):
        self.scores = np.asarray(self.scores, dtype=np.float32)
        self.ranks = competition_ranks(self.scores) if self.ranks is None else np.asarray(self.ranks, dtype=np.int32)


#: ``matrix_scores(matrix, pairs)``: scores from a comparison matrix using only the unordered ``pairs`` (all when None).
MatrixScores = Callable[[np.ndarray, Sequence[tuple[int, int]] | None], np.ndarray]


@dataclass(frozen=True)
class RankingMethod:
    """One entry of :data:`RANKING_METHODS`.

    Attributes:
        name: what callers pass as ``aggregation`` (``--aggregation`` on the command line).
        run: ``run(batch: RankingBatch) -> list[MethodResult]``, one result per input, in order.
        cost: ordered pairs the method scores for ``n`` candidates with a pairwise model (exact, or the worst case
            for a method that credits what it skips, see :meth:`PairwiseEngine.credit_progress`).
        description: one line for ``--help`` and the docs.
        matrix_scores: for methods that aggregate the full comparison matrix: scores from that matrix, from only
            the given unordered pairs when ``pairs`` is not None (``selection_tradeoff`` sweeps their budget).
    """

    name: str
    run: Callable[[RankingBatch], list[MethodResult]]
    cost: Callable[[int], int]
    description: str
    matrix_scores: MatrixScores | None = None


_REGISTRY: dict[str, RankingMethod] = {}
#: Every ranking method by name, read-only (add one with :func:`register_ranking_method`).
RANKING_METHODS: Mapping[str, RankingMethod] = MappingProxyType(_REGISTRY)
_BUILT_IN: set[str] = set()


def register_ranking_method(
    name: str,
    run: Callable[[RankingBatch], list[MethodResult]],
    *,
    cost: Callable[[int], int],
    description: str,
    matrix_scores: MatrixScores | None = None,
    replace: bool = False,
) -> RankingMethod:
    """Add a ranking method to :data:`RANKING_METHODS` (see :class:`RankingMethod` for the fields).

    A name already taken is a ``ValueError`` unless ``replace=True``; built-in methods are never replaced.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name must be an identifier-like str (letters, digits, underscores), got {name!r}")
    if not callable(run) or not callable(cost):
        raise TypeError("run and cost must be callables: run(batch) -> list[MethodResult], cost(n) -> int")
    if not isinstance(description, str) or not description.strip():
        raise ValueError("description must be a non-empty str (one line for --help and the docs)")
    if name in _BUILT_IN:
        raise ValueError(f"{name!r} is a built-in ranking method and cannot be replaced; pick another name")
    if name in _REGISTRY and not replace:
        raise ValueError(f"ranking method {name!r} is already registered; pass replace=True to replace it")
    method = RankingMethod(name, run, cost, description.strip(), matrix_scores)
    _REGISTRY[name] = method
    return method


def unregister_ranking_method(name: str) -> None:
    """Remove a method added with :func:`register_ranking_method` (built-in methods stay)."""
    if name in _BUILT_IN:
        raise ValueError(f"{name!r} is a built-in ranking method and cannot be removed")
    if name not in _REGISTRY:
        raise KeyError(f"no ranking method {name!r}; registered: {tuple(_REGISTRY)}")
    del _REGISTRY[name]


def get_ranking_method(name: str, argument: str = "aggregation") -> RankingMethod:
    """The registered method ``name``; a ``ValueError`` naming ``argument`` and the choices otherwise."""
    method = _REGISTRY.get(name) if isinstance(name, str) else None
    if method is None:
        raise ValueError(f"{argument} must be one of {tuple(_REGISTRY)}, got {name!r}")
    return method


# ------------------------------------------------------------------------------------------------ shared steps
def full_matrices(engine: PairwiseEngine, examples: Sequence[EncodedExample], sizes: Sequence[int]) -> list[np.ndarray]:
    """For each input, the float32 ``[n, n]`` matrix ``C[i, j]`` over all ordered pairs (diagonal 0), one engine call."""
    pairs = [(ex, i, j) for ex, n in enumerate(sizes) for i in range(n) for j in range(n) if i != j]
    logits = engine.pair_logits(examples, pairs)
    matrices = [np.zeros((n, n), dtype=np.float32) for n in sizes]
    for (ex, i, j), value in zip(pairs, logits):
        matrices[ex][i, j] = value
    return matrices


def own_scores(engine: PairwiseEngine, examples: Sequence[EncodedExample], sizes: Sequence[int]) -> list[np.ndarray]:
    """Per input, the float32 ``[n]`` scores of a pointwise or dual model (one engine call)."""
    items = [(ex, i) for ex, n in enumerate(sizes) for i in range(n)]
    flat = engine.point_scores(examples, items)
    return list(np.split(flat, np.cumsum(sizes)[:-1])) if sizes else []


def _own_score_cost(style: str, n: int) -> int:
    return n + 1 if style == "dual" else n


# ------------------------------------------------------------------------------------------------ built-ins
def _matrix_method(aggregation: str) -> tuple[Callable[[RankingBatch], list[MethodResult]], MatrixScores]:
    def matrix_scores(matrix: np.ndarray, pairs: Sequence[tuple[int, int]] | None = None) -> np.ndarray:
        if pairs is None:
            return scores_from_matrix(matrix, aggregation)
        return partial_scores(matrix, pairs, aggregation)

    def run(batch: RankingBatch) -> list[MethodResult]:
        engine, sizes = batch.engine, batch.sizes
        if engine.ranking_style != "pairwise":
            # A model that scores candidates on its own ranks by those scores (same order as the mean difference).
            return [
                MethodResult(s, _own_score_cost(engine.ranking_style, len(s)), s[:, None] - s[None, :])
                for s in own_scores(engine, batch.examples, sizes)
            ]
        return [
            MethodResult(scores_from_matrix(m, aggregation), n * (n - 1), m)
            for m, n in zip(full_matrices(engine, batch.examples, sizes), sizes)
        ]

    return run, matrix_scores


def _run_bubble(batch: RankingBatch) -> list[MethodResult]:
    winners, logs = bubble_pass(batch.engine, batch.examples, batch.sizes, batch.seed)
    results = []
    for n, w, log in zip(batch.sizes, winners, logs):
        wins = bubble_wins(n, log)
        wins[w] += 0.5  # the pass's winner ranks first even when another candidate won as often
        results.append(MethodResult(wins, 2 * (n - 1)))
    return results


def _run_reference(batch: RankingBatch) -> list[MethodResult]:
    # The reference is the longest candidate (first in input order among equals, upstream's rule); its own
    # reward is exactly 0 (both orders are one row).
    refs = [max(range(len(t)), key=lambda i, t=t: len(t[i])) for t in batch.texts]
    pairs = [p for ex, (n, r) in enumerate(zip(batch.sizes, refs)) for i in range(n) for p in ((ex, i, r), (ex, r, i))]
    logits = batch.pair_logits(pairs).reshape(-1, 2).astype(np.float64)
    rewards = np.split(logits[:, 0] - logits[:, 1], np.cumsum(batch.sizes)[:-1]) if pairs else []
    return [MethodResult(r.astype(np.float32), 2 * len(r)) for r in rewards]


def _run_order(schedule) -> Callable[[RankingBatch], list[MethodResult]]:
    def run(batch: RankingBatch) -> list[MethodResult]:
        results = schedule(batch.engine, batch.examples, batch.sizes)
        return [MethodResult(r.scores, r.comparisons, None, r.ranks) for r in results]

    return run


def _register_built_ins() -> None:
    for name, description in (
        ("max_logits", "all n(n−1) ordered pairs; score = mean symmetric logit (upstream rank)"),
        ("max_wins", "all n(n−1) ordered pairs; score = share of the comparisons won"),
    ):
        run, matrix_scores = _matrix_method(name)
        register_ranking_method(
            name, run, cost=lambda n: n * (n - 1), description=description, matrix_scores=matrix_scores
        )
    register_ranking_method(
        "bubble",
        _run_bubble,
        cost=lambda n: 2 * max(n - 1, 0),
        description="2(n−1) pairs: one seeded bubble pass; the winner first, the rest by comparisons won",
    )
    register_ranking_method(
        "reference",
        _run_reference,
        cost=lambda n: 2 * n,
        description="2n pairs: score = symmetric logit against the longest candidate",
    )
    register_ranking_method(
        "sort",
        _run_order(merge_sort_rank),
        cost=merge_sort_budget,
        description="at most merge_sort_budget(n) pairs: merge sort on symmetric logits; score = n − position",
    )
    register_ranking_method(
        "knockout",
        _run_order(knockout_rank),
        cost=knockout_comparisons,
        description="knockout_comparisons(n) pairs: knockout to n/8 finalists, then a round robin; score = n − position",
    )
    _BUILT_IN.update(_REGISTRY)


_register_built_ins()
