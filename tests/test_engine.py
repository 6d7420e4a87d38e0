"""The one engine: batch-size and order invariance, dynamic padding, symmetric invariants, row dedup."""

from __future__ import annotations

import numpy as np

from pairrm_hf import PairRM

PROMPTS = [
    "What is the capital of France?",
    "Write a short poem about the sea.",
    "Explain " + "why the sky is blue and the sea is wide " * 30,
    "hi",
]
CANDIDATES = [
    ["Paris.", "Berlin is the capital.", "I don't know.", "Paris, of course. " * 20],
    ["Waves.", "The sea is wide, the sea is deep.", ""],
    ["Because of Rayleigh scattering. " * 10, "No idea."],
    ["hello!", "go away", "hello!", "Hi there, how can I help you today?", "bye"],
]


def test_batch_size_and_order_do_not_change_results(tiny_hf_dir):
    ref = PairRM.from_pretrained(tiny_hf_dir, device="cpu", batch_size=64).comparison_matrices(PROMPTS, CANDIDATES)
    for batch_size in (1, 3):
        rm = PairRM.from_pretrained(tiny_hf_dir, device="cpu", batch_size=batch_size, max_batch_tokens=600)
        for got, want in zip(rm.comparison_matrices(PROMPTS, CANDIDATES), ref):
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    order = [3, 1, 0, 2]
    rm = PairRM.from_pretrained(tiny_hf_dir, device="cpu", batch_size=5)
    shuffled = rm.comparison_matrices([PROMPTS[k] for k in order], [CANDIDATES[k] for k in order])
    for k, got in zip(order, shuffled):
        np.testing.assert_allclose(got, ref[k], atol=1e-5, rtol=0)


def test_dynamic_padding_and_length_buckets(tiny_rm):
    tiny_rm.comparison_matrices(PROMPTS, CANDIDATES)
    stats = tiny_rm.engine.last_stats
    n_pairs = sum(len(c) * (len(c) - 1) for c in CANDIDATES)
    assert stats["rows"] < n_pairs  # duplicate texts ("hello!" twice) share rows
    longest = max(
        len(tiny_rm.engine.encoder.encode_pair(p, c[i], c[j]))
        for p, c in zip(PROMPTS, CANDIDATES)
        for i in range(len(c))
        for j in range(len(c))
    )
    # batches hold rows of similar length: far less padding than padding every row to the longest (or to 2048)
    assert stats["padded_tokens"] < 0.5 * longest * stats["rows"]
    assert stats["padded_tokens"] >= stats["real_tokens"]


def test_symmetric_logit_is_antisymmetric_and_zero_on_identical(tiny_rm):
    a, b = [c[0] for c in CANDIDATES], [c[1] for c in CANDIDATES]
    ab = tiny_rm.compare(PROMPTS, a, b)
    ba = tiny_rm.compare(PROMPTS, b, a)
    # Swapping A and B negates the symmetric logit; the two calls batch their rows differently (float rounding).
    np.testing.assert_allclose(ab, -ba, atol=1e-5)
    assert (tiny_rm.compare(PROMPTS, a, a) == 0).all()
    single = tiny_rm.compare(PROMPTS, a, b, mode="ab")
    flipped = tiny_rm.compare(PROMPTS, b, a, mode="ba")
    np.testing.assert_allclose(single, -flipped, atol=1e-5)


def test_rank_scores_follow_the_matrix(tiny_rm):
    rankings = tiny_rm.rank_batch(PROMPTS, CANDIDATES)
    for ranking, cands in zip(rankings, CANDIDATES):
        m = ranking.matrix
        n = len(cands)
        np.testing.assert_allclose(ranking.scores, (m - m.T).sum(1) / n, atol=1e-6)
        assert ranking.ranks.min() == 1 and ranking.comparisons == n * (n - 1)
        best = [r for r in ranking.ranked()][0]
        assert best.score == ranking.scores.max()
    dup = rankings[3]
    assert dup.scores[0] == dup.scores[2] and dup.ranks[0] == dup.ranks[2]  # duplicate candidates tie exactly


def test_single_candidate_needs_no_forward(tiny_rm):
    ranked = tiny_rm.rank("prompt", ["only"])
    assert ranked[0].rank == 1 and ranked[0].score == 0.0
    assert tiny_rm.engine.last_stats["forward_calls"] == 0


def test_rank_api_top_k_and_typed_results(tiny_rm):
    full = tiny_rm.rank(PROMPTS[0], CANDIDATES[0])
    assert [r.rank for r in full] == sorted(r.rank for r in full)
    assert sorted(r.index for r in full) == list(range(len(CANDIDATES[0])))
    assert all(r.text == CANDIDATES[0][r.index] for r in full)
    assert tiny_rm.rank(PROMPTS[0], CANDIDATES[0], top_k=2) == full[:2]


def test_bubble_is_seeded_and_batch_independent(tiny_rm):
    one = tiny_rm.best_of_n(PROMPTS, CANDIDATES, method="bubble", seed=3)
    again = tiny_rm.best_of_n(PROMPTS, CANDIDATES, method="bubble", seed=3)
    alone = [tiny_rm.best_of_n([p], [c], method="bubble", seed=3)[0] for p, c in zip(PROMPTS, CANDIDATES)]
    assert one == again == alone


def test_max_wins_and_proba(tiny_rm):
    rankings = tiny_rm.rank_batch(PROMPTS[:2], CANDIDATES[:2], aggregation="max_wins")
    for r in rankings:
        assert ((r.scores >= 0) & (r.scores <= 1)).all()
    p = tiny_rm.compare_proba(PROMPTS, [c[0] for c in CANDIDATES], [c[1] for c in CANDIDATES], temperature=2.0)
    q = tiny_rm.compare_proba(PROMPTS, [c[1] for c in CANDIDATES], [c[0] for c in CANDIDATES], temperature=2.0)
    np.testing.assert_allclose(p + q, 1.0, atol=1e-5)


def test_default_token_budget_cuts_long_batches_on_cpu(tiny_hf_dir, monkeypatch):
    from pairrm_hf.ranking import engine as engine_module

    unlimited = PairRM.from_pretrained(tiny_hf_dir, device="cpu", batch_size=64, max_batch_tokens=None)
    assert unlimited.engine.max_batch_tokens is None
    want = unlimited.comparison_matrices(PROMPTS, CANDIDATES)
    rows_unlimited = unlimited.engine.last_stats["max_batch_rows"]

    rm = PairRM.from_pretrained(tiny_hf_dir, device="cpu", batch_size=64)
    assert rm.engine.options.max_batch_tokens == "auto"
    assert rm.engine.max_batch_tokens == engine_module.DEFAULT_MAX_BATCH_TOKENS["cpu"]
    # a budget the tiny rows exceed, so "auto" must cut the batches the unlimited engine ran whole
    monkeypatch.setitem(engine_module.DEFAULT_MAX_BATCH_TOKENS, "cpu", 300)
    assert rm.engine.max_batch_tokens == 300
    got = rm.comparison_matrices(PROMPTS, CANDIDATES)
    stats = rm.engine.last_stats
    assert stats["max_batch_rows"] < rows_unlimited
    assert stats["forward_calls"] > unlimited.engine.last_stats["forward_calls"]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-5, rtol=0)
    assert engine_module.default_max_batch_tokens("cuda") is None  # no device-measured budget on CUDA yet


def test_max_batch_tokens_rejects_bad_values(tiny_hf_dir):
    import pytest

    for bad in (0, -5, "big", True, 2.5):
        with pytest.raises(ValueError, match="max_batch_tokens"):
            PairRM.from_pretrained(tiny_hf_dir, device="cpu", max_batch_tokens=bad)
