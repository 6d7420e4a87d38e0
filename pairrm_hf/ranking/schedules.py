"""Budgeted ranking schedules: fewer than the n(n−1) ordered pairs of a full ranking.

Each schedule asks :class:`~pairrm_hf.ranking.engine.PairwiseEngine` for logits in rounds; every round batches the
comparisons of all inputs at once, so length bucketing still fills batches when many inputs are ranked together.

============  ==========================  ==========================================================
schedule      ordered pairs per input     what it returns
============  ==========================  ==========================================================
bubble        2(n−1)                      the winner of one seeded pass (``PairRM._bubble``)
reference     2n                          symmetric logit of each candidate against one reference
sort          ≤ 2·n·⌈log2 n⌉              a full order from merge sort on symmetric logits
knockout      60 (n = 16), 282 (n = 64)   single elimination down to ``f`` finalists (4 for n = 16,
                                          8 for n = 64), then a round robin among them and the
                                          closest losers of the last round; its best wins
============  ==========================  ==========================================================

``benchmarks/bench_agreement.py`` measures how often each agrees with the full ``max_logits`` ranking of a random
model, ``benchmarks/bench_budget.py`` of a small trained one (see ``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ..utils.checks import check_int, check_positive_int
from .engine import EncodedExample, PairwiseEngine

__all__ = [
    "SortResult",
    "merge_sort_rank",
    "max_sort_comparisons",
    "merge_sort_budget",
    "bubble_pass",
    "bubble_wins",
    "knockout_rank",
    "knockout_comparisons",
    "knockout_finalists",
    "knockout_lucky_losers",
]


def bubble_pass(
    engine: PairwiseEngine, examples: Sequence[EncodedExample], sizes: Sequence[int], seed: int = 0, worst: bool = False
) -> tuple[list[int], list[list[tuple[int, int, bool]]]]:
    """One bubble pass per input; returns (winner index, comparison log ``[(cur, nxt, moved_on)]``) per input.

    Each input starts from ``torch.randperm(n)`` of a generator seeded with ``seed`` (the order the original got
    after ``torch.manual_seed(seed)``). At step j, ``cur = perm[j]`` moves on when it beats ``nxt = perm[j+1]``
    by the symmetric logit (``> 0``; for ``worst``: ``< 0``); a tie lets ``nxt`` move on, as the original did.
    Every step of every input is one engine call.
    """
    perms = [torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist() for n in sizes]
    logs: list[list[tuple[int, int, bool]]] = [[] for _ in sizes]
    for step in range(max(sizes, default=1) - 1):
        active = [ex for ex, p in enumerate(perms) if step < len(p) - 1]
        pairs = []
        for ex in active:
            cur, nxt = perms[ex][step], perms[ex][step + 1]
            pairs += [(ex, cur, nxt), (ex, nxt, cur)]
        logits = engine.pair_logits(examples, pairs).reshape(-1, 2)
        for ex, (ab, ba) in zip(active, logits):
            perm = perms[ex]
            cur, nxt = perm[step], perm[step + 1]
            d = float(ab - ba)
            moves = d < 0 if worst else d > 0
            if moves:
                perm[step], perm[step + 1] = nxt, cur
            logs[ex].append((cur, nxt, moves))
    return [p[-1] for p in perms], logs


def bubble_wins(n: int, log: list[tuple[int, int, bool]]) -> np.ndarray:
    """float32 ``[n]``: comparisons each candidate won in one bubble pass (the pass's winner has the most)."""
    wins = np.zeros(n, dtype=np.float32)
    for cur, nxt, moved in log:
        wins[cur if moved else nxt] += 1
    return wins


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


def merge_sort_budget(n: int) -> int:
    """The most ordered pairs :func:`merge_sort_rank` can score for ``n`` candidates (its exact worst case).

    Merging runs of ``a`` and ``b`` takes at most ``a + b − 1`` symmetric comparisons; the bottom-up sort pairs its
    runs level by level (an odd run waits for the next level). 16 → 98, 64 → 642; always ≤ :func:`max_sort_comparisons`.
    """
    runs, symmetric = [1] * max(n, 0), 0
    while len(runs) > 1:
        merged = [runs[k] + runs[k + 1] for k in range(0, len(runs) - 1, 2)]
        symmetric += sum(m - 1 for m in merged)
        runs = merged + ([runs[-1]] if len(runs) % 2 else [])
    return 2 * symmetric


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


def merge_sort_rank(
    engine: PairwiseEngine, examples: Sequence[EncodedExample], sizes: Sequence[int]
) -> list[SortResult]:
    """Rank each input's candidates with a bottom-up merge sort on symmetric logits ``C[a,b] − C[b,a]``.

    ``a`` goes before ``b`` when the symmetric logit is ``> 0``; on an exact tie the earlier run (lower input
    index) keeps its place, so the sort is stable. When the model's preferences are transitive the order equals
    the one every pairwise comparison implies. Every step of every merge, across all inputs, is one engine call.
    A merge that ends early credits the comparisons it did not need to the engine's progress
    (:meth:`~pairrm_hf.ranking.engine.PairwiseEngine.credit_progress`), so progress ends at :func:`merge_sort_budget`.
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
        engine.credit_progress(2 * sum(len(m.left) + len(m.right) - 1 - m.i - m.j for _, m in merges))
        runs = [m + c if len(r) > 1 else r for m, c, r in zip(merged, carried, runs)]
    return [SortResult(r[0] if r else [], c, s) for r, c, s in zip(runs, counts, seen)]


def knockout_finalists(n: int) -> int:
    """Default finalists of :func:`knockout_rank` for ``n`` candidates: ``n/8`` rounded to a power of two, at least 4
    (16 → 4, 64 → 8, 128 → 16): the round robin grows with the field so that a strong candidate knocked out by one
    upset still has a way back, while the cost stays a few percent of ``n(n−1)`` for large ``n``."""
    return max(4, 2 ** round(math.log2(max(n, 1) / 8))) if n > 0 else 4


def knockout_lucky_losers(finalists: int) -> int:
    """Default lucky losers of :func:`knockout_rank`: three quarters of ``finalists``, rounded up (4 → 3, 8 → 6)."""
    return -(-3 * finalists // 4)


def _knockout_plan(n: int, finalists: int | None, lucky_losers: int | None) -> tuple[int, int, int]:
    """``(survivors r, lucky losers l, matches)`` of one input's knockout: ``n − r`` knockout matches, then a round
    robin among the ``r + l`` finalists that replays none of the ``l`` matches the lucky losers lost."""
    check_positive_int("finalists", finalists, allow_none=True)
    check_int("lucky_losers", lucky_losers, minimum=0, allow_none=True)
    f = knockout_finalists(n) if finalists is None else finalists
    lucky = knockout_lucky_losers(f) if lucky_losers is None else lucky_losers
    r, last_round = n, 0
    while r > f:
        last_round, r = r // 2, (r + 1) // 2
    lucky = min(lucky, last_round)
    group = r + lucky
    return r, lucky, (n - r) + group * (group - 1) // 2 - lucky


def knockout_comparisons(n: int, finalists: int | None = None, lucky_losers: int | None = None) -> int:
    """Ordered pairs :func:`knockout_rank` scores for ``n`` candidates (two per symmetric comparison).

    With ``r`` left after the knockout (``finalists`` when ``n`` is ``finalists`` times a power of two) and ``l``
    lucky losers: ``2·(n − r + (r+l)(r+l−1)/2 − l)``. Defaults: 16 → 60 (4 finalists + 3), 64 → 282 (8 + 6).
    """
    return 2 * _knockout_plan(n, finalists, lucky_losers)[2]


def _symmetric(engine: PairwiseEngine, examples, matches: list[tuple[int, int, int]]) -> list[float]:
    """``C[a,b] − C[b,a]`` for each ``(input, a, b)``, all inputs' matches in one engine call."""
    if not matches:
        return []
    pairs = [p for ex, a, b in matches for p in ((ex, a, b), (ex, b, a))]
    logits = engine.pair_logits(examples, pairs).reshape(-1, 2)
    return [float(ab) - float(ba) for ab, ba in logits]


def knockout_rank(
    engine: PairwiseEngine,
    examples: Sequence[EncodedExample],
    sizes: Sequence[int],
    finalists: int | None = None,
    lucky_losers: int | None = None,
) -> list[SortResult]:
    """Single elimination on symmetric logits down to ``finalists``, then a round robin with ``lucky_losers``.

    Each round pairs the survivors in order (1st vs 2nd, 3rd vs 4th…; an odd one out advances without playing);
    the winner of ``C[a,b] − C[b,a]`` advances (a tie lets the earlier one through). Once at most ``finalists``
    remain, the ``lucky_losers`` who lost the last round by the smallest margins join them, and the group plays a
    round robin (the lucky losers' lost matches are reused, not replayed). The group is ordered by summed symmetric
    logits, the measure ``max_logits`` uses, so one upset in the knockout (a model that prefers B to A head to head
    while A does better against the field) need not cost the best candidate the win. The others follow by the
    round they fell in (later is better), then by the margin they lost by. Defaults grow with ``n``
    (:func:`knockout_finalists`, :func:`knockout_lucky_losers`); :func:`knockout_comparisons` gives the cost.
    When the model's preferences are transitive the winner is exactly the ``max_logits`` best. Every round of
    every input is one engine call.
    """
    plans = [_knockout_plan(n, finalists, lucky_losers) for n in sizes]
    alive = [list(range(n)) for n in sizes]
    # (round eliminated, margin lost by) per candidate: sorts the eliminated ones
    fell: list[dict[int, tuple[int, float]]] = [{} for _ in sizes]
    seen: list[dict[tuple[int, int], float]] = [{} for _ in sizes]
    last_losers: list[list[tuple[float, int]]] = [[] for _ in sizes]
    round_no = 0
    while True:
        matches = [
            (ex, a[k], a[k + 1]) for ex, a in enumerate(alive) if len(a) > plans[ex][0] for k in range(0, len(a) - 1, 2)
        ]
        if not matches:
            break
        round_no += 1
        playing = {ex for ex, _, _ in matches}
        winners: list[list[int]] = [[] if ex in playing else a for ex, a in enumerate(alive)]
        for ex in playing:
            last_losers[ex] = []
        for (ex, a, b), d in zip(matches, _symmetric(engine, examples, matches)):
            seen[ex][(a, b)] = d
            win, lose = (a, b) if d >= 0 else (b, a)
            winners[ex].append(win)
            fell[ex][lose] = (round_no, -abs(d))
            last_losers[ex].append((abs(d), lose))
        for ex in playing:
            if len(alive[ex]) % 2:  # the odd one out advances; keep the input order
                winners[ex].append(alive[ex][-1])
                winners[ex].sort()
        alive = winners
    for ex, (_, lucky, _) in enumerate(plans):
        for _, loser in sorted(last_losers[ex])[:lucky]:  # narrowest losses first (ties: lower index)
            alive[ex].append(loser)
            del fell[ex][loser]
    matches = [
        (ex, a[i], a[j])
        for ex, a in enumerate(alive)
        for i in range(len(a))
        for j in range(i + 1, len(a))
        if (a[i], a[j]) not in seen[ex] and (a[j], a[i]) not in seen[ex]
    ]
    for (ex, a, b), d in zip(matches, _symmetric(engine, examples, matches)):
        seen[ex][(a, b)] = d
    results = []
    for ex in range(len(sizes)):
        totals = dict.fromkeys(alive[ex], 0.0)
        for (a, b), d in seen[ex].items():
            if a in totals and b in totals:
                totals[a] += d
                totals[b] -= d
        top = sorted(alive[ex], key=lambda c: (-totals[c], c))
        rest = sorted(fell[ex], key=lambda c: (-fell[ex][c][0], -fell[ex][c][1], c))
        results.append(SortResult(top + rest, 2 * len(seen[ex]), seen[ex]))
    return results
