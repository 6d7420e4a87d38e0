"""Budgeted ranking schedules: fewer than the n(n−1) ordered pairs of a full ranking.

Each schedule asks :class:`~pairrm_hf.engine.PairwiseEngine` for logits in rounds; every round batches the
comparisons of all inputs at once, so length bucketing still fills batches when many inputs are ranked together.

============  ==========================  ==========================================================
schedule      ordered pairs per input     what it returns
============  ==========================  ==========================================================
bubble        2(n−1)                      the winner of one seeded pass (``PairRM._bubble``)
reference     2n                          symmetric logit of each candidate against one reference
sort          ≤ 2·n·⌈log2 n⌉              a full order from merge sort on symmetric logits
============  ==========================  ==========================================================

``benchmarks/bench_agreement.py`` measures how often each agrees with the full ``max_logits`` ranking.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .engine import EncodedExample, PairwiseEngine

__all__ = ["SortResult", "merge_sort_rank", "max_sort_comparisons", "kendall_tau"]


class SortResult:
    """The outcome of :func:`merge_sort_rank` for one input.

    Attributes:
        order: candidate indices, best first.
        ranks: int32 ``[n]``, 1 = best, all distinct (a sort breaks ties by input order).
        scores: float32 ``[n]``, ``n − position`` (higher is better); only the order carries information.
        comparisons: ordered pairs the model scored (two per symmetric comparison).
        symmetric: ``{(a, b): C[a,b] − C[b,a]}`` for every comparison made.
    """

    def __init__(self, order: list[int], comparisons: int, symmetric: dict[tuple[int, int], float]):
        n = len(order)
        self.order = list(order)
        self.ranks = np.empty(n, dtype=np.int32)
        self.ranks[self.order] = np.arange(1, n + 1, dtype=np.int32)
        self.scores = (n - self.ranks + 1).astype(np.float32)
        self.comparisons = comparisons
        self.symmetric = symmetric


def max_sort_comparisons(n: int) -> int:
    """Upper bound on the ordered pairs :func:`merge_sort_rank` scores for ``n`` candidates: ``2·n·⌈log2 n⌉``."""
    return 2 * n * math.ceil(math.log2(n)) if n > 1 else 0


class _Merge:
    """One in-progress merge of two sorted runs; advances one symmetric comparison at a time."""

    def __init__(self, left: list[int], right: list[int]):
        self.left, self.right, self.out = left, right, []
        self.i = self.j = 0

    def done(self) -> bool:
        return self.i >= len(self.left) or self.j >= len(self.right)

    def heads(self) -> tuple[int, int]:
        return self.left[self.i], self.right[self.j]

    def take(self, left_wins: bool) -> None:
        if left_wins:
            self.out.append(self.left[self.i])
            self.i += 1
        else:
            self.out.append(self.right[self.j])
            self.j += 1

    def result(self) -> list[int]:
        return self.out + self.left[self.i :] + self.right[self.j :]


def merge_sort_rank(engine: PairwiseEngine, examples: Sequence[EncodedExample], sizes: Sequence[int]) -> list[SortResult]:
    """Rank each input's candidates with a bottom-up merge sort on symmetric logits ``C[a,b] − C[b,a]``.

    ``a`` goes before ``b`` when the symmetric logit is ``> 0``; on an exact tie the earlier run (lower input
    index) keeps its place, so the sort is stable. When the model's preferences are transitive the order equals
    the one every pairwise comparison implies. Every step of every merge, across all inputs, is one engine call.
    """
    runs = [[[i] for i in range(n)] for n in sizes]
    counts = [0] * len(sizes)
    seen: list[dict[tuple[int, int], float]] = [{} for _ in sizes]
    while any(len(r) > 1 for r in runs):
        merges: list[tuple[int, _Merge]] = []
        carried: list[list[list[int]]] = []
        for ex, r in enumerate(runs):
            merges += [(ex, _Merge(r[k], r[k + 1])) for k in range(0, len(r) - 1, 2)]
            carried.append([r[-1]] if len(r) % 2 else [])
        while True:
            active = [(ex, m) for ex, m in merges if not m.done()]
            if not active:
                break
            pairs = []
            for ex, m in active:
                a, b = m.heads()
                pairs += [(ex, a, b), (ex, b, a)]
            logits = engine.pair_logits(examples, pairs).reshape(-1, 2)
            for (ex, m), (ab, ba) in zip(active, logits):
                a, b = m.heads()
                d = float(ab) - float(ba)
                seen[ex][(a, b)] = d
                counts[ex] += 2
                m.take(d >= 0)
        merged: list[list[list[int]]] = [[] for _ in sizes]
        for ex, m in merges:
            merged[ex].append(m.result())
        runs = [m + c if len(r) > 1 else r for m, c, r in zip(merged, carried, runs)]
    return [SortResult(r[0] if r else [], c, s) for r, c, s in zip(runs, counts, seen)]


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b between two score (or rank) vectors; 1 = same order, −1 = reversed, NaN when undefined."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"a and b must be 1-D of the same length, got shapes {x.shape} and {y.shape}")
    iu = np.triu_indices(len(x), k=1)
    dx = np.sign(x[:, None] - x[None, :])[iu]
    dy = np.sign(y[:, None] - y[None, :])[iu]
    denom = math.sqrt(float((dx != 0).sum()) * float((dy != 0).sum()))
    return float((dx * dy).sum() / denom) if denom else float("nan")
