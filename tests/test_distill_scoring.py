"""A distilled student is scored by the engine: same numbers as a plain row-by-row transformers forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tokenizers import processors

from pairrm_hf.testing import build_tiny_encoder
from pairrm_hf.training.distillation import load_student, student_engine, student_scores

# Sets of different sizes, with an empty set, a repeated pair (shared row) and texts long enough to be cut at
# MAX_LENGTH (longest-first: the long prompt alone, the long answer alone, and both).
LONG = " ".join(["the good answer is paris and the sea is blue"] * 6)
SOURCES = ["what is the capital of france", LONG, "hello", "why is the sky blue", "write a poem"]
CANDIDATES = [
    ["paris", "the capital is paris", "maybe it is paris or not", "paris"],
    ["yes", LONG],
    [],
    ["the sun", "water and sky", LONG, "blue", "no", "thanks please help"],
    ["a red cat and a blue dog"],
]
MAX_LENGTH = 24


def _student(folder, family: str):
    build_tiny_encoder(folder, family, seed=0)
    torch.manual_seed(0)  # the classification head is new: fix it
    return load_student(folder)


def _plain_forward(model, tokenizer, sources, candidates) -> list[np.ndarray]:
    """The yardstick: one (source, candidate) row at a time, straight through transformers, no padding."""
    out = []
    with torch.no_grad():
        for source, cands in zip(sources, candidates):
            row = []
            for c in cands:
                enc = tokenizer(source, c, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
                row.append(float(model(**enc).logits[0, 0]))
            out.append(np.array(row, dtype=np.float32))
    return out


@pytest.fixture(scope="module")
def deberta_student(tmp_path_factory):
    return _student(tmp_path_factory.mktemp("student") / "deberta", "deberta-v2")


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_student_scores_equal_a_plain_row_by_row_forward(deberta_student, batch_size):
    model, tokenizer = deberta_student
    expected = _plain_forward(model, tokenizer, SOURCES, CANDIDATES)
    assert any(len(tokenizer(s, c)["input_ids"]) > MAX_LENGTH for s, cands in zip(SOURCES, CANDIDATES) for c in cands)
    got = student_scores(model, tokenizer, SOURCES, CANDIDATES, batch_size=batch_size, max_length=MAX_LENGTH)
    assert [g.shape for g in got] == [(len(c),) for c in CANDIDATES]
    assert all(g.dtype == np.float32 for g in got)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, atol=1e-5)
    assert got[0][0] == got[0][3]  # the repeated pair is one row


def test_student_engine_dedups_and_sorts_rows_by_length(deberta_student):
    model, tokenizer = deberta_student
    engine = student_engine(model, tokenizer, batch_size=3, max_length=MAX_LENGTH)
    prompts = [s for s, cands in zip(SOURCES, CANDIDATES) for _ in cands]
    responses = [c for cands in CANDIDATES for c in cands]
    engine.text_pair_scores(prompts, responses)
    distinct = list(dict.fromkeys(zip(prompts, responses)))
    lengths = sorted(
        (len(tokenizer(p, r, truncation=True, max_length=MAX_LENGTH)["input_ids"]) for p, r in distinct), reverse=True
    )
    # longest first, 3 rows a batch, each padded to its own longest row
    padded = sum(max(lengths[k : k + 3]) * len(lengths[k : k + 3]) for k in range(0, len(lengths), 3))
    assert engine.last_stats["rows"] == len(distinct) == len(responses) - 1
    assert engine.last_stats["forward_calls"] == -(-len(distinct) // 3)
    assert engine.last_stats["real_tokens"] == sum(lengths)
    assert engine.last_stats["padded_tokens"] == padded


def test_student_scores_of_no_sets_and_of_empty_sets(deberta_student):
    model, tokenizer = deberta_student
    assert student_scores(model, tokenizer, [], []) == []
    got = student_scores(model, tokenizer, ["a", "b"], [[], []])
    assert [g.shape for g in got] == [(0,), (0,)]
    with pytest.raises(ValueError, match="candidates has 1 items but sources has 2"):
        student_scores(model, tokenizer, ["a", "b"], [["x"]])


def test_text_pair_engine_refuses_pair_encoding(deberta_student):
    model, tokenizer = deberta_student
    engine = student_engine(model, tokenizer)
    assert engine.ranking_style == "text_pair"
    with pytest.raises(ValueError, match="text_pair_scores"):
        engine.encode(["a"], [["b", "c"]])


def test_student_token_type_ids_reach_the_model(tmp_path):
    """A BERT student whose tokenizer marks the answer with token type 1 (as bert-base's does)."""
    model, tokenizer = _student(tmp_path / "bert", "bert")
    cls, sep = tokenizer.cls_token, tokenizer.sep_token
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, tokenizer.cls_token_id), (sep, tokenizer.sep_token_id)],
    )
    tokenizer.model_input_names = ["input_ids", "token_type_ids", "attention_mask"]
    assert 1 in tokenizer("a", "b")["token_type_ids"]
    expected = _plain_forward(model, tokenizer, SOURCES, CANDIDATES)
    got = student_scores(model, tokenizer, SOURCES, CANDIDATES, batch_size=4, max_length=MAX_LENGTH)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, atol=1e-5)
    # the types matter to this model, so the equality above needed them
    tokenizer.model_input_names = ["input_ids", "attention_mask"]
    without = student_scores(model, tokenizer, SOURCES, CANDIDATES, batch_size=4, max_length=MAX_LENGTH)
    assert not np.allclose(np.concatenate(without), np.concatenate(got), atol=1e-4)
