"""The ``knockout`` schedule: its comparison budget, determinism and exactness on transitive preferences."""

from __future__ import annotations

import numpy as np
import pytest

from pairrm_hf.schedules import RANKING_METHODS, knockout_comparisons, knockout_rank


class MatrixEngine:
    """Answers ``pair_logits`` from fixed matrices ``C[input][i, j]`` and counts what it was asked.

    A stand-in for :class:`~pairrm_hf.engine.PairwiseEngine` so the schedule can be checked against preferences
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


@pytest.mark.parametrize("sizes", [[16], [64], [1, 2, 3, 5, 7, 16, 33]])
def test_budget_and_exact_winner_on_transitive_preferences(sizes):
    mats = [_transitive(n, seed) for seed, n in enumerate(sizes)]
    engine = MatrixEngine([m for m, _ in mats])
    results = knockout_rank(engine, [None] * len(sizes), sizes)
    for ex, (result, (_, s), n) in enumerate(zip(results, mats, sizes)):
        assert sorted(result.order) == list(range(n))
        assert result.order[0] == int(np.argmax(s))  # the true best, whatever the bracket
        assert result.comparisons == knockout_comparisons(n)
        assert sum(1 for e, _, _ in engine.asked if e == ex) == result.comparisons
        f = min(n, 4) if n != 33 else 3  # 33 → 17 → 9 → 5 → 3 left for the round robin
        # the finalists are the top of the order, sorted by their true strength (the round robin is exact here)
        assert list(result.order[:f]) == sorted(result.order[:f], key=lambda c: -s[c])
    # one engine call per round for all inputs together: ⌈log2(64/4)⌉ = 4 knockout rounds + 1 round robin
    assert engine.calls == 5 if max(sizes) == 64 else engine.calls <= 5
    assert knockout_comparisons(16) == 36 <= 60 and knockout_comparisons(64) == 132 <= 0.1 * 64 * 63


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
    finalists = order[:4]
    totals = {a: sum(sym[a, b] for b in finalists if b != a) for a in finalists}
    assert order[0] == max(finalists, key=lambda a: (totals[a], -a))
    (again,) = tiny_rm.rank_batch(["Which one?"], [cands], aggregation="knockout")
    assert again.ranks.tolist() == ranking.ranks.tolist()
