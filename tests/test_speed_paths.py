"""Fast paths and budgeted schedules (issue #6): decisions and logits must not change. No timing here."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pairrm_hf import PairRM
from pairrm_hf.evaluation.metrics import kendall_tau
from pairrm_hf.ranking.schedules import max_sort_comparisons, merge_sort_rank

PROMPTS = ["What is the capital of France?", "Write a poem about the sea."]
CANDS = [
    ["Paris.", "Berlin is the capital", "the capital city of france is paris", "no", "maybe one two"],
    ["The sea is blue", "water water sea", "hello", "I like the sun and the moon", "red green blue sky", "yes"],
]
BIG = [
    f"answer {w} {k}"
    for k, w in enumerate("one two three four five six seven eight nine ten red blue green sky sun moon".split())
]


def _is_transitive_order(sym: np.ndarray, order: list[int]) -> bool:
    """True when every earlier candidate in ``order`` beats (or ties) every later one by the symmetric logit."""
    return all(sym[a, b] >= 0 for k, a in enumerate(order) for b in order[k + 1 :])


def test_sort_is_a_permutation_within_budget_and_matches_transitive_full_order(tiny_rm):
    rankings = tiny_rm.rank_batch([PROMPTS[0], PROMPTS[1], PROMPTS[0]], [CANDS[0], CANDS[1], BIG], aggregation="sort")
    matrices = tiny_rm.comparison_matrices([PROMPTS[0], PROMPTS[1], PROMPTS[0]], [CANDS[0], CANDS[1], BIG])
    transitive_seen = 0
    for ranking, matrix in zip(rankings, matrices):
        n = len(ranking.candidates)
        assert sorted(ranking.ranks.tolist()) == list(range(1, n + 1))
        assert 0 < ranking.comparisons <= max_sort_comparisons(n) <= n * math.ceil(math.log2(n)) * 2
        order = [int(i) for i in np.argsort(ranking.ranks)]
        sym = matrix - matrix.T
        # Copeland order (wins by symmetric logit) is the unique consistent order when the tournament is transitive.
        wins = (sym > 0).sum(axis=1)
        copeland = [int(i) for i in np.argsort(-wins, kind="stable")]
        if _is_transitive_order(sym, copeland) and len(set(wins.tolist())) == n:
            transitive_seen += 1
            assert order == copeland
    assert transitive_seen >= 1, "test data should contain at least one transitive case"


def test_sort_decisions_match_the_symmetric_logits_it_used(tiny_rm):
    examples = tiny_rm.engine.encode([PROMPTS[0]], [BIG])
    (result,) = merge_sort_rank(tiny_rm.engine, examples, [len(BIG)])
    (matrix,) = tiny_rm.comparison_matrices([PROMPTS[0]], [BIG])
    pos = {c: k for k, c in enumerate(result.order)}
    for (a, b), d in result.symmetric.items():
        assert d == pytest.approx(matrix[a, b] - matrix[b, a], abs=1e-5)
        if abs(d) > 1e-4:  # the winner of every comparison ends up ahead of the loser (merge sort invariant)
            assert (pos[a] < pos[b]) == (d > 0)
    assert result.comparisons == 2 * len(result.symmetric)


def test_sort_single_candidate_and_reference_aggregation(tiny_rm):
    (one,) = tiny_rm.rank_batch(["hi"], [["only"]], aggregation="sort")
    assert one.ranks.tolist() == [1] and one.comparisons == 0
    refs = tiny_rm.rank_with_ref(PROMPTS, CANDS)
    for ranking, reward in zip(tiny_rm.rank_batch(PROMPTS, CANDS, aggregation="reference"), refs):
        np.testing.assert_allclose(ranking.scores, reward.astype(np.float32))
        assert ranking.comparisons == 2 * len(ranking.candidates)


def test_results_do_not_depend_on_batch_size(tiny_hf_dir):
    outs = [
        np.concatenate(
            [
                m.ravel()
                for m in PairRM.from_pretrained(tiny_hf_dir, device="cpu", batch_size=b).comparison_matrices(
                    PROMPTS, CANDS
                )
            ]
        )
        for b in (1, 3, 64)
    ]
    assert max(float(np.abs(o - outs[0]).max()) for o in outs) <= 1e-5


def test_rank_materialises_at_most_one_batch_of_rows(tiny_hf_dir):
    rm = PairRM.from_pretrained(tiny_hf_dir, device="cpu", batch_size=5)
    rm.rank_batch([PROMPTS[0]], [BIG])
    stats = rm.engine.last_stats
    assert stats["rows"] == 16 * 15 and stats["max_batch_rows"] == 5


def test_bf16_autocast_runs_and_check_mode_reports_finite_differences(tiny_hf_dir):
    rm = PairRM.from_pretrained(tiny_hf_dir, device="cpu", batch_size=8, autocast_dtype="bf16")
    report = rm.check_precision(PROMPTS, CANDS)
    assert report.pairs == 5 * 4 + 6 * 5
    assert np.isfinite(report.max_abs_logit_diff) and 0 < report.max_abs_logit_diff < 1.0
    # The yardstick is fp32 with transformers' eager attention: the same settings give exactly zero, and the
    # default fused attention differs by float rounding only.
    eager = PairRM.from_pretrained(tiny_hf_dir, device="cpu", batch_size=8, attention="eager")
    exact = eager.check_precision(PROMPTS, CANDS)
    assert exact.max_abs_logit_diff == 0.0 and exact.decisions_unchanged
    fused = PairRM.from_pretrained(tiny_hf_dir, device="cpu", batch_size=8).check_precision(PROMPTS, CANDS)
    assert fused.max_abs_logit_diff <= 1e-5 and fused.decisions_unchanged


def test_reference_logits_use_fp32_even_for_bf16_weights(tiny_hf_dir):
    rm = PairRM.from_pretrained(tiny_hf_dir, device="cpu", dtype="bfloat16")
    examples = rm.engine.encode(PROMPTS, CANDS)
    ref = rm.engine.reference_pair_logits(examples, [(0, 0, 1), (1, 2, 3)])
    fp32 = PairRM.from_pretrained(tiny_hf_dir, device="cpu")
    exact = fp32.engine.pair_logits(fp32.engine.encode(PROMPTS, CANDS), [(0, 0, 1), (1, 2, 3)])
    np.testing.assert_allclose(ref, exact, atol=1e-2)  # weights were rounded to bf16 once; the run is fp32
    assert (
        next(rm.model.parameters()).dtype.is_floating_point
        and str(next(rm.model.parameters()).dtype) == "torch.bfloat16"
    )


def test_kendall_tau_hand_values():
    assert kendall_tau([1, 2, 3], [1, 2, 3]) == 1.0
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == -1.0
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    with pytest.raises(ValueError, match="same length"):
        kendall_tau([1, 2], [1, 2, 3])


def test_unknown_aggregation_names_the_choices(tiny_rm):
    with pytest.raises(ValueError, match="sort"):
        tiny_rm.rank_batch(PROMPTS, CANDS, aggregation="quick")


@pytest.mark.slow
def test_compile_path_matches_eager(tiny_hf_dir):
    # Slow: the first torch.compile call takes ~1 min on a 2-core CPU.
    rm = PairRM.from_pretrained(tiny_hf_dir, device="cpu", batch_size=4, compile=True)
    report = rm.check_precision(PROMPTS, CANDS)
    assert report.max_abs_logit_diff <= 1e-4 and report.decisions_unchanged
    assert "_orig_mod" not in "".join(rm.model.state_dict())  # the compiled backbone is swapped in per call only
