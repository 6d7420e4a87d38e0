"""No caller mutates a shared model (issue 19, part 4).

``Blender``, the ``pairwise-ranking`` pipeline, the ``pairrm`` command and the server all use the process-wide
``shared_pairrm`` instance with per-call options of their own (batch size, progress bar); afterwards its engine,
options and model are exactly as before. Views from ``with_options`` share the model and give the same results.
"""

from __future__ import annotations

import numpy as np
import pytest
from transformers import pipeline

from pairrm_hf import Blender
from pairrm_hf.cli import main
from pairrm_hf.jobs.io import write_rows
from pairrm_hf.ranking.engine import EngineOptions
from pairrm_hf.ranking.ranker import shared_pairrm
from pairrm_hf.serve.service import PairRMService

PROMPTS = ["What is 2+2?", "Say hello."]
CANDS = [["4", "four", "5", "It is 4."], ["hello", "hi there", "bye"]]


def _configuration(rm) -> dict:
    model = rm.model
    return {
        "engine": rm.engine,
        "options": rm.engine.options,
        "training": model.training,
        "dtype": next(model.parameters()).dtype,
        "device": rm.device,
        "attention": model.attention_implementation,
        "backbone": model.pretrained_model,
        "encoder": rm.engine.encoder,
    }


def test_surfaces_leave_the_shared_instance_unchanged(tiny_hf_dir, tmp_path, capsys):
    model = str(tiny_hf_dir)
    rm = shared_pairrm(model, None, None, 8)  # the instance `pairrm rank --batch-size 8` loads
    before = _configuration(rm)
    assert before["options"] == EngineOptions(batch_size=8)
    expected = rm.rank_batch(PROMPTS, CANDS)

    blender = Blender(rm)
    ranks = blender.rank(PROMPTS, CANDS, batch_size=2, disable_tqdm=False, return_scores=True)
    blender.get_best_of_n(PROMPTS, CANDS, batch_size=3)
    blender.compare(PROMPTS, ["4", "hi"], ["5", "bye"], batch_size=1)
    for got, want in zip(ranks, expected):
        assert np.allclose(got, want.scores, atol=1e-5)

    pipe = pipeline("pairwise-ranking", model=rm.model, tokenizer=rm.tokenizer, device="cpu")
    out = pipe(PROMPTS, CANDS, pair_batch_size=3)
    assert np.allclose([r["score"] for r in sorted(out[0], key=lambda r: r["index"])], expected[0].scores, atol=1e-5)

    src = tmp_path / "in.jsonl"
    write_rows(src, [{"prompt": p, "candidates": c} for p, c in zip(PROMPTS, CANDS)])
    assert main(["rank", str(src), "-o", str(tmp_path / "out.jsonl"), "--model", model, "--batch-size", "8"]) == 0
    assert "pairrm: output:" in capsys.readouterr().err  # the job ran (with its progress callback)

    service = PairRMService(rm, max_wait_ms=1.0)
    try:
        served = service.handle("rank", {"prompts": PROMPTS, "candidates": CANDS, "aggregation": "sort"})
    finally:
        service.close()
    assert len(served["rankings"]) == 2

    assert _configuration(rm) == before
    assert rm.options.progress_callback is None and rm.options.show_progress is False


def test_options_are_read_only_and_views_are_cheap(tiny_rm):
    with pytest.raises(AttributeError):
        tiny_rm.engine.batch_size = 2
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        tiny_rm.with_options(batch_size=0)
    seen: list[int] = []
    view = tiny_rm.with_options(batch_size=3, progress_callback=seen.append)
    assert view.model is tiny_rm.model and view.engine.encoder is tiny_rm.engine.encoder
    assert view.options.batch_size == 3 and tiny_rm.options.batch_size == 8
    got = view.rank_batch(PROMPTS, CANDS)
    want = tiny_rm.rank_batch(PROMPTS, CANDS)
    for a, b in zip(got, want):
        assert np.allclose(a.scores, b.scores, atol=1e-5)
    n_pairs = sum(len(c) * (len(c) - 1) for c in CANDS)
    assert sum(seen) == n_pairs and view.engine.last_stats["max_batch_rows"] <= 3
    assert tiny_rm.options.progress_callback is None
