"""From pairwise logits to scores and ranks.

``C`` is an ``[n, n]`` matrix with ``C[i, j]`` the logit of candidate ``i`` in slot 1 against ``j`` in slot 2
(diagonal 0). Ranks are competition ranks, 1 = best: tied scores share the best rank and the next rank skips.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .rewards import symmetric_matrix

__all__ = ["scores_from_matrix", "partial_scores", "competition_ranks", "topk_indices"]

_MATRIX_AGGREGATIONS = ("max_logits", "max_wins")


def scores_from_matrix(matrix: np.ndarray, aggregation: str = "max_logits") -> np.ndarray:
    """Per-candidate scores (float32, higher is better) from a full comparison matrix.

    * ``max_logits`` (upstream ``rank``): ``score_i = (1/n) Σ_j (C[i,j] − C[j,i])``; the divisor is ``n`` as upstream.
    * ``max_wins``: the fraction of the ``2(n−1)`` ordered comparisons candidate ``i`` wins
      (``C[i,j] > 0`` in slot 1, ``C[j,i] < 0`` in slot 2). Upstream added a sum to a mean here; ranks agree.
    """
    c = np.asarray(matrix, dtype=np.float32)
    n = c.shape[0]
    if c.shape != (n, n):
        raise ValueError(f"matrix must be square, got shape {c.shape}")
    if aggregation == "max_logits":
        return (symmetric_matrix(c).sum(axis=1) / n).astype(np.float32)
    if aggregation == "max_wins":
        if n == 1:
            return np.zeros(1, dtype=np.float32)
        off = ~np.eye(n, dtype=bool)
        wins = ((c > 0) & off).sum(axis=1) + ((c.T < 0) & off).sum(axis=1)
        return (wins / (2 * (n - 1))).astype(np.float32)
    raise ValueError(f"aggregation must be one of {_MATRIX_AGGREGATIONS}, got {aggregation!r}")


def partial_scores(matrix: np.ndarray, pairs: Sequence[tuple[int, int]], aggregation: str = "max_logits") -> np.ndarray:
    """Scores from only the observed unordered ``pairs`` (both orders each), normalised per candidate by how often
    it was compared; with every pair observed the ranks equal :func:`scores_from_matrix`'s."""
    if aggregation not in _MATRIX_AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {_MATRIX_AGGREGATIONS}, got {aggregation!r}")
    n = matrix.shape[0]
    total, degree = np.zeros(n), np.zeros(n)
    for i, j in pairs:
        d = float(matrix[i, j] - matrix[j, i])
        if aggregation == "max_logits":
            total[i] += d
            total[j] -= d
        else:  # max_wins: each ordered comparison is one game
            # int(): numpy bools add as logical or
            total[i] += int(matrix[i, j] > 0) + int(matrix[j, i] < 0)
            total[j] += int(matrix[j, i] > 0) + int(matrix[i, j] < 0)
        degree[i] += 1
        degree[j] += 1
    return total / np.maximum(degree, 1)


def competition_ranks(scores: np.ndarray) -> np.ndarray:
    """int32 ranks, 1 = highest score; equal scores share the smaller rank (``[.5, .5, .1] → [1, 1, 3]``)."""
    s = np.asarray(scores)
    return (1 + (s[None, :] > s[:, None]).sum(axis=1)).astype(np.int32)


def topk_indices(ranks: np.ndarray, top_k: int | None = None) -> np.ndarray:
    """Indices of the best ``top_k`` candidates (all when None), best first; ties keep input order."""
    order = np.argsort(np.asarray(ranks), kind="stable")
    return order if top_k is None else order[:top_k]
