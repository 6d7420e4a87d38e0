"""Preference pairs (chosen, rejected) from one input's candidate scores: the DPO labelling rule of
``label_preferences`` and ``pairrm label``."""

from __future__ import annotations

import numpy as np

__all__ = ["PAIR_STRATEGIES", "preference_pairs"]

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
