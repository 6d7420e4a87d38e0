"""From pairwise logits to scores and ranks.

``C`` is an ``[n, n]`` matrix with ``C[i, j]`` the logit of candidate ``i`` in slot 1 against ``j`` in slot 2
(diagonal 0). Ranks are competition ranks, 1 = best: tied scores share the best rank and the next rank skips.
"""

from __future__ import annotations

import numpy as np

from .rewards import symmetric_matrix

__all__ = ["AGGREGATIONS", "scores_from_matrix", "competition_ranks", "topk_indices"]

#: Aggregations available for a full comparison matrix (``bubble`` is a schedule, see ``PairRM.rank``).
AGGREGATIONS = ("max_logits", "max_wins")


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
    raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")


def competition_ranks(scores: np.ndarray) -> np.ndarray:
    """int32 ranks, 1 = highest score; equal scores share the smaller rank (``[.5, .5, .1] → [1, 1, 3]``)."""
    s = np.asarray(scores)
    return (1 + (s[None, :] > s[:, None]).sum(axis=1)).astype(np.int32)


def topk_indices(ranks: np.ndarray, top_k: int | None = None) -> np.ndarray:
    """Indices of the best ``top_k`` candidates (all when None), best first; ties keep input order."""
    order = np.argsort(np.asarray(ranks), kind="stable")
    return order if top_k is None else order[:top_k]
