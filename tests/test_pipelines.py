"""The `pairwise-ranking` / `generative-fusion` pipeline tasks and `AutoModelForPairwiseRanking` (offline, tiny)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import pipeline

import pairrm_hf
from pairrm_hf import AutoModelForPairwiseRanking, DebertaV2PairRM, PairwiseRankingPipeline

PROMPT = "What is the capital of France?"
CANDS = ["Paris is the capital of France.", "The capital of France is Berlin.", "I don't know.", "Lyon."]
BATCH = [
    {"prompt": PROMPT, "candidates": CANDS},
    {"prompt": "Write a short poem about the sea.", "candidates": ["Waves roll in.", "Sea. Water. Blue."]},
    {"prompt": "Say hello.", "candidates": ["Hello!", "Go away.", "hi"]},
]


@pytest.fixture(scope="module")
def rank_pipe(tiny_hf_dir):
    return pipeline("pairwise-ranking", model=str(tiny_hf_dir), device="cpu")


def _scores(rows):
    return {r["index"]: r["score"] for r in rows}


def test_construction_through_pipeline(rank_pipe, tiny_hf_dir):
    assert isinstance(rank_pipe, PairwiseRankingPipeline)
    assert type(rank_pipe.model) is DebertaV2PairRM
    # The SentencePiece NFKC normalizer is back (v5's DeBERTa tokenizer drops it).
    assert "Precompiled" in str(rank_pipe.tokenizer.backend_tokenizer.normalizer)
    assert rank_pipe.ranker.model is rank_pipe.model
    from transformers.pipelines import PIPELINE_REGISTRY

    _, task, _ = PIPELINE_REGISTRY.check_task("pairwise-ranking")
    assert task["default"] == {"model": ("llm-blender/PairRM-hf", "main")}
    assert PIPELINE_REGISTRY.check_task("generative-fusion")[1]["impl"].__name__ == "GenerativeFusionPipeline"


def test_results_equal_direct_pairrm(rank_pipe, tiny_rm):
    rows = rank_pipe(PROMPT, CANDS)
    ranking = tiny_rm.rank_batch([PROMPT], [CANDS])[0]
    assert [r["index"] for r in rows] == [c.index for c in ranking.ranked()]
    for r in rows:
        assert r["candidate"] == CANDS[r["index"]]
        assert r["score"] == pytest.approx(float(ranking.scores[r["index"]]), abs=1e-6)
        assert r["rank"] == int(ranking.ranks[r["index"]])
    assert [r["rank"] for r in rows] == sorted(r["rank"] for r in rows)
    assert set(rows[0]) == {"index", "candidate", "score", "rank"}


def test_every_input_form_agrees(rank_pipe):
    positional = rank_pipe(PROMPT, CANDS)
    as_dict = rank_pipe({"prompt": PROMPT, "candidates": CANDS})
    as_batch = rank_pipe([{"prompt": PROMPT, "candidates": CANDS}])
    as_lists = rank_pipe([PROMPT], [CANDS])
    assert positional == as_dict == as_batch[0] == as_lists[0]


def test_batch_equals_one_by_one(rank_pipe):
    one_by_one = [rank_pipe(x) for x in BATCH]
    for bs in (1, 3, 64):
        batched = rank_pipe(BATCH, batch_size=bs)
        for a, b in zip(batched, one_by_one):
            assert [r["index"] for r in a] == [r["index"] for r in b]
            assert np.allclose([r["score"] for r in a], [r["score"] for r in b], atol=1e-6)
    assert rank_pipe.ranker.engine.batch_size == 16  # a per-call batch_size does not stick


def test_two_candidates_carry_comparison(rank_pipe, tiny_rm):
    rows = rank_pipe(PROMPT, CANDS[:2])
    first = next(r for r in rows if r["index"] == 0)
    second = next(r for r in rows if r["index"] == 1)
    logit = float(tiny_rm.compare([PROMPT], [CANDS[0]], [CANDS[1]])[0])
    proba = float(tiny_rm.compare_proba([PROMPT], [CANDS[0]], [CANDS[1]])[0])
    assert first["logit"] == pytest.approx(logit, abs=1e-6)
    assert second["logit"] == pytest.approx(-logit, abs=1e-6)
    assert first["probability"] == pytest.approx(proba, abs=1e-6)
    assert first["probability"] + second["probability"] == pytest.approx(1.0)
    # max_logits score of two candidates is half the symmetric logit
    assert first["score"] == pytest.approx(logit / 2, abs=1e-6)
    # bubble (no full matrix) still reports the comparison
    bubble = rank_pipe(PROMPT, CANDS[:2], aggregation="bubble")
    assert next(r for r in bubble if r["index"] == 0)["logit"] == pytest.approx(logit, abs=1e-6)


@pytest.mark.parametrize("aggregation", ["max_wins", "bubble"])
def test_aggregations(rank_pipe, tiny_rm, aggregation):
    rows = rank_pipe(PROMPT, CANDS, aggregation=aggregation)
    ranking = tiny_rm.rank_batch([PROMPT], [CANDS], aggregation=aggregation)[0]
    assert _scores(rows) == pytest.approx({i: float(s) for i, s in enumerate(ranking.scores)}, abs=1e-6)


def test_top_k_and_return_scores(rank_pipe):
    full = rank_pipe(PROMPT, CANDS)
    top = rank_pipe(PROMPT, CANDS, top_k=2, return_scores=False)
    assert [r["index"] for r in top] == [r["index"] for r in full[:2]]
    assert "score" not in top[0]
    # init-time parameters become defaults
    pipe2 = pipeline("pairwise-ranking", model=rank_pipe.model, tokenizer=rank_pipe.tokenizer, device="cpu", top_k=1)
    assert len(pipe2(PROMPT, CANDS)) == 1
    assert len(pipe2(PROMPT, CANDS, top_k=3)) == 3


def test_reference_gives_rank_with_ref_rewards(rank_pipe, tiny_rm):
    rows = rank_pipe(PROMPT, CANDS, reference=True)
    rewards = tiny_rm.rank_with_ref([PROMPT], [CANDS], ref_mode="longest")[0]
    assert _scores(rows) == pytest.approx({i: float(v) for i, v in enumerate(rewards)}, abs=1e-6)
    explicit = rank_pipe({"prompt": PROMPT, "candidates": CANDS, "reference": "Paris."})
    rewards = tiny_rm.rank_with_ref([PROMPT], [CANDS], references=["Paris."])[0]
    assert _scores(explicit) == pytest.approx({i: float(v) for i, v in enumerate(rewards)}, abs=1e-6)


def test_instruction_is_prepended(rank_pipe, tiny_rm):
    rows = rank_pipe({"prompt": PROMPT, "candidates": CANDS, "instruction": "Answer briefly. "})
    ranking = tiny_rm.rank_batch([PROMPT], [CANDS], instructions=["Answer briefly. "])[0]
    assert _scores(rows) == pytest.approx({i: float(s) for i, s in enumerate(ranking.scores)}, abs=1e-6)


def test_chat_inputs(rank_pipe, tiny_rm):
    user = [{"role": "user", "content": "hi"}, {"role": "user", "content": "and now?"}]
    answers = [
        [{"role": "assistant", "content": "hello"}, {"role": "assistant", "content": "now we talk"}],
        [{"role": "assistant", "content": "go away"}, {"role": "assistant", "content": "bye"}],
    ]
    convs = [[m for pair in zip(user, a) for m in pair] for a in answers]
    logit = float(tiny_rm.compare_conversations([convs[0]], [convs[1]])[0])
    for out in (
        rank_pipe({"prompt": user, "candidates": answers}),
        rank_pipe(convs),
        rank_pipe({"conversations": convs}),
    ):
        first = next(r for r in out if r["index"] == 0)
        assert first["logit"] == pytest.approx(logit, abs=1e-6)
    # a single-turn prompt with plain-text answers
    out = rank_pipe({"prompt": user[:1], "candidates": ["hello", "go away"]})
    assert out[0]["candidate"] in ("hello", "go away")


def test_dtype_and_device(tiny_hf_dir, rank_pipe):
    pipe = pipeline("pairwise-ranking", model=str(tiny_hf_dir), device="cpu", dtype=torch.bfloat16)
    assert pipe.model.dtype == torch.bfloat16 and pipe.device == torch.device("cpu")
    assert pipe.ranker.device == torch.device("cpu")
    got = _scores(pipe(PROMPT, CANDS))
    want = _scores(rank_pipe(PROMPT, CANDS))
    assert got == pytest.approx(want, abs=0.05)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda p: p({"candidates": CANDS}), ValueError, "missing 'prompt'"),
        (lambda p: p({"prompt": PROMPT}), ValueError, "missing 'candidates'"),
        (lambda p: p(PROMPT, []), ValueError, "empty"),
        (lambda p: p(PROMPT), ValueError, "candidates are missing"),
        (lambda p: p(PROMPT, CANDS, top_k=5), ValueError, "top_k=5 but input 0 has only 4"),
        (lambda p: p(PROMPT, CANDS, top_k=0), ValueError, "top_k"),
        (lambda p: p(PROMPT, ["a", 3]), TypeError, r"candidates\[1\] must be a str"),
        (lambda p: p(3, CANDS), TypeError, "inputs must be"),
        (
            lambda p: p([{"prompt": PROMPT, "candidates": CANDS}, {"prompt": 1, "candidates": CANDS}]),
            TypeError,
            r"inputs\[1\]",
        ),
        (lambda p: p(PROMPT, CANDS, aggregation="vote"), ValueError, "aggregation"),
        (lambda p: p(PROMPT, CANDS, reference="biggest"), ValueError, "reference"),
        (lambda p: p(PROMPT, CANDS, temperature=2), TypeError, "unexpected parameters"),
        (lambda p: p({"prompt": PROMPT, "candidates": CANDS, "answer": "x"}), ValueError, "unknown keys"),
        (lambda p: p([PROMPT, PROMPT], [CANDS]), ValueError, "list of 2 lists"),
        (lambda p: p([]), ValueError, "empty"),
    ],
)
def test_bad_input(rank_pipe, call, error, match):
    with pytest.raises(error, match=match):
        call(rank_pipe)


def test_auto_class_does_not_touch_auto_model(tiny_hf_dir):
    from transformers import AutoModel, AutoModelForSequenceClassification, DebertaV2Config
    from transformers.models.deberta_v2 import DebertaV2ForSequenceClassification, DebertaV2Model

    model = AutoModelForPairwiseRanking.from_pretrained(str(tiny_hf_dir))
    assert type(model) is DebertaV2PairRM
    cfg = DebertaV2Config(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    assert type(AutoModel.from_config(cfg)) is DebertaV2Model
    assert type(AutoModelForSequenceClassification.from_config(cfg)) is DebertaV2ForSequenceClassification
    assert type(AutoModelForPairwiseRanking.from_config(cfg)) is DebertaV2PairRM


def test_exports():
    for name in (
        "AutoModelForPairwiseRanking",
        "PairwiseRankingPipeline",
        "GenerativeFusionPipeline",
        "best_of_n_generate",
    ):
        assert name in pairrm_hf.__all__ and hasattr(pairrm_hf, name)
