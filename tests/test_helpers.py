"""The shared helpers: argument checks (pairrm_hf.utils.checks) and the MixInstruct metric weighting."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from pairrm_hf.data.mixinstruct import (
    Candidate,
    MixInstructExample,
    candidate_scores,
    mixinstruct_to_pairs,
    weighted_metrics,
    weighted_score,
)
from pairrm_hf.utils.checks import (
    check_int,
    check_list,
    check_positive_int,
    check_positive_number,
    check_top_k,
    duration_argument,
    positive_int_argument,
)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: check_positive_int("batch_size", 0), "batch_size must be a positive int, got 0"),
        (lambda: check_positive_int("batch_size", True), "batch_size must be a positive int, got True"),
        (lambda: check_positive_int("batch_size", 2.0), "batch_size must be a positive int, got 2.0"),
        (lambda: check_positive_int("k", None, allow_none=False), "k must be a positive int, got None"),
        (lambda: check_positive_int("cap", -1, allow_none=True), "cap must be a positive int or None, got -1"),
        (lambda: check_int("num_workers", -1, minimum=0), "num_workers must be an int >= 0, got -1"),
        (lambda: check_int("n", 1, minimum=2), "n must be an int >= 2, got 1"),
        (lambda: check_positive_number("temperature", 0), "temperature must be > 0, got 0"),
        (lambda: check_positive_number("temperature", float("nan")), "temperature must be > 0, got nan"),
        (lambda: check_positive_number("temperature", "1"), "temperature must be > 0, got '1'"),
        (lambda: check_top_k(True), "top_k must be a positive int or None, got True"),
        (lambda: check_top_k(3, 2), "top_k=3 but candidates has only 2 candidates"),
    ],
)
def test_number_checks_name_the_argument(call, message):
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value) == message


def test_number_checks_pass_good_values_through():
    assert check_positive_int("n", 3) == 3
    assert check_positive_int("n", np.int64(3)) == 3 and type(check_positive_int("n", np.int64(3))) is int
    assert check_positive_int("n", None, allow_none=True) is None
    assert check_int("lucky_losers", 0, minimum=0) == 0
    assert check_positive_number("temperature", 0.5) == 0.5
    assert check_top_k(None, 2) is None and check_top_k(2, 2) == 2


def test_check_list():
    assert check_list("prompts", ("a", "b")) == ["a", "b"]
    with pytest.raises(TypeError, match=r"^prompts must be a list, got str$"):
        check_list("prompts", "ab")
    with pytest.raises(TypeError, match=r"^prompts must be a list \(of str\), got dict$"):
        check_list("prompts", {}, "of str")


def test_positive_int_argument_in_a_parser():
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=positive_int_argument)
    assert parser.parse_args(["--limit", "7"]).limit == 7
    for bad in ("0", "-2", "x"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--limit", bad])


@pytest.mark.parametrize(
    "options, good, bad",
    [
        ({}, {"30": 30.0, "0.25": 0.25, "1e3": 1000.0}, ["0", "-1", "x", "", "nan", "inf", "-inf"]),
        ({"allow_zero": True}, {"0": 0.0, "0.0": 0.0, "3600": 3600.0}, ["-0.5", "ten", "nan", "inf"]),
    ],
)
def test_duration_argument_values(options, good, bad):
    parse = duration_argument(**options)
    for text, number in good.items():
        assert parse(text) == number
    bound = ">= 0" if options else "> 0"
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError) as err:
            parse(text)
        assert str(err.value) == f"expected a number of seconds {bound}, got {text!r}"


def test_duration_argument_error_names_the_flag(capsys):
    parser = argparse.ArgumentParser(prog="p")
    parser.add_argument("--max-wait-ms", type=duration_argument(allow_zero=True, unit="milliseconds"))
    assert parser.parse_args(["--max-wait-ms", "0"]).max_wait_ms == 0.0
    with pytest.raises(SystemExit):
        parser.parse_args(["--max-wait-ms", "-3"])
    err = capsys.readouterr().err
    assert "argument --max-wait-ms: expected a number of milliseconds >= 0, got '-3'" in err


def test_metric_weighting_by_hand():
    scores = {"bleu": 30.0, "bartscore": -2.5, "rouge1": 0.4}
    # upstream scales bleu/bleu4/cider/spice by 0.01 and every other metric by 1
    assert weighted_metrics(scores, ["bleu", "bartscore"]) == pytest.approx([0.3, -2.5])
    assert weighted_score(scores, ["bleu", "bartscore"]) == pytest.approx(-2.2)
    assert weighted_score(scores) == pytest.approx(0.3 - 2.5 + 0.4)
    assert weighted_metrics(scores, ["cider"]) is None and weighted_score(scores, ["cider"]) is None
    assert weighted_score({}, None) is None


def test_candidate_scores_and_pairs_follow_the_weighting():
    ex = MixInstructExample(
        id="q1",
        instruction="Say hi.",
        candidates=[
            Candidate("hi", scores={"bleu": 90.0, "bartscore": -3.0}),  # -2.1
            Candidate("hello", scores={"bleu": 10.0, "bartscore": -2.0}),  # -1.9: best only after weighting
        ],
    )
    assert candidate_scores(ex, ["bleu", "bartscore"]) == pytest.approx([-2.1, -1.9])
    assert mixinstruct_to_pairs([ex], metrics=["bleu", "bartscore"]) == [
        {"prompt": "Say hi.", "chosen": "hello", "rejected": "hi"}
    ]
    with pytest.raises(ValueError, match=r"example 'q1' has a candidate without the metric\(s\) \['cider'\]"):
        candidate_scores(ex, ["cider"])


def test_pad_rows_by_hand():
    from pairrm_hf.tokenization.padding import pad_rows

    ids, mask = pad_rows([[5, 6, 7], [8], []], pad_id=0)
    assert ids.dtype == mask.dtype == torch.int64
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0], [0, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    ids, mask = pad_rows([np.array([1, 2])], pad_id=9, width=4)
    assert ids.tolist() == [[1, 2, 9, 9]] and mask.tolist() == [[1, 1, 0, 0]]
    with pytest.raises(ValueError, match="a row has 3 tokens but the batch width is 2"):
        pad_rows([[1, 2, 3]], pad_id=0, width=2)
