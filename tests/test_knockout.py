"""The ``knockout`` schedule: its comparison budget, determinism and exactness on transitive preferences."""

from __future__ import annotations

import numpy as np
import pytest

from pairrm_hf.ranking.methods import RANKING_METHODS
from pairrm_hf.ranking.schedules import (
    knockout_comparisons,
    knockout_finalists,
    knockout_lucky_losers,
    knockout_rank,
)


class MatrixEngine:
    """Answers ``pair_logits`` from fixed matrices ``C[input][i, j]`` and counts what it was asked.

    A stand-in for :class:`~pairrm_hf.ranking.engine.PairwiseEngine` so the schedule can be checked against preferences
    chosen by the test (a transitive order known in advance); the real engine is exercised below on the tiny model.
    """

    def __init__(self, matrices: list[np.ndarray]):
        self.matrices = matrices
        self.asked: list[tuple[int, int, int]] = []
        self.calls = 0

    def pair_logits(self, examples, pairs) -> np.ndarray:
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 3)
        self.calls += 1
        self.asked += [tuple(p) for p in pairs.tolist()]
        return np.array([self.matrices[ex][i, j] for ex, i, j in pairs], dtype=np.float32)


def _transitive(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``C[i,j] = s_i − s_j + 0.3`` (a slot-1 bias, which cancels in the symmetric logit): a transitive tournament."""
    rng = np.random.default_rng(seed)
    s = rng.normal(size=n)
    c = s[:, None] - s[None, :] + 0.3
    np.fill_diagonal(c, 0)
    return c.astype(np.float32), s


def _group_size(n: int) -> int:
    """Finalists + lucky losers, counted by hand from the bracket (not from the module's plan)."""
    f = knockout_finalists(n)
    left, last_round = n, 0
    while left > f:
        last_round, left = left // 2, (left + 1) // 2
    return left + min(knockout_lucky_losers(f), last_round)


def test_default_budgets_hand_counted():
    # n = 16: 12 knockout matches (16 → 8 → 4), 4 finalists + 3 lucky losers = 7 → 21 round-robin pairs, 3 of
    # them already played (each lucky loser against its conqueror): 12 + 18 = 30 matches = 60 ordered pairs.
    assert knockout_finalists(16) == 4 and knockout_lucky_losers(4) == 3
    assert knockout_comparisons(16) == 60 <= 0.25 * 16 * 15
    # n = 64: 56 knockout matches (→ 8), 8 + 6 = 14 → 91 − 6 = 85: 141 matches = 282 ordered pairs.
    assert knockout_finalists(64) == 8 and knockout_lucky_losers(8) == 6
    assert knockout_comparisons(64) == 282 <= 0.1 * 64 * 63
    # the old plain knockout is still there: 4 finalists, no lucky loser
    assert knockout_comparisons(16, finalists=4, lucky_losers=0) == 36
    # a field no larger than the finalists is a full round robin
    assert [knockout_comparisons(n) for n in (1, 2, 3, 4)] == [0, 2, 6, 12]


@pytest.mark.parametrize("sizes", [[16], [64], [1, 2, 3, 5, 7, 16, 33]])
def test_budget_and_exact_winner_on_transitive_preferences(sizes):
    mats = [_transitive(n, seed) for seed, n in enumerate(sizes)]
    engine = MatrixEngine([m for m, _ in mats])
    results = knockout_rank(engine, [None] * len(sizes), sizes)
    for ex, (result, (_, s), n) in enumerate(zip(results, mats, sizes)):
        assert sorted(result.order) == list(range(n))
        assert result.order[0] == int(np.argmax(s))  # the true best, whatever the bracket
        assert result.comparisons == knockout_comparisons(n)
        asked = [(a, b) for e, a, b in engine.asked if e == ex]
        assert len(asked) == result.comparisons == len(set(asked))  # no ordered pair is scored twice
        g = _group_size(n)
        # the round-robin group is the top of the order, sorted by true strength (the round robin is exact here)
        assert list(result.order[:g]) == sorted(result.order[:g], key=lambda c: -s[c])
    # one engine call per round for all inputs together: 64 → 32 → 16 → 8 is 3 knockout rounds + 1 round robin
    assert engine.calls == 4 if max(sizes) == 64 else engine.calls <= 5


def test_a_lucky_loser_can_win():
    """An intransitive field: 0 is the best against the field but loses narrowly to 2 in the last knockout round
    (16 → 8 → 4: 0 beats 1, 2 beats 3, then 2 beats 0); 2 loses to everyone else. ``max_logits`` ranks 0 first;
    the plain knockout loses it, the lucky loser brings it back."""
    n = 16
    s = np.linspace(0, -3, n)  # a transitive base: lower index is better
    c = ((s[:, None] - s[None, :]) / 2).astype(np.float32)
    for j in range(n):
        c[2, j], c[j, 2] = -0.5, 0.5  # 2 is weak against the field…
    c[2, 3], c[3, 2] = 2.0, -2.0  # …except 3, whom it beats in round one
    c[2, 0], c[0, 2] = 0.05, -0.05  # and 0, by a hair, in round two: the upset
    np.fill_diagonal(c, 0)
    assert int(np.argmax((c - c.T).sum(1))) == 0
    plain = knockout_rank(MatrixEngine([c]), [None], [n], finalists=4, lucky_losers=0)[0]
    lucky = knockout_rank(MatrixEngine([c]), [None], [n])[0]
    assert 0 not in plain.order[:4] and plain.order[0] != 0
    assert lucky.order[0] == 0


def test_same_answer_every_time_and_symmetric_logits_recorded():
    c, _ = _transitive(16, 3)
    c = c + np.random.default_rng(9).normal(scale=1.0, size=c.shape).astype(np.float32)  # intransitive noise
    first = knockout_rank(MatrixEngine([c]), [None], [16])[0]
    again = knockout_rank(MatrixEngine([c]), [None], [16])[0]
    assert first.order == again.order and first.symmetric == again.symmetric
    for (a, b), d in first.symmetric.items():
        assert d == pytest.approx(float(c[a, b]) - float(c[b, a]), abs=1e-6)
    with pytest.raises(ValueError, match="finalists"):
        knockout_rank(MatrixEngine([c]), [None], [16], finalists=0)
    with pytest.raises(ValueError, match="lucky_losers"):
        knockout_rank(MatrixEngine([c]), [None], [16], lucky_losers=-1)
    with pytest.raises(ValueError, match="finalists"):  # the cost formula checks too (0 would never stop halving)
        knockout_comparisons(16, finalists=0)
    with pytest.raises(ValueError, match="lucky_losers"):
        knockout_comparisons(16, lucky_losers=1.5)


def test_knockout_through_the_api_on_the_tiny_model(tiny_rm):
    assert "knockout" in RANKING_METHODS
    cands = [f"answer {w}" for w in "one two three four five six seven eight nine ten red blue".split()]
    (ranking,) = tiny_rm.rank_batch(["Which one?"], [cands], aggregation="knockout")
    assert sorted(ranking.ranks.tolist()) == list(range(1, len(cands) + 1))
    assert ranking.comparisons == knockout_comparisons(len(cands))
    (matrix,) = tiny_rm.comparison_matrices(["Which one?"], [cands])
    sym = matrix - matrix.T
    order = [int(i) for i in np.argsort(ranking.ranks)]
    # the winner beats every other finalist in the round robin sum, by the model's own symmetric logits
    finalists = order[: _group_size(len(cands))]
    totals = {a: sum(sym[a, b] for b in finalists if b != a) for a in finalists}
    assert order[0] == max(finalists, key=lambda a: (totals[a], -a))
    (again,) = tiny_rm.rank_batch(["Which one?"], [cands], aggregation="knockout")
    assert again.ranks.tolist() == ranking.ranks.tolist()
