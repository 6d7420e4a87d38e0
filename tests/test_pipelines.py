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
        assert r["score"] == pytest.approx(float(ranking.scores[r["index"]]), abs=1e-5)
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
    for bs, pair_bs in ((1, 1), (2, 3), (64, 64)):
        batched = rank_pipe(BATCH, batch_size=bs, pair_batch_size=pair_bs)
        for a, b in zip(batched, one_by_one):
            assert [r["index"] for r in a] == [r["index"] for r in b]
            assert np.allclose([r["score"] for r in a], [r["score"] for r in b], atol=1e-5)
    assert rank_pipe.ranker.engine.batch_size == 16  # a per-call pair_batch_size does not stick


def test_two_candidates_carry_comparison(rank_pipe, tiny_rm):
    rows = rank_pipe(PROMPT, CANDS[:2])
    first = next(r for r in rows if r["index"] == 0)
    second = next(r for r in rows if r["index"] == 1)
    logit = float(tiny_rm.compare([PROMPT], [CANDS[0]], [CANDS[1]])[0])
    proba = float(tiny_rm.compare_proba([PROMPT], [CANDS[0]], [CANDS[1]])[0])
    assert first["logit"] == pytest.approx(logit, abs=1e-5)
    assert second["logit"] == pytest.approx(-logit, abs=1e-5)
    assert first["probability"] == pytest.approx(proba, abs=1e-5)
    assert first["probability"] + second["probability"] == pytest.approx(1.0)
    # max_logits score of two candidates is half the symmetric logit
    assert first["score"] == pytest.approx(logit / 2, abs=1e-5)
    # bubble (no full matrix) still reports the comparison
    bubble = rank_pipe(PROMPT, CANDS[:2], aggregation="bubble")
    assert next(r for r in bubble if r["index"] == 0)["logit"] == pytest.approx(logit, abs=1e-5)


@pytest.mark.parametrize("aggregation", ["max_wins", "bubble", "sort", "reference"])
def test_aggregations(rank_pipe, tiny_rm, aggregation):
    rows = rank_pipe(PROMPT, CANDS, aggregation=aggregation)
    ranking = tiny_rm.rank_batch([PROMPT], [CANDS], aggregation=aggregation)[0]
    assert _scores(rows) == pytest.approx({i: float(s) for i, s in enumerate(ranking.scores)}, abs=1e-5)


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
    assert _scores(rows) == pytest.approx({i: float(v) for i, v in enumerate(rewards)}, abs=1e-5)
    explicit = rank_pipe({"prompt": PROMPT, "candidates": CANDS, "reference": "Paris."})
    rewards = tiny_rm.rank_with_ref([PROMPT], [CANDS], references=["Paris."])[0]
    assert _scores(explicit) == pytest.approx({i: float(v) for i, v in enumerate(rewards)}, abs=1e-5)


def test_instruction_is_prepended(rank_pipe, tiny_rm):
    rows = rank_pipe({"prompt": PROMPT, "candidates": CANDS, "instruction": "Answer briefly. "})
    ranking = tiny_rm.rank_batch([PROMPT], [CANDS], instructions=["Answer briefly. "])[0]
    assert _scores(rows) == pytest.approx({i: float(s) for i, s in enumerate(ranking.scores)}, abs=1e-5)


def test_chat_inputs(rank_pipe, tiny_rm):
    user = [{"role": "user", "content": "hi"}, {"role": "user", "content": "and now?"}]
    answers = [
        [{"role": "assistant", "content": "hello"}, {"role": "assistant", "content": "now we talk"}],
        [{"role": "assistant", "content": "go away"}, {"role": "assistant", "content": "bye"}],
    ]
    convs = [[m for pair in zip(user, a) for m in pair] for a in answers]
    logit = float(tiny_rm.compare_conversations([convs[0]], [convs[1]])[0])
    for out in (rank_pipe(convs), rank_pipe({"conversations": convs})):
        first = next(r for r in out if r["index"] == 0)
        assert first["logit"] == pytest.approx(logit, abs=1e-5)
    # a single-turn prompt with plain-text answers: the original's conversation template (pairrm_hf.ranking.inputs)
    one_turn = [[user[0], {"role": "assistant", "content": a}] for a in ("hello", "go away")]
    want = float(tiny_rm.compare_conversations([one_turn[0]], [one_turn[1]])[0])
    for candidates in (["hello", "go away"], [conv[1:] for conv in one_turn]):
        out = rank_pipe({"prompt": user[:1], "candidates": candidates})
        assert next(r for r in out if r["index"] == 0)["logit"] == pytest.approx(want, abs=1e-5)
        assert [r["candidate"] for r in sorted(out, key=lambda r: r["index"])] == candidates
    # the same chat given as a string prompt with input_format="conversation"
    as_text = rank_pipe("hi", ["hello", "go away"], input_format="conversation")
    assert next(r for r in as_text if r["index"] == 0)["logit"] == pytest.approx(want, abs=1e-5)
    plain = rank_pipe("hi", ["hello", "go away"])
    want_plain = float(tiny_rm.compare(["hi"], ["hello"], ["go away"])[0])
    assert next(r for r in plain if r["index"] == 0)["logit"] == pytest.approx(want_plain, abs=1e-5)


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
        (lambda p: p(PROMPT, CANDS, top_k=5), ValueError, "top_k=5 but inputs has only 4 candidates"),
        (lambda p: p(BATCH, top_k=3), ValueError, r"top_k=3 but inputs\[1\] has only 2 candidates"),
        (lambda p: p(PROMPT, CANDS, top_k=0), ValueError, "top_k must be a positive int"),
        (lambda p: p(PROMPT, CANDS, top_k=True), ValueError, "top_k must be a positive int or None, got True"),
        (lambda p: p(PROMPT, CANDS, top_k=2.0), ValueError, "top_k must be a positive int"),
        (lambda p: p(PROMPT, ["a", 3]), TypeError, r"inputs candidates\[1\] must be .* got int"),
        (lambda p: p(PROMPT, CANDS, batch_size=0), ValueError, "batch_size must be a positive int"),
        (lambda p: p(PROMPT, CANDS, pair_batch_size=True), ValueError, "pair_batch_size must be a positive int"),
        (lambda p: p(PROMPT, CANDS, input_format="chat"), ValueError, "input_format must be one of"),
        (
            lambda p: p(
                {
                    "prompt": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
                    "candidates": ["x", "y"],
                }
            ),
            ValueError,
            "user/assistant pairs",
        ),
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


# ----------------------------------------------------------------------------------------- streaming and batching
STREAM = BATCH + [
    {"prompt": "Name a colour.", "candidates": ["Blue.", "Seven.", "Red, or blue."]},
    {"prompt": "2 + 2?", "candidates": ["4", "5"]},
]


def _assert_same_results(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert [r["index"] for r in a] == [r["index"] for r in b]
        assert [r["candidate"] for r in a] == [r["candidate"] for r in b]
        assert np.allclose([r["score"] for r in a], [r["score"] for r in b], atol=1e-5)


def test_generator_keydataset_and_dataset_stream_in_order(rank_pipe):
    import datasets
    from transformers.pipelines.pt_utils import KeyDataset

    want = rank_pipe(STREAM, batch_size=2)
    assert isinstance(want, list) and len(want) == len(STREAM)
    stream = rank_pipe((row for row in STREAM), batch_size=2)
    assert not isinstance(stream, list)  # lazy, as transformers' text-classification
    _assert_same_results(list(stream), want)
    # lazy: the first result needs only the first batch of inputs
    pulled = []
    source = (pulled.append(k) or row for k, row in enumerate(STREAM))
    first = next(iter(rank_pipe(source, batch_size=2)))
    _assert_same_results([first], want[:1])
    assert pulled == [0, 1]
    rows = datasets.Dataset.from_dict({"row": STREAM})
    _assert_same_results(list(rank_pipe(KeyDataset(rows, "row"), batch_size=3)), want)
    table = datasets.Dataset.from_list(STREAM)
    _assert_same_results(list(rank_pipe(table, batch_size=4)), want)
    _assert_same_results(list(rank_pipe(table, batch_size=2, num_workers=2)), want)  # preprocess in workers
    # prompts and candidates as two parallel streams
    zipped = rank_pipe((r["prompt"] for r in STREAM), [r["candidates"] for r in STREAM], batch_size=3)
    _assert_same_results(list(zipped), want)


def test_stream_errors_name_the_input(rank_pipe):
    bad = iter([STREAM[0], {"prompt": PROMPT, "candidates": "Paris."}])
    with pytest.raises(TypeError, match=r"inputs\[1\] candidates must be a list"):
        list(rank_pipe(bad, batch_size=1))
    with pytest.raises(ValueError, match="candidates ran out at inputs\\[1\\]"):
        list(rank_pipe(iter([PROMPT, PROMPT]), [CANDS]))


@pytest.fixture
def engine_calls(rank_pipe, monkeypatch):
    """Counts the engine's pair_logits calls (the real engine runs; only calls are counted)."""
    engine = rank_pipe.ranker.engine
    calls = []
    real = engine.pair_logits

    def counting(examples, pairs):
        calls.append(len(examples))
        return real(examples, pairs)

    monkeypatch.setattr(engine, "pair_logits", counting)
    return calls


def test_one_engine_call_per_batch_of_inputs(rank_pipe, engine_calls):
    pairs = sum(len(r["candidates"]) * (len(r["candidates"]) - 1) for r in STREAM)  # 28, no duplicates
    rank_pipe(STREAM, batch_size=len(STREAM))
    assert engine_calls == [len(STREAM)]  # every input of the batch in one engine call
    stats = rank_pipe.ranker.engine.last_stats
    # the pairs of all inputs share forward passes of pair_batch_size (16) rows: 2 passes for 5 inputs
    assert stats["rows"] == pairs and stats["forward_calls"] == -(-pairs // 16)
    engine_calls.clear()
    list(rank_pipe((row for row in STREAM), batch_size=2))
    assert engine_calls == [2, 2, 1]
    engine_calls.clear()
    rank_pipe(STREAM[0])  # one input: one call
    assert engine_calls == [1]


def test_top_k_checked_before_any_compute(rank_pipe, engine_calls):
    with pytest.raises(ValueError, match=r"top_k=3 but inputs\[1\] has only 2 candidates"):
        rank_pipe(STREAM, top_k=3, batch_size=len(STREAM))
    assert engine_calls == []
    assert [len(rows) for rows in rank_pipe(STREAM, top_k=2)] == [2] * len(STREAM)


# ----------------------------------------------------------------------------------------- saving and layouts
NFKC_CANDS = ["Ｐａｒｉｓ is the capital.", "The ﬁrst city is Lyon.", "Berlin."]  # NFKC changes these


def test_save_pretrained_round_trip(rank_pipe, tiny_rm, tmp_path):
    from transformers import DebertaV2Config

    rank_pipe.save_pretrained(tmp_path / "saved")
    assert not hasattr(rank_pipe.model.config, "custom_pipelines")  # the in-memory config stays clean
    saved_config = DebertaV2Config.from_pretrained(tmp_path / "saved")
    assert not getattr(saved_config, "custom_pipelines", None)
    assert not list((tmp_path / "saved").glob("*.py"))  # no code is written next to the weights
    reloaded = pipeline("pairwise-ranking", model=str(tmp_path / "saved"), device="cpu")
    assert "Precompiled" in str(reloaded.tokenizer.backend_tokenizer.normalizer)
    # the NFKC normalizer came back: same ids as the original tokenizer, so same scores
    encoder = tiny_rm.engine.encoder
    assert reloaded.ranker.engine.encoder.tokenize(NFKC_CANDS) == encoder.tokenize(NFKC_CANDS)
    got, want = reloaded(PROMPT, NFKC_CANDS), rank_pipe(PROMPT, NFKC_CANDS)
    assert _scores(got) == pytest.approx(_scores(want), abs=1e-5)
    # a plain model save after the pipeline save still loads as PairRM
    rank_pipe.model.save_pretrained(tmp_path / "plain")
    again = DebertaV2PairRM.from_pretrained(tmp_path / "plain")
    assert not getattr(again.config, "custom_pipelines", None)


def test_legacy_layout_loads_in_the_pipeline(tiny_legacy_dir, tiny_backbone_dir, rank_pipe, tmp_path):
    legacy = pipeline(
        "pairwise-ranking",
        model=str(tiny_legacy_dir),
        device="cpu",
        model_kwargs={"backbone_config": str(tiny_backbone_dir)},
    )
    assert type(legacy.model) is DebertaV2PairRM
    assert legacy.ranker.lengths == rank_pipe.ranker.lengths
    for prompt, cands in ((PROMPT, CANDS), (PROMPT, NFKC_CANDS)):
        assert _scores(legacy(prompt, cands)) == pytest.approx(_scores(rank_pipe(prompt, cands)), abs=1e-5)
    # saved from a legacy folder, it reloads in the HF-native layout with the same scores
    legacy.save_pretrained(tmp_path / "converted")
    converted = pipeline("pairwise-ranking", model=str(tmp_path / "converted"), device="cpu")
    assert _scores(converted(PROMPT, NFKC_CANDS)) == pytest.approx(_scores(rank_pipe(PROMPT, NFKC_CANDS)), abs=1e-5)


def test_pair_ranker_lengths_reach_the_pipeline(tiny_legacy_dir, tiny_backbone_dir, tmp_path):
    import json
    import shutil

    folder = tmp_path / "pair-ranker"
    shutil.copytree(tiny_legacy_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    del config["source_maxlength"], config["candidate_maxlength"]
    config.update(source_max_length=128, candidate_max_length=128)  # pair-ranker's spelling
    (folder / "config.json").write_text(json.dumps(config))
    pipe = pipeline(
        "pairwise-ranking", model=str(folder), device="cpu", model_kwargs={"backbone_config": str(tiny_backbone_dir)}
    )
    assert (pipe.ranker.lengths.source_max_length, pipe.ranker.lengths.candidate_max_length) == (128, 128)
