"""The fused disentangled attention (pairrm_hf.models.attention) against transformers' eager module: same numbers."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from transformers import DebertaV2Config
from transformers.models.deberta_v2.modeling_deberta_v2 import DebertaV2Model, DisentangledSelfAttention

from pairrm_hf import PairRM
from pairrm_hf.models.attention import PairRMSelfAttention, set_attention_implementation
from pairrm_hf.models.modeling_pairrm import DebertaV2PairRM

# Relative-attention variants of DeBERTa-v2/v3 configs. Small bucket counts with a short max distance put rows of
# ~100 tokens into the log-bucket and clamped ranges, not only the linear band near the diagonal.
VARIANTS = {
    "v3 (PairRM)": {},
    "separate position projections": {"share_att_key": False},
    "c2p only": {"pos_att_type": ["c2p"]},
    "p2c only": {"pos_att_type": ["p2c"]},
    "log buckets": {"position_buckets": 8, "max_relative_positions": 40},
    "no buckets": {"position_buckets": -1, "max_relative_positions": 24},
    "no relative attention": {"relative_attention": False, "position_biased_input": True},
}


def _config(**overrides) -> DebertaV2Config:
    fields = dict(
        vocab_size=60,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        relative_attention=True,
        position_buckets=16,
        max_relative_positions=-1,
        norm_rel_ebd="layer_norm",
        share_att_key=True,
        pos_att_type=["p2c", "c2p"],
        position_biased_input=False,
        type_vocab_size=0,
        initializer_range=0.2,
        max_position_embeddings=256,
    )
    fields.update(overrides)
    return DebertaV2Config(**fields)


def _ragged_batch(lengths: list[int], vocab: int = 60, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (len(lengths), max(lengths)), generator=gen)
    mask = torch.zeros_like(ids)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
    return ids * mask, mask


@pytest.mark.parametrize("tiles", ["small", "two rows", "whole batch"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_fused_backbone_matches_eager_on_real_tokens(variant, tiles):
    torch.manual_seed(0)
    eager = DebertaV2Model(_config(**VARIANTS[variant])).eval()
    fused = copy.deepcopy(eager)
    assert set_attention_implementation(fused, "fused") == 2
    for layer in fused.encoder.layer:
        # "small": several query blocks per row with a ragged last one (the CPU path for long rows); "two rows":
        # whole rows, two per tile, the last tile ragged (CPU, short rows); "whole batch": one tile for all rows
        # and queries (the GPU path).
        sizes = {"small": 4 * 4 * 97, "two rows": 2 * 4 * 97 * 97, "whole batch": None}
        layer.attention.self.tile_elements = sizes[tiles]
    ids, mask = _ragged_batch([97, 61, 12])
    with torch.inference_mode():
        want = eager(input_ids=ids, attention_mask=mask).last_hidden_state
        got = fused(input_ids=ids, attention_mask=mask).last_hidden_state
    real = mask.bool()
    assert torch.allclose(got[real], want[real], atol=1e-5, rtol=1e-5)
    assert torch.isfinite(got).all()  # padded query rows stay finite, so they never poison later layers


def test_short_rows_with_large_heads_take_the_export_forward_on_cpu():
    """The measured per-shape choice: head size 64 on CPU runs the whole-tensor export forward below
    ``cpu_export_below_length`` tokens and the tiles from there on; small heads run the tiles at every length. Both
    choices give eager's numbers, and the switch is what runs: the export forward is seen to be called."""
    from pairrm_hf.models import attention as attention_module

    torch.manual_seed(0)
    eager = DebertaV2Model(_config(hidden_size=128, num_attention_heads=2, intermediate_size=128)).eval()
    fused = copy.deepcopy(eager)
    set_attention_implementation(fused, "fused")
    module = fused.encoder.layer[0].attention.self
    assert module.attention_head_size == 64 and module.cpu_export_below_length == 128
    with torch.inference_mode():
        assert module.runs_fused(torch.zeros(2, 127, 128)) and module.runs_export(torch.zeros(2, 127, 128))
        assert module.runs_fused(torch.zeros(2, 128, 128)) and not module.runs_export(torch.zeros(2, 128, 128))
        small_heads = DebertaV2Model(_config(hidden_size=128, num_attention_heads=8, intermediate_size=128)).eval()
        set_attention_implementation(small_heads, "fused")
        assert not small_heads.encoder.layer[0].attention.self.runs_export(torch.zeros(2, 12, 128))  # head size 16
        module.cpu_export_below_length = 0
        assert not module.runs_export(torch.zeros(2, 12, 128))
        module.cpu_export_below_length = 128
    assert not module.runs_fused(torch.zeros(2, 300, 128))  # gradients on: always eager
    calls = []
    real_export = attention_module.export_attention

    def counting(*args, **kwargs):
        calls.append(args[0].size(2))
        return real_export(*args, **kwargs)

    attention_module.export_attention = counting
    try:
        ids, mask = _ragged_batch([97, 61, 12])
        with torch.inference_mode():
            fused(input_ids=ids, attention_mask=mask)
            assert calls == [97, 97]  # both layers, the short batch
            ids, mask = _ragged_batch([150, 131, 40])
            fused(input_ids=ids, attention_mask=mask)
            assert calls == [97, 97]  # the long batch took the tiles
    finally:
        attention_module.export_attention = real_export
    for lengths in ([97, 61, 12], [150, 131, 40]):
        ids, mask = _ragged_batch(lengths)
        with torch.inference_mode():
            want = eager(input_ids=ids, attention_mask=mask).last_hidden_state
            got = fused(input_ids=ids, attention_mask=mask).last_hidden_state
        real = mask.bool()
        # head size 64: longer dot products than the tiny heads above, so rounding reaches ~2e-5 on outputs of ~4
        assert torch.allclose(got[real], want[real], atol=1e-4, rtol=1e-5)


def test_swap_keeps_parameters_and_state_dict():
    torch.manual_seed(0)
    model = DebertaV2Model(_config())
    before = {k: v for k, v in model.state_dict().items()}
    set_attention_implementation(model, "fused")
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(after[k].data_ptr() == before[k].data_ptr() for k in before)  # the very same tensors, not copies
    assert all(isinstance(layer.attention.self, PairRMSelfAttention) for layer in model.encoder.layer)


def test_training_and_attention_maps_take_the_eager_path_exactly():
    torch.manual_seed(0)
    config = _config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    eager = DebertaV2Model(config)
    fused = copy.deepcopy(eager)
    set_attention_implementation(fused, "fused")
    ids, mask = _ragged_batch([40, 25])
    eager.train(), fused.train()
    out_e = eager(input_ids=ids, attention_mask=mask).last_hidden_state
    out_f = fused(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.equal(out_e, out_f)  # bit-identical: the same code ran
    out_f.sum().backward()
    assert fused.encoder.layer[0].attention.self.query_proj.weight.grad is not None
    fused.eval()
    with torch.enable_grad():  # eval with gradients on: eager too, so autograd works
        grad_out = fused(input_ids=ids, attention_mask=mask).last_hidden_state
    assert grad_out.requires_grad
    maps = fused(input_ids=ids, attention_mask=mask, output_attentions=True).attentions
    assert len(maps) == config.num_hidden_layers and maps[0].shape == (2, 4, 40, 40)


def test_pairrm_defaults_to_fused_and_switches(make_tiny_pairrm):
    model = DebertaV2PairRM.from_pretrained(make_tiny_pairrm())
    assert model.attention_implementation == "fused"
    layers = [layer.attention.self for layer in model.pretrained_model.encoder.layer]
    assert all(isinstance(m, PairRMSelfAttention) and m.implementation == "fused" for m in layers)
    with model.use_attention("eager"):
        assert all(m.implementation == "eager" for m in layers) and model.attention_implementation == "eager"
    assert all(m.implementation == "fused" for m in layers)
    with pytest.raises(ValueError, match="attention must be one of"):
        model.set_attention_implementation("flash")


def test_engine_logits_agree_between_attention_paths(tiny_hf_dir):
    prompts = ["What is the capital of France?", "Write a haiku about the sea, please, with some words " * 6]
    cands = [
        ["Paris.", "Berlin is the capital", "the capital city of france is paris " * 5],
        ["waves", "the sea is blue and deep " * 9, "salt and foam", "no"],
    ]
    fused = PairRM.from_pretrained(tiny_hf_dir, device="cpu", batch_size=3)
    eager = PairRM.from_pretrained(tiny_hf_dir, device="cpu", batch_size=3, attention="eager")
    assert eager.engine.model.attention_implementation == "eager"
    for want, got in zip(eager.comparison_matrices(prompts, cands), fused.comparison_matrices(prompts, cands)):
        np.testing.assert_allclose(got, want, atol=1e-5)
    # The precision check compares against transformers' eager attention in fp32.
    report = fused.check_precision(prompts, cands)
    assert 0 < report.max_abs_logit_diff <= 1e-5 and report.decisions_unchanged


def test_plain_disentangled_module_is_replaced_not_subclassed_twice():
    torch.manual_seed(0)
    model = DebertaV2Model(_config())
    assert type(model.encoder.layer[0].attention.self) is DisentangledSelfAttention
    assert set_attention_implementation(model, "eager") == 2
    assert set_attention_implementation(model, "fused") == 2
    assert all(type(layer.attention.self) is PairRMSelfAttention for layer in model.encoder.layer)
