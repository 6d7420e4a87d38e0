"""Packed rows (``packing=True``): a batch's pairs laid end to end in one sequence, each attending only to itself.

The yardstick is the unpacked model on the same rows (padded batches, itself held to the oracle elsewhere): packed
logits must equal it to our 1e-5 tolerance, with the fused attention per segment and with flex over the whole
sequence, for the configurations DeBERTa allows (log-bucketed or plain relative positions, c2p/p2c terms, absolute
positions)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pairrm_hf import PairRM
from pairrm_hf.models.attention import PairRMSelfAttention
from pairrm_hf.models.flex_attention import _segment_mask, flex_available, packed_length
from pairrm_hf.models.modeling_pairrm import DebertaV2PairRM
from pairrm_hf.models.packing import PackedLayout, pack_rows
from pairrm_hf.ranking.engine import check_packing
from pairrm_hf.tokenization.padding import pad_rows
from tests.test_attention import _config
from tests.test_flex_attention import CANDIDATES, PROMPTS, _use_uncompiled_flex

PREFIXES = (55, 56, 57)  # source, candidate 1, candidate 2 (inside _config's 60-token vocabulary)


def _pairrm(**overrides) -> DebertaV2PairRM:
    torch.manual_seed(0)
    config = _config(
        source_prefix_id=PREFIXES[0], cand1_prefix_id=PREFIXES[1], cand2_prefix_id=PREFIXES[2], **overrides
    )
    return DebertaV2PairRM(config).eval()


def _rows(lengths: list[int], seed: int = 0) -> list[list[int]]:
    """PairRM-shaped rows: ``[CLS] src … [SEP] [CLS] c1 … [SEP] [CLS] c2 … [SEP]`` of about these lengths."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for n in lengths:
        body = torch.randint(3, 50, (max(n - 9, 0),), generator=gen).tolist()
        a, b = len(body) // 3, 2 * len(body) // 3
        s, c1, c2 = PREFIXES
        rows.append([1, s, *body[:a], 2, 1, c1, *body[a:b], 2, 1, c2, *body[b:], 2])
    return rows


def _unpacked(model: DebertaV2PairRM, rows: list[list[int]]) -> torch.Tensor:
    ids, mask = pad_rows(rows, 0, max(map(len, rows)))
    with torch.inference_mode():
        return model(input_ids=ids, attention_mask=mask).logits


def _packed(model: DebertaV2PairRM, rows: list[list[int]]) -> torch.Tensor:
    ids, layout = pack_rows(rows)
    with torch.inference_mode():
        return model.packed_logits(ids, layout)


def test_pack_rows_lays_rows_end_to_end():
    ids, layout = pack_rows([[7, 8, 9], [4], [5, 6]])
    assert ids.tolist() == [[7, 8, 9, 4, 5, 6]]
    assert layout == PackedLayout(starts=(0, 3, 4), lengths=(3, 1, 2))
    assert layout.total == 6 and layout.spans() == [(0, 3), (3, 4), (4, 6)]
    assert layout.segment_ids().tolist() == [0, 0, 0, 1, 2, 2]
    assert layout.positions().tolist() == [[0, 1, 2, 0, 0, 1]]
    with pytest.raises(ValueError, match="row 1 is empty"):
        pack_rows([[1, 2], []])


# segments longer than the 16-bucket span (log-bucketed offsets) and than flex's 128-token blocks, one very short
LENGTHS = [150, 12, 300, 40, 9]
CONFIGS = {
    "v3 (log buckets, c2p+p2c)": {},
    "plain relative positions": {"position_buckets": -1, "max_relative_positions": 64},
    "c2p only, separate position keys": {"pos_att_type": ["c2p"], "share_att_key": False},
    "absolute positions, no relative attention": {
        "relative_attention": False,
        "position_biased_input": True,
        "max_position_embeddings": 512,
    },
}


@pytest.mark.parametrize("overrides", CONFIGS.values(), ids=CONFIGS.keys())
@pytest.mark.parametrize("attention", ["fused", "flex"])
def test_packed_logits_equal_the_unpacked_rows(overrides, attention):
    model = _pairrm(**overrides)
    rows = _rows(LENGTHS)
    model.set_attention_implementation("eager")
    want = _unpacked(model, rows)
    model.set_attention_implementation(attention)
    for module in model.modules():
        if isinstance(module, PairRMSelfAttention):
            module.flex_compiled = False  # PyTorch's reference of the flex kernel: exact, no compiler needed
    got = _packed(model, rows)
    assert got.shape == (len(rows),)
    assert torch.allclose(got, want, atol=1e-5, rtol=0), (got - want).abs().max()
    # a segment sees only itself: changing another row's tokens leaves its logit alone
    rows[1] = _rows([12], seed=5)[0]
    again = _packed(model, rows)
    others = [0, 2, 3, 4]
    assert torch.allclose(again[others], got[others], atol=1e-6, rtol=0)
    assert not torch.isclose(again[1], got[1])


def test_packed_sequences_compile_one_flex_graph_per_power_of_two():
    assert [packed_length(n) for n in (1, 64, 65, 300, 1024, 1025, 20000)] == [64, 64, 128, 512, 1024, 2048, 32768]
    assert len({packed_length(n) for n in range(1, 32769)}) == 10


@pytest.mark.skipif(not flex_available(), reason="FlexAttention is not available in this torch")
def test_segment_block_mask_matches_the_element_mask():
    from torch.nn.attention.flex_attention import create_block_mask

    layout = pack_rows(_rows([150, 12, 300, 40]))[1]
    length = 640  # padded past the real 502 tokens, as flex pads
    segments = torch.cat([layout.segment_ids(), torch.full((length - layout.total,), 4, dtype=torch.int32)])
    ours = _segment_mask(segments, 4, length)
    want = create_block_mask(ours.mask_mod, 1, 1, length, length, device="cpu")
    assert torch.equal(ours.to_dense(), want.to_dense())
    assert torch.equal(ours.full_kv_num_blocks, want.full_kv_num_blocks)
    assert int(ours.full_kv_num_blocks.sum()) > 0  # the 300-token segment holds whole blocks: no element mask there


@pytest.mark.parametrize("attention", ["fused", "flex"])
def test_packing_ranks_like_the_padded_engine(tiny_hf_dir, attention):
    padded = PairRM.from_pretrained(tiny_hf_dir, device="cpu", batch_size=3, backend="torch")
    packed = PairRM.from_pretrained(tiny_hf_dir, device="cpu", batch_size=3, packing=True, attention=attention)
    _use_uncompiled_flex(packed)
    assert packed.engine.backend == "torch" and packed.engine.packing  # auto picks torch for packing
    want = padded.comparison_matrices(PROMPTS, CANDIDATES)
    got = packed.comparison_matrices(PROMPTS, CANDIDATES)
    for g, w in zip(got, want):
        assert np.abs(g - w).max() <= 1e-5
    stats = packed.engine.last_stats
    assert stats["padded_tokens"] == stats["real_tokens"] and stats["rows"] == sum(
        len(c) * (len(c) - 1) for c in CANDIDATES
    )
    assert padded.engine.last_stats["padded_tokens"] > padded.engine.last_stats["real_tokens"]


def test_packed_batches_hold_batch_size_rows_and_the_token_budget(tiny_hf_dir):
    rm = PairRM.from_pretrained(tiny_hf_dir, device="cpu", batch_size=4, max_batch_tokens=6, packing=True)
    lengths = np.array([3, 5, 1, 3, 2, 7, 1, 1, 1, 1, 1])
    batches = rm.engine._batches(lengths, packed=True)
    assert [lengths[b].tolist() for b in batches] == [[7], [5], [3, 3], [2, 1, 1, 1], [1, 1, 1]]
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))


def test_packing_refuses_what_it_cannot_run(tiny_hf_dir):
    with pytest.raises(ValueError, match="backend='openvino' cannot pack"):
        PairRM.from_pretrained(tiny_hf_dir, device="cpu", packing=True, backend="openvino")
    with pytest.raises(ValueError, match="drop compile=True"):
        PairRM.from_pretrained(tiny_hf_dir, device="cpu", packing=True, compile=True)
    with pytest.raises(ValueError, match="convolution layer"):
        check_packing(_pairrm(conv_kernel_size=3), "auto", compile=False)
    model = _pairrm()
    ids, layout = pack_rows(_rows([20, 30]))
    with pytest.raises(ValueError, match="inference mode only"):
        model.packed_logits(ids, layout)  # gradients on
    with pytest.raises(ValueError, match=r"input_ids must be \[1, 50\]"), torch.inference_mode():
        model.packed_logits(ids[:, :40], layout)
    rows = _rows([20, 30])
    rows[1] = [t for t in rows[1] if t != PREFIXES[1]]  # the second row lost its candidate-1 prefix
    ids, layout = pack_rows(rows)
    with pytest.raises(ValueError, match=r"packed segment 1: must contain exactly one .*candidate1=0"):
        with torch.inference_mode():
            model.packed_logits(ids, layout)


@pytest.mark.slow
@pytest.mark.skipif(not flex_available(), reason="FlexAttention is not available in this torch")
def test_compiled_flex_packing_matches_and_counts_its_compiles(tiny_hf_dir):
    padded = PairRM.from_pretrained(tiny_hf_dir, device="cpu", batch_size=8, backend="torch")
    packed = PairRM.from_pretrained(tiny_hf_dir, device="cpu", batch_size=8, packing=True, attention="flex")
    want = padded.comparison_matrices(PROMPTS, CANDIDATES)
    got = packed.comparison_matrices(PROMPTS, CANDIDATES)
    for g, w in zip(got, want):
        assert np.abs(g - w).max() <= 1e-5
    stats = packed.engine.last_stats
    assert packed.engine.model.attention_implementation == "flex"
    assert 1 <= stats["flex_compiles"] <= stats["forward_calls"]  # one graph per padded packed length at most
