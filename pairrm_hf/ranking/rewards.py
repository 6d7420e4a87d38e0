"""Reward arithmetic on PairRM logits, shared by the TRL adapters, the server, the RL clients, labelling and the CLI.

Notation: ``C[x, y]`` is PairRM's logit for ``x`` in the first slot against ``y`` in the second (> 0: ``x`` better);
the *symmetric logit* is ``s(x, y) = C[x, y] − C[y, x]``, so ``s(y, x) = −s(x, y)`` and position bias cancels.

* :func:`win_probability`: ``sigmoid(s / temperature)``, the probability that the first answer is better.
* :func:`symmetric_matrix`: ``S = C − Cᵀ``, the symmetric logit of every pair of one comparison matrix.
* :func:`group_relative`: ``r_i = 1/(n−1) Σ_{j≠i} s(c_i, c_j)`` for one comparison matrix; sums to 0.
* :func:`group_rewards`: :func:`group_relative` for every run of equal prompts in a flat batch, one engine call.
* :func:`reference_rewards`: ``s(c_k, ref_k)`` per candidate, one :meth:`PairRM.rank_with_ref` call (exactly 0
  when ``c_k == ref_k``).
* :func:`baseline_rewards`: ``s(c_k, b_k)`` per candidate, one symmetric :meth:`PairRM.compare` call.

``rm`` below is anything with PairRM's methods: a :class:`~pairrm_hf.PairRM`, a request view of one, or the HTTP
client :class:`~pairrm_hf.serve.RemotePairRM`.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from ..utils.checks import check_positive_number

__all__ = [
    "baseline_rewards",
    "contiguous_runs",
    "group_relative",
    "group_rewards",
    "reference_rewards",
    "symmetric_matrix",
    "win_probability",
]


def win_probability(logits: Any, temperature: float = 1.0) -> np.ndarray:
    """float64 ``sigmoid(logits / temperature)`` elementwise (``logits`` any array-like of symmetric logits)."""
    temperature = check_positive_number("temperature", temperature)
    # a tiny temperature sends |x| to inf, which the two-branch form maps to exactly 0 or 1 (exp of a non-positive
    # number only): the overflow is the intended limit, not an error
    with np.errstate(over="ignore"):
        x = np.asarray(logits, dtype=np.float64) / temperature
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def symmetric_matrix(matrix: Any) -> np.ndarray:
    """``S = C − Cᵀ`` for a square ``[n, n]`` comparison matrix ``C`` (dtype kept): ``S[i, j] = s(c_i, c_j)``, > 0 when
    ``c_i`` is the better answer; ``S`` is antisymmetric, so position bias cancels."""
    c = np.asarray(matrix)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"matrix must be square, got shape {c.shape}")
    return c - c.T


def group_relative(matrix: np.ndarray) -> np.ndarray:
    """float64 ``[n]`` mean symmetric logit of each candidate against the ``n−1`` others of its comparison matrix.

    ``matrix``: ``[n, n]`` PairRM logits ``C`` (diagonal ignored). A single candidate gets 0.
    """
    c = np.asarray(matrix, dtype=np.float64)
    n = c.shape[0]
    if n < 2:
        return np.zeros(n)
    return symmetric_matrix(c).sum(axis=1) / (n - 1)


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


def reference_rewards(
    rm: Any, sources: Sequence[str], candidates: Sequence[str], references: Sequence[str]
) -> list[float]:
    """``s(candidates[k], references[k])`` for each ``k``: one :meth:`PairRM.rank_with_ref` call, 2 pairs per item.

    Exactly 0 when a candidate equals its reference; independent of the other items of the batch.
    """
    if not len(candidates):
        return []
    rewards = rm.rank_with_ref(list(sources), [[c] for c in candidates], references=list(references))
    return [float(r[0]) for r in rewards]


def baseline_rewards(
    rm: Any, sources: Sequence[str], candidates: Sequence[str], baselines: Sequence[str]
) -> list[float]:
    """``s(candidates[k], baselines[k])`` for each ``k``: one symmetric :meth:`PairRM.compare` call (float32 logits)."""
    if not len(candidates):
        return []
    return [float(x) for x in rm.compare(list(sources), list(candidates), list(baselines), mode="symmetric")]
