"""From pairwise logits to scores and ranks.

``C`` is an ``[n, n]`` matrix with ``C[i, j]`` the logit of candidate ``i`` in slot 1 against ``j`` in slot 2
(diagonal 0). Ranks are competition ranks, 1 = best: tied scores share the best rank and the next rank skips.
"""

from __future__ import annotations

import numpy as np

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
        return ((c - c.T).sum(axis=1) / n).astype(np.float32)
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


#: How :func:`preference_pairs` pairs one input's ranked candidates.
PAIR_STRATEGIES = ("best_vs_worst", "all_pairs", "best_vs_random")


def preference_pairs(
    scores: np.ndarray,
    strategy: str = "best_vs_worst",
    *,
    rng: np.random.Generator | None = None,
    ties: str = "skip",
    min_margin: float | None = None,
) -> list[tuple[int, int]]:
    """(chosen, rejected) candidate indices for preference data, from one input's scores (higher is better).

    * ``best_vs_worst``: the best against the worst (the Snorkel recipe); ``all_pairs``: every pair, better first;
      ``best_vs_random``: the best against one other drawn with ``rng`` (strictly worse ones when ties are skipped).
    * Candidates are ordered by score, ties in input order. ``ties="skip"`` drops pairs of equal score,
      ``"keep"`` keeps them; ``min_margin`` drops pairs whose score difference is smaller.
    """
    if strategy not in PAIR_STRATEGIES:
        raise ValueError(f"strategy must be one of {PAIR_STRATEGIES}, got {strategy!r}")
    if ties not in ("skip", "keep"):
        raise ValueError(f"ties must be 'skip' or 'keep', got {ties!r}")
    s = np.asarray(scores, dtype=np.float64)
    if len(s) < 2:
        return []
    order = [int(k) for k in np.argsort(-s, kind="stable")]
    best = order[0]
    if strategy == "best_vs_worst":
        pairs = [(best, order[-1])]
    elif strategy == "all_pairs":
        pairs = [(order[a], order[b]) for a in range(len(order)) for b in range(a + 1, len(order))]
    else:
        others = [k for k in order[1:] if ties == "keep" or s[k] < s[best]]
        if not others:
            return []
        rng = rng if rng is not None else np.random.default_rng(0)
        pairs = [(best, others[int(rng.integers(len(others)))])]
    if ties == "skip":
        pairs = [(i, j) for i, j in pairs if s[i] > s[j]]
    if min_margin is not None:
        pairs = [(i, j) for i, j in pairs if s[i] - s[j] >= min_margin]
    return pairs
