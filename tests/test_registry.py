"""The one registry of ranking methods (issue 19, part 2).

* A method defined and registered here (one function, one registry line) works through ``PairRM.rank``, the
  ``pairwise-ranking`` pipeline, ``pairrm rank`` and the server's ``/rank``, with the scores an independent
  computation gives (``PairRM.compare`` against the first candidate).
* The ``pairrm rank`` progress total is exact for every built-in method: the bar starts at the total its cost
  gives (hand-computed for n = 9 here) and ends exactly there, ``knockout`` and ``sort`` included.
"""

from __future__ import annotations

import io
import json
import re
import sys

import numpy as np
import pytest
from transformers import pipeline

from pairrm_hf import RANKING_METHODS, register_ranking_method
from pairrm_hf.cli import main
from pairrm_hf.jobs.io import write_rows
from pairrm_hf.ranking.methods import MethodResult, RankingBatch, unregister_ranking_method
from pairrm_hf.serve.service import PairRMService

PROMPT = "Which colour is the sky on a clear day?"
CANDS = ["Blue.", "Green, mostly.", "It is blue during the day.", "Red."]


def against_first(batch: RankingBatch) -> list[MethodResult]:
    """Score = symmetric logit of each candidate against the input's first candidate (2n ordered pairs)."""
    pairs = [p for ex, n in enumerate(batch.sizes) for i in range(n) for p in ((ex, i, 0), (ex, 0, i))]
    logits = batch.pair_logits(pairs).reshape(-1, 2)
    scores = np.split(logits[:, 0] - logits[:, 1], np.cumsum(batch.sizes)[:-1])
    return [MethodResult(s, 2 * len(s)) for s in scores]


@pytest.fixture
def registered():
    register_ranking_method("against_first", against_first, cost=lambda n: 2 * n, description="vs candidate 0")
    yield "against_first"
    unregister_ranking_method("against_first")
    assert "against_first" not in RANKING_METHODS


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _rank_job(tmp_path, model, rows, aggregation, monkeypatch) -> tuple[list[tuple[int, int]], list[dict]]:
    """Run ``pairrm rank`` with a progress bar on a fake terminal; returns the bar's (n, total) renders and rows."""
    src, out = tmp_path / f"in-{aggregation}.jsonl", tmp_path / f"out-{aggregation}.jsonl"
    write_rows(src, rows)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    args = ["rank", str(src), "-o", str(out), "--model", model, "--batch-size", "8", "--aggregation", aggregation]
    assert main(args) == 0, terminal.getvalue()[-500:]
    renders = [
        (int(a), int(b)) for a, b in re.findall(r"pairrm rank:\s+\d+%\|[^|]*\|\s*(\d+)/(\d+) ", terminal.getvalue())
    ]
    return renders, [json.loads(line) for line in out.read_text().splitlines()]


def test_a_registered_method_works_through_every_surface(registered, tiny_rm, tiny_hf_dir, tmp_path, monkeypatch):
    n = len(CANDS)
    expected = tiny_rm.compare([PROMPT] * n, CANDS, [CANDS[0]] * n)  # C[c, 0] − C[0, c], an independent path
    assert expected[0] == 0.0

    ranked = tiny_rm.rank(PROMPT, CANDS, aggregation=registered)
    assert [r.index for r in ranked] == list(np.argsort(-expected, kind="stable"))
    assert np.allclose([r.score for r in sorted(ranked, key=lambda r: r.index)], expected, atol=1e-5)
    (ranking,) = tiny_rm.rank_batch([PROMPT], [CANDS], aggregation=registered)
    assert ranking.comparisons == 2 * n and ranking.matrix is None

    pipe = pipeline("pairwise-ranking", model=str(tiny_hf_dir), device="cpu")
    rows = pipe(PROMPT, CANDS, aggregation=registered)
    assert np.allclose([r["score"] for r in sorted(rows, key=lambda r: r["index"])], expected, atol=1e-5)

    service = PairRMService(tiny_rm, batching=False)
    try:
        served = service.handle("rank", {"prompts": [PROMPT], "candidates": [CANDS], "aggregation": registered})
    finally:
        service.close()
    assert np.allclose(served["rankings"][0]["scores"], expected, atol=1e-5)

    job_rows = [{"prompt": PROMPT, "candidates": CANDS}, {"prompt": "Say hi.", "candidates": ["hi", "hello", "bye"]}]
    renders, out = _rank_job(tmp_path, str(tiny_hf_dir), job_rows, registered, monkeypatch)
    assert np.allclose(out[0]["pairrm_scores"], expected, atol=1e-5)
    assert renders[0] == (0, 2 * 4 + 2 * 3) and renders[-1] == (14, 14)


def test_unknown_and_duplicate_names_are_refused(registered, tiny_rm, tmp_path, capsys):
    with pytest.raises(ValueError, match="already registered"):
        register_ranking_method(registered, against_first, cost=lambda n: 2 * n, description="again")
    with pytest.raises(ValueError, match="built-in"):
        register_ranking_method("knockout", against_first, cost=lambda n: 2 * n, description="x", replace=True)
    with pytest.raises(ValueError, match="aggregation must be one of .*against_first"):
        tiny_rm.rank(PROMPT, CANDS, aggregation="tournament")
    src = tmp_path / "in.jsonl"
    write_rows(src, [{"prompt": PROMPT, "candidates": CANDS}])
    assert main(["rank", str(src), "-o", str(tmp_path / "o.jsonl"), "--aggregation", "tournament"]) == 2
    assert "against_first" in capsys.readouterr().err  # the choices come from the registry


# Ordered pairs for n = 9, by hand: n(n−1) = 72; bubble 2(n−1) = 16; reference 2n = 18; sort's worst case is
# 2·(4·1 + 2·3 + 7 + 8) = 50 (merges of 1+1, 2+2, 4+4, 8+1); knockout (4 finalists, 3 lucky losers): 9 → 5 → 3
# survivors after 4 + 2 matches, 2 lucky losers, round robin of 5 = 10 matches less the 2 already played,
# 2·(6 + 8) = 28.
NINE = {"max_logits": 72, "max_wins": 72, "bubble": 16, "reference": 18, "sort": 50, "knockout": 28}


def test_builtin_costs_by_hand():
    assert {name: RANKING_METHODS[name].cost(9) for name in NINE} == NINE
    assert set(NINE) <= set(RANKING_METHODS)


@pytest.mark.parametrize("method", list(NINE))
def test_cli_progress_total_is_exact(method, tiny_rm, tiny_hf_dir, tmp_path, monkeypatch):
    words = "sky sea sun moon star rain snow wind leaf".split()
    rows = [{"prompt": f"Question {q}?", "candidates": [f"{w} {q * k}" for k, w in enumerate(words)]} for q in range(3)]
    renders, _ = _rank_job(tmp_path, str(tiny_hf_dir), rows, method, monkeypatch)
    total = 3 * NINE[method]
    assert renders[0] == (0, total), renders
    assert renders[-1] == (total, total), renders  # the bar ends at the total it started with
    spent = sum(
        r.comparisons
        for r in tiny_rm.rank_batch([r["prompt"] for r in rows], [r["candidates"] for r in rows], aggregation=method)
    )
    if method == "sort":
        assert spent <= total  # data-dependent; the merges that ended early credited the rest
    else:
        assert spent == total
