"""Bad input gives a clear error naming the argument and index, or a documented result — never a torch crash."""

from __future__ import annotations

import numpy as np
import pytest

from pairrm_hf import Blender


@pytest.fixture(scope="module")
def blender(tiny_rm):
    return Blender(tiny_rm)


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda rm: rm.rank_batch(["a", "b"], [["x", "y"]]), ValueError, "candidates has 1 items but prompts has 2"),
        (lambda rm: rm.rank_batch(["a"], [[]]), ValueError, r"candidates\[0\] is empty"),
        (
            lambda rm: rm.rank_batch(["a", "b"], [["x"], ["y", None]]),
            TypeError,
            r"candidates\[1\]\[1\] must be a str or a list of .*messages, got NoneType",
        ),
        (
            lambda rm: rm.rank_batch(["a", 3], [["x"], ["y"]]),
            TypeError,
            r"prompts\[1\] must be a str or a list of .*messages, got int",
        ),
        (lambda rm: rm.rank_batch([], []), ValueError, "prompts is empty"),
        (
            lambda rm: rm.rank_batch("abc", [["x"]]),
            TypeError,
            r"prompts must be a list \(of str or chat messages\), got str",
        ),
        (
            lambda rm: rm.rank_batch(["a"], ["xy"]),
            TypeError,
            r"candidates\[0\] must be a list \(of answers: str or chat messages\), got str",
        ),
        (
            lambda rm: rm.rank_batch(["a"], [["x", "y"]], instructions=["i", "j"]),
            ValueError,
            "instructions has 2 items",
        ),
        (lambda rm: rm.rank_batch(["a"], [["x", "y"]], aggregation="best"), ValueError, "aggregation must be one of"),
        (lambda rm: rm.compare(["a"], ["x"], ["y", "z"]), ValueError, "candidates_b has 2 items but prompts has 1"),
        (
            lambda rm: rm.compare(["a"], [b"x"], ["y"]),
            TypeError,
            r"candidates_a\[0\] must be a str or a list of .*messages, got bytes",
        ),
        (lambda rm: rm.compare(["a"], ["x"], ["y"], mode="both"), ValueError, "mode must be one of"),
        (lambda rm: rm.compare_proba(["a"], ["x"], ["y"], temperature=0), ValueError, "temperature must be > 0"),
        (lambda rm: rm.rank("a", ["x"], top_k=0), ValueError, "top_k must be a positive int"),
        (lambda rm: rm.rank(3, ["x"]), TypeError, "prompt must be a str or a list of .*messages, got int"),
        (
            lambda rm: rm.rank(None, ["x"]),
            TypeError,
            r"prompts\[0\] must be a str .*None only when the answers are whole",
        ),
        (lambda rm: rm.rank_with_ref(["a"], [["x"]], references=["r", "s"]), ValueError, "references has 2 items"),
        (lambda rm: rm.rank_with_ref(["a"], [["x"]], ref_mode="random"), ValueError, "ref_mode must be one of"),
        (lambda rm: rm.best_of_n(["a"], [["x"]], method="tournament"), ValueError, "method must be 'full' or one of"),
        (
            lambda rm: rm.compare_conversations(
                [[{"role": "user", "content": "q"}]], [[{"role": "user", "content": "q"}]]
            ),
            ValueError,
            "even, non-zero number of messages",
        ),
        (
            lambda rm: rm.compare_conversations(
                [[{"role": "assistant", "content": "q"}, {"role": "user", "content": "a"}]],
                [[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]],
            ),
            ValueError,
            r"conversations_a\[0\]\[0\] has role 'assistant'; expected 'user'",
        ),
        (
            lambda rm: rm.compare_conversations(
                [[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]],
                [[{"role": "user", "content": "other"}, {"role": "assistant", "content": "a"}]],
            ),
            ValueError,
            "must have the same user turns",
        ),
    ],
)
def test_clear_errors(tiny_rm, call, error, match):
    with pytest.raises(error, match=match):
        call(tiny_rm)


def test_blender_errors(blender):
    with pytest.raises(RuntimeError, match="loadranker"):
        Blender().rank(["a"], [["x"]])
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        blender.rank(["a"], [["x", "y"]], batch_size=0)
    with pytest.raises(TypeError, match="unexpected keyword"):
        blender.rank_with_ref(["a"], [["x", "y"]], source_max_length=3)


def test_documented_results_for_edge_cases(tiny_rm, blender):
    # empty strings are valid texts: segments become [CLS] <prefix> [SEP]
    assert tiny_rm.compare([""], [""], ["x"]).shape == (1,)
    # duplicate candidates tie exactly
    ranks = blender.rank(["q"], [["same", "other", "same"]])
    assert ranks[0][0] == ranks[0][2]
    # far longer than 2048 tokens: truncated by the budget, never a crash
    huge = "word " * 20000
    assert np.isfinite(tiny_rm.compare([huge], [huge], [huge + "!"])).all()
    # `mode=` in rank_with_ref is an alias of ref_mode (upstream's README passed it)
    np.testing.assert_array_equal(
        blender.rank_with_ref(["q"], [["a", "bbb"]], return_scores=True, mode="first"),
        blender.rank_with_ref(["q"], [["a", "bbb"]], return_scores=True, ref_mode="first"),
    )
