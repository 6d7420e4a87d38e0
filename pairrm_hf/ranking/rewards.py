"""Reward arithmetic on PairRM logits, shared by the TRL adapters, the server, the RL clients, labelling and the CLI.

Notation: ``C[x, y]`` is PairRM's logit for ``x`` in the first slot against ``y`` in the second (> 0: ``x`` better);
the *symmetric logit* is ``s(x, y) = C[x, y] − C[y, x]``, so ``s(y, x) = −s(x, y)`` and position bias cancels.

* :func:`win_probability`: ``sigmoid(s / temperature)``, the probability that the first answer is better.
* :func:`group_relative`: ``r_i = 1/(n−1) Σ_{j≠i} s(c_i, c_j)`` for one comparison matrix; sums to 0.
* :func:`group_rewards`: :func:`group_relative` for every run of equal prompts in a flat batch, one engine call.
* Reference and baseline rewards are ``s(c, ref)``: :meth:`PairRM.rank_with_ref` and :meth:`PairRM.compare`.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

__all__ = ["contiguous_runs", "group_relative", "group_rewards", "win_probability"]


def win_probability(logits: Any, temperature: float = 1.0) -> np.ndarray:
    """float64 ``sigmoid(logits / temperature)`` elementwise (``logits`` any array-like of symmetric logits)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    x = np.asarray(logits, dtype=np.float64) / temperature
    # the two-branch form never overflows: exp of a non-positive number only
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def group_relative(matrix: np.ndarray) -> np.ndarray:
    """float64 ``[n]`` mean symmetric logit of each candidate against the ``n−1`` others of its comparison matrix.

    ``matrix``: ``[n, n]`` PairRM logits ``C`` (diagonal ignored). A single candidate gets 0.
    """
    c = np.asarray(matrix, dtype=np.float64)
    n = c.shape[0]
    if n < 2:
        return np.zeros(n)
    s = c - c.T
    return s.sum(axis=1) / (n - 1)


def contiguous_runs(keys: Sequence[Hashable]) -> list[tuple[int, int]]:
    """``[start, end)`` runs of equal consecutive keys: how TRL lays out a prompt's ``num_generations`` samples."""
    runs: list[tuple[int, int]] = []
    start = 0
    for k in range(1, len(keys) + 1):
        if k == len(keys) or keys[k] != keys[start]:
            runs.append((start, k))
            start = k
    return runs


def group_rewards(rm: Any, sources: Sequence[str], candidates: Sequence[str]) -> list[float]:
    """Group-relative reward of each candidate against the other candidates of its run of equal ``sources``.

    ``rm`` is a :class:`~pairrm_hf.PairRM` (anything with ``rank_batch``); all groups of two or more candidates go
    through one ``rank_batch`` call, and a lone candidate gets 0.
    """
    rewards = [0.0] * len(candidates)
    multi = [(a, b) for a, b in contiguous_runs(list(sources)) if b - a > 1]
    if multi:
        rankings = rm.rank_batch([sources[a] for a, _ in multi], [list(candidates[a:b]) for a, b in multi])
        for (a, b), ranking in zip(multi, rankings):
            rewards[a:b] = [float(x) for x in group_relative(ranking.matrix)]
    return rewards
