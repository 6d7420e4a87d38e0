"""Evaluation metrics against hand-computed values, and the model-driven evaluations on the tiny oracle PairRM."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pairrm_hf.cli.eval_command import eval_main
from pairrm_hf.evaluation.metrics import (
    accuracy_from_margins,
    beat_percent,
    gpt_rank,
    pairwise_accuracy,
    plot_tradeoff,
    rank_correlations,
    ranks_from_scores,
    selection_tradeoff,
    top_k_percent,
)
from pairrm_hf.ranking.aggregation import partial_scores, scores_from_matrix

# ------------------------------------------------------------------------------------------------ hand-computed


def test_accuracy_from_margins_subsets_sections_and_ties():
    margins = [1.0, -0.5, 0.0, 2.0, 3.0]
    subsets = ["a", "a", "b", "b", "b"]
    sections = {"S1": ["a"], "S2": ["a", "b"], "empty": ["zzz"]}
    out = accuracy_from_margins(margins, subsets, section_map=sections)
    # credits (tie = 0): a -> [1, 0], b -> [0, 1, 1]
    assert out["accuracy"] == pytest.approx(3 / 5)
    assert out["ties"] == 1 and out["n"] == 5
    assert out["subsets"]["a"] == {"accuracy": 0.5, "n": 2, "ties": 0}
    assert out["subsets"]["b"]["accuracy"] == pytest.approx(2 / 3) and out["subsets"]["b"]["ties"] == 1
    # S2 is example-weighted: (0.5 * 2 + 2/3 * 3) / 5 = 0.6; a section with no data is left out
    assert out["sections"] == pytest.approx({"S1": 0.5, "S2": 0.6})
    assert out["score"] == pytest.approx(0.55)
    half = accuracy_from_margins(margins, subsets, tie_value=0.5)
    assert half["accuracy"] == pytest.approx(3.5 / 5)
    assert half["subsets"]["b"]["accuracy"] == pytest.approx(2.5 / 3)


def test_accuracy_from_margins_errors():
    with pytest.raises(ValueError, match="subsets has 1 items but margins has 2"):
        accuracy_from_margins([1.0, 2.0], ["a"])
    with pytest.raises(ValueError, match="tie_value"):
        accuracy_from_margins([1.0], tie_value=2)
    with pytest.raises(ValueError, match=r"margins\[1\] is NaN"):
        accuracy_from_margins([1.0, float("nan")])


REF_RANKS = [[1, 2, 3], [2, 1, 1, 4]]


def test_gpt_rank_top_k_and_beat_x():
    assert gpt_rank([1, 2], REF_RANKS) == pytest.approx(1.5)
    assert top_k_percent([1, 2], REF_RANKS, k=1) == pytest.approx(50.0)
    assert top_k_percent([1, 2], REF_RANKS, k=2) == pytest.approx(100.0)
    # vs candidate 0: example 0 loses (rank 2 vs 1), example 1 wins (1 vs 2)
    assert beat_percent([1, 2], 0, REF_RANKS) == pytest.approx(50.0)
    # vs candidate 1: example 0 selects the baseline itself (tie), example 1 has equal rank 1 (tie)
    assert beat_percent([1, 2], [1, 1], REF_RANKS) == pytest.approx(50.0)
    assert beat_percent([1, 2], [1, 1], REF_RANKS, tie_value=0.0) == 0.0
    assert beat_percent([0, 3], [2, 0], REF_RANKS) == pytest.approx(50.0)  # win 1 + loss 0


def test_ranks_from_scores_share_ties():
    assert ranks_from_scores([0.5, 0.5, 0.1]).tolist() == [1, 1, 3]
    assert ranks_from_scores([0.0, 2.0, 1.0]).tolist() == [3, 1, 2]


def test_rank_metric_errors():
    with pytest.raises(ValueError, match=r"selected\[1\] must be a candidate index in \[0, 4\)"):
        gpt_rank([0, 4], REF_RANKS)
    with pytest.raises(ValueError, match="selected has 1 items but ref_ranks has 2"):
        top_k_percent([0], REF_RANKS)
    with pytest.raises(ValueError, match="k must be a positive int"):
        top_k_percent([0, 0], REF_RANKS, k=0)
    with pytest.raises(ValueError, match=r"baseline\[0\] must be a candidate index"):
        beat_percent([0, 0], [7, 0], REF_RANKS)
    with pytest.raises(ValueError, match=r"ref_ranks\[0\] is empty"):
        gpt_rank([0], [[]])


def test_rank_correlations_hand_computed():
    pred = [[1, 2, 3], [1, 2, 3, 4], [1, 1, 1]]
    ref = [[1, 3, 2], [1, 2, 3, 4], [1, 2, 3]]
    out = rank_correlations(pred, ref)
    # example 0: pearson = spearman = 0.5, kendall = (2 concordant - 1 discordant) / 3; example 1: all 1;
    # example 2 is constant: undefined, skipped for correlations but counted in the footrule.
    assert out["pearson"] == pytest.approx(0.75)
    assert out["spearman"] == pytest.approx(0.75)
    assert out["kendall"] == pytest.approx((1 / 3 + 1) / 2)
    assert out["footrule"] == pytest.approx((2 + 0 + 3) / 3)
    assert out["n_defined"] == 2
    only_constant = rank_correlations([[1, 1]], [[1, 2]])
    assert math.isnan(only_constant["pearson"]) and only_constant["n_defined"] == 0
    with pytest.raises(ValueError, match=r"pred_ranks\[0\] has 2 candidates but ref_ranks\[0\] has 3"):
        rank_correlations([[1, 2]], [[1, 2, 3]])


def test_partial_scores_with_every_pair_rank_like_full_matrix():
    rng = np.random.default_rng(0)
    c = rng.normal(size=(5, 5)).astype(np.float32)
    np.fill_diagonal(c, 0)
    pairs = [(i, j) for i in range(5) for j in range(i + 1, 5)]
    # every candidate met 4 others: max_logits differs by the constant n/(n-1), max_wins counts 4 games not 8
    assert partial_scores(c, pairs, "max_logits") == pytest.approx(
        scores_from_matrix(c, "max_logits") * 5 / 4, abs=1e-5
    )
    assert partial_scores(c, pairs, "max_wins") == pytest.approx(scores_from_matrix(c, "max_wins") * 2, abs=1e-6)
    # one observed pair: only those two candidates move, by ±(C[0,1] − C[1,0])
    one = partial_scores(c, [(0, 1)], "max_logits")
    d = float(c[0, 1] - c[1, 0])
    assert one == pytest.approx([d, -d, 0, 0, 0])


# ------------------------------------------------------------------------------------------------ with a model

PROMPTS = ["What is the capital of France?", "Write a poem about the sea."]
CANDS = [
    ["Paris.", "Berlin is the capital.", "I do not know.", "Paris is the capital of France."],
    ["The sea is blue and deep.", "No.", "Waves, waves, the water sings."],
]
SCORES = [[0.9, 0.1, 0.0, 1.0], [0.7, 0.0, 0.9]]


def test_pairwise_accuracy_uses_symmetric_margins_and_counts_ties(tiny_rm):
    rows = [
        {"prompt": PROMPTS[0], "chosen": CANDS[0][0], "rejected": CANDS[0][1], "subset": "x"},
        {"prompt": PROMPTS[1], "chosen": CANDS[1][0], "rejected": CANDS[1][1], "subset": "y"},
        {"prompt": PROMPTS[1], "chosen": "Same.", "rejected": "Same.", "subset": "y"},  # identical: exact tie
        {
            "prompt": [{"role": "user", "content": "hi"}],
            "chosen": [{"role": "assistant", "content": "hello!"}],
            "rejected": [{"role": "assistant", "content": "go away"}],
            "subset": "x",
        },
    ]
    out = pairwise_accuracy(tiny_rm, rows, section_map={"all": ["x", "y"]})
    expected = tiny_rm.compare(
        [r["prompt"] for r in rows[:3]], [r["chosen"] for r in rows[:3]], [r["rejected"] for r in rows[:3]]
    )
    conv = tiny_rm.compare_conversations(
        [rows[3]["prompt"] + rows[3]["chosen"]], [rows[3]["prompt"] + rows[3]["rejected"]]
    )
    margins = np.array([*expected, *conv])
    assert out["margins"] == pytest.approx(
        margins.tolist(), abs=1e-5
    )  # batches differ between the calls: float rounding only
    assert margins[2] == 0 and out["ties"] >= 1
    assert out["accuracy"] == pytest.approx(float(np.mean(margins > 0)))
    assert set(out["subsets"]) == {"x", "y"} and out["subsets"]["y"]["n"] == 2
    assert out["score"] == pytest.approx(out["accuracy"])  # one section covering everything


def test_selection_tradeoff_rows_and_invariants(tiny_rm):
    table = selection_tradeoff(tiny_rm, PROMPTS, CANDS, ref_scores=SCORES, budgets=(0.5, 1.0))
    by = {(r["aggregation"], r["budget"]): r for r in table}
    ranks = [ranks_from_scores(s) for s in SCORES]
    assert by[("random", 0.0)]["gpt_rank"] == pytest.approx(np.mean([r.mean() for r in ranks]))
    oracle = next(r for r in table if r["aggregation"] == "oracle")
    assert (
        oracle["gpt_rank"] == 1.0
        and oracle["top1_percent"] == 100.0
        and oracle["mean_ref_score"] == pytest.approx(0.95)
    )
    full = by[("max_logits", 1.0)]
    assert full["comparisons"] == pytest.approx((12 + 6) / 2)
    rankings = tiny_rm.rank_batch(PROMPTS, CANDS, aggregation="max_logits")
    selected = [int(np.argmin(r.ranks)) for r in rankings]
    assert full["gpt_rank"] == pytest.approx(gpt_rank(selected, ranks))
    assert by[("max_logits", 0.5)]["comparisons"] == pytest.approx(
        (2 * 3 + 2 * 2) / 2
    )  # round(0.5*6)=3, round(0.5*3)=2
    bubble = next(r for r in table if r["aggregation"] == "bubble")
    assert bubble["comparisons"] == pytest.approx((6 + 4) / 2)
    with pytest.raises(ValueError, match="exactly one of ref_scores"):
        selection_tradeoff(tiny_rm, PROMPTS, CANDS)
    with pytest.raises(ValueError, match=r"candidates\[1\] has 3"):
        selection_tradeoff(tiny_rm, PROMPTS, CANDS, ref_scores=[SCORES[0], [1.0, 2.0]])
    with pytest.raises(ValueError, match="budgets"):
        selection_tradeoff(tiny_rm, PROMPTS, CANDS, ref_scores=SCORES, budgets=(0,))


def test_plot_tradeoff_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    table = [
        {"aggregation": "random", "comparisons": 0.0, "gpt_rank": 2.5},
        {"aggregation": "max_logits", "comparisons": 6.0, "gpt_rank": 1.5},
        {"aggregation": "max_logits", "comparisons": 12.0, "gpt_rank": 1.2},
        {"aggregation": "oracle", "comparisons": float("nan"), "gpt_rank": 1.0},
    ]
    path = plot_tradeoff(table, tmp_path / "t.png")
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="top1_percent"):
        plot_tradeoff(table, tmp_path / "u.png", metric="top1_percent")


def test_eval_main_preference_and_ranking(tiny_hf_dir, tmp_path, capsys):
    pref = tmp_path / "pref.jsonl"
    pref.write_text(
        "\n".join(
            json.dumps({"prompt": p, "chosen": c[0], "rejected": c[1], "subset": "s"}) for p, c in zip(PROMPTS, CANDS)
        )
        + "\n"
    )
    out = tmp_path / "out.json"
    assert eval_main(["--model", str(tiny_hf_dir), "--data", str(pref), "--device", "cpu", "-o", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["n"] == 2 and "s" in result["subsets"]
    mix = tmp_path / "mix.jsonl"
    mix.write_text(
        "\n".join(
            json.dumps(
                {
                    "id": str(k),
                    "instruction": "",
                    "input": p,
                    "candidates": [{"text": t, "scores": {"bartscore": s}} for t, s in zip(c, sc)],
                }
            )
            for k, (p, c, sc) in enumerate(zip(PROMPTS, CANDS, SCORES))
        )
        + "\n"
    )
    capsys.readouterr()
    code = eval_main(
        [
            "--model",
            str(tiny_hf_dir),
            "--data",
            str(mix),
            "--task",
            "ranking",
            "--metric",
            "bartscore",
            "--device",
            "cpu",
            "--budgets",
            "1.0",
        ]
    )
    assert code == 0
    table = json.loads(capsys.readouterr().out)
    assert [r["aggregation"] for r in table] == ["random", "max_logits", "max_wins", "bubble", "oracle"]
    assert eval_main(["--model", str(tiny_hf_dir), "--data", str(tmp_path / "missing.jsonl")]) == 2
    assert "pairrm eval: error" in capsys.readouterr().err


def test_selection_tradeoff_takes_every_ranking_method(tiny_rm):
    from pairrm_hf.ranking.methods import RANKING_METHODS

    table = selection_tradeoff(tiny_rm, PROMPTS, CANDS, ref_scores=SCORES, aggregations=RANKING_METHODS, budgets=(1.0,))
    rows = {r["aggregation"]: r for r in table}
    assert set(RANKING_METHODS) <= set(rows)
    for method in ("reference", "sort", "knockout"):
        rankings = tiny_rm.rank_batch(PROMPTS, CANDS, aggregation=method)
        # each schedule's row reports the comparisons it spent and the pick its ranking makes
        assert rows[method]["comparisons"] == pytest.approx(np.mean([r.comparisons for r in rankings]))
        selected = [int(np.argmin(r.ranks)) for r in rankings]
        assert rows[method]["gpt_rank"] == pytest.approx(gpt_rank(selected, [ranks_from_scores(s) for s in SCORES]))
    with pytest.raises(ValueError, match="aggregations must be among"):
        selection_tradeoff(tiny_rm, PROMPTS, CANDS, ref_scores=SCORES, aggregations=("tournament",))
