"""The reward arithmetic of :mod:`pairrm_hf.ranking.rewards`, against hand-computed values and PairRM's own calls."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pairrm_hf.ranking.aggregation import scores_from_matrix
from pairrm_hf.ranking.rewards import (
    baseline_rewards,
    contiguous_runs,
    group_relative,
    reference_rewards,
    symmetric_matrix,
    win_probability,
)

PROMPT = "What is the capital of France?"
ANSWERS = ["Paris.", "Berlin is the capital.", "The capital of France is Paris, on the Seine."]


def test_win_probability_matches_the_logistic_function_and_never_overflows():
    x = [-3.0, -0.5, 0.0, 0.5, 3.0]
    assert win_probability(x).tolist() == pytest.approx([1 / (1 + math.exp(-v)) for v in x], abs=1e-15)
    assert win_probability([2.0], temperature=4.0)[0] == pytest.approx(1 / (1 + math.exp(-0.5)), abs=1e-15)
    with np.errstate(over="raise"):  # the naive 1 / (1 + exp(-x)) overflows here
        assert win_probability([-1e4, 1e4]).tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="temperature must be > 0"):
        win_probability([1.0], temperature=0)


def test_symmetric_matrix_and_group_relative_by_hand():
    c = np.array([[0.0, 1.0, -2.0], [0.5, 0.0, 3.0], [1.0, -1.0, 0.0]], dtype=np.float32)
    s = symmetric_matrix(c)
    assert s.dtype == np.float32
    assert s.tolist() == [[0.0, 0.5, -3.0], [-0.5, 0.0, 4.0], [3.0, -4.0, 0.0]]
    # r_i = mean over the n-1 others of s(c_i, c_j)
    assert group_relative(c).tolist() == pytest.approx([-1.25, 1.75, -0.5])
    assert group_relative(c).sum() == pytest.approx(0.0, abs=1e-12)
    # max_logits divides the same sums by n instead of n-1
    assert scores_from_matrix(c).tolist() == pytest.approx((group_relative(c) * 2 / 3).tolist(), abs=1e-6)
    assert group_relative(np.zeros((1, 1))).tolist() == [0.0]
    with pytest.raises(ValueError, match="must be square"):
        symmetric_matrix(np.zeros((2, 3)))


def test_contiguous_runs():
    assert contiguous_runs(["a", "a", "b", "a"]) == [(0, 2), (2, 3), (3, 4)]
    assert contiguous_runs([]) == []


def test_reference_rewards_are_the_symmetric_logit_against_the_reference(tiny_rm):
    refs = [ANSWERS[2], ANSWERS[0], ANSWERS[1]]
    got = reference_rewards(tiny_rm, [PROMPT] * 3, ANSWERS, refs)
    ab = tiny_rm.compare([PROMPT] * 3, ANSWERS, refs, mode="ab")
    ba = tiny_rm.compare([PROMPT] * 3, ANSWERS, refs, mode="ba")  # = -C[ref, c]
    assert got == pytest.approx((ab.astype(np.float64) + ba).tolist(), abs=1e-5)
    assert reference_rewards(tiny_rm, [PROMPT], [ANSWERS[1]], [ANSWERS[1]]) == [0.0]
    assert reference_rewards(tiny_rm, [], [], []) == []


def test_baseline_rewards_are_antisymmetric(tiny_rm):
    forward = baseline_rewards(tiny_rm, [PROMPT] * 2, ANSWERS[:2], ANSWERS[1:])
    backward = baseline_rewards(tiny_rm, [PROMPT] * 2, ANSWERS[1:], ANSWERS[:2])
    assert forward == pytest.approx([-x for x in backward], abs=1e-5)
    assert any(abs(x) > 1e-4 for x in forward)  # the tiny model does tell these answers apart
    assert forward == pytest.approx(reference_rewards(tiny_rm, [PROMPT] * 2, ANSWERS[:2], ANSWERS[1:]), abs=1e-5)


def test_win_probability_at_a_vanishing_temperature_is_the_sign_without_warnings():
    import warnings

    from pairrm_hf.ranking.rewards import win_probability

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = win_probability([3.0, -2.0, 0.0], temperature=1e-308)
    assert got.tolist() == [1.0, 0.0, 0.5]
