"""The traceable attention (``attention="export"``) the OpenVINO backend converts: eager's numbers, dynamic shapes."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from transformers.models.deberta_v2.modeling_deberta_v2 import DebertaV2Model

from pairrm_hf import PairRM
from pairrm_hf.models.attention import PairRMSelfAttention, set_attention_implementation
from pairrm_hf.ranking import openvino_backend
from pairrm_hf.ranking.openvino_backend import load_openvino_backbone, openvino_available
from tests.test_attention import VARIANTS, _config, _ragged_batch

needs_openvino = pytest.mark.skipif(
    not openvino_available(), reason="openvino is not installed (pip install 'pairrm-hf[openvino]')"
)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # the trace freezes shapes the test never varies
@pytest.mark.parametrize("heads_per_group", [None, 1, 3])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_export_backbone_matches_eager_on_padded_batches(variant, heads_per_group, monkeypatch):
    """c2p and p2c, each alone, none, separate position projections, log buckets, no buckets: long rows reach every
    position bucket and short rows only a few (the position tables are cut to those), both padded. The 4 heads
    scored at once, one at a time, and in uneven groups (3 + 1) give eager's numbers, run as traced (the grouping
    applies only to a trace: torch itself runs every head at once)."""
    monkeypatch.setattr(PairRMSelfAttention, "export_heads_per_group", heads_per_group)
    torch.manual_seed(0)
    eager = DebertaV2Model(_config(**VARIANTS[variant])).eval()
    export = copy.deepcopy(eager)
    assert set_attention_implementation(export, "export") == 2
    for lengths in ([97, 61, 12], [9, 5, 3]):
        ids, mask = _ragged_batch(lengths)
        with torch.inference_mode():
            want = eager(input_ids=ids, attention_mask=mask).last_hidden_state
            got = export(input_ids=ids, attention_mask=mask).last_hidden_state
        with torch.no_grad():
            traced = torch.jit.trace(_LastHidden(export), (ids, mask), check_trace=False)(ids, mask)
        real = mask.bool()
        assert torch.allclose(got[real], want[real], atol=1e-5, rtol=1e-5), (variant, lengths)
        assert torch.allclose(traced[real], want[real], atol=1e-5, rtol=1e-5), (variant, lengths, "traced")
        assert torch.isfinite(got).all()  # padded query rows stay finite, so they never poison later layers


class _LastHidden(torch.nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, ids, mask):
        return self.backbone(input_ids=ids, attention_mask=mask).last_hidden_state


def _hidden(backbone, ids, mask) -> np.ndarray:
    with torch.inference_mode():
        return backbone(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()


def _op_count(stand_in, kind: str) -> int:
    import openvino

    model = openvino.Core().read_model(str(stand_in.cache_entry / "backbone.xml"))
    return sum(op.get_type_name() == kind for op in model.get_ordered_ops())


def _op_types(stand_in) -> set[str]:
    """The operation types of the converted model saved in ``stand_in``'s cache entry."""
    import openvino

    model = openvino.Core().read_model(str(stand_in.cache_entry / "backbone.xml"))
    return {op.get_type_name() for op in model.get_ordered_ops()}


@pytest.mark.slow
@needs_openvino
def test_one_conversion_serves_every_batch_shape_and_matches_eager(tiny_hf_dir, tmp_path):
    """Converted once (traced on a 2 × 24 example), run at two other padded shapes: a few short rows (a part of the
    position table) and longer rows (more of it). The eager graph stays selectable and converts to its own entry."""
    torch.manual_seed(0)
    backbone = PairRM.from_pretrained(tiny_hf_dir, backend="torch").engine.model.pretrained_model
    reference = copy.deepcopy(backbone)
    set_attention_implementation(reference, "eager")
    batches = [_ragged_batch([11, 7, 3], vocab=4000, seed=1), _ragged_batch([150, 90], vocab=4000, seed=2)]
    stand_in = load_openvino_backbone(backbone, cache_dir=tmp_path, release_torch_weights=False)
    for ids, mask in batches:
        got = stand_in(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
        want = _hidden(reference, ids, mask)
        real = mask.bool().numpy()
        assert got.shape == want.shape
        np.testing.assert_allclose(got[real], want[real], atol=1e-5, rtol=0)
    # eager's gathers go through [B, H, L, L] int64 index tensors (GatherElements); the export graph has none
    ops = _op_types(stand_in)
    assert "GatherElements" not in ops and "Gather" in ops
    assert "ScaledDotProductAttention" in ops  # scaled_dot_product_attention became OpenVINO's op
    # the trace scored the heads a group at a time: one attention op per group per layer
    config = backbone.config
    groups = -(
        -config.num_attention_heads // (PairRMSelfAttention.export_heads_per_group or config.num_attention_heads)
    )
    assert _op_count(stand_in, "ScaledDotProductAttention") == config.num_hidden_layers * groups
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(openvino_backend, "CONVERTED_ATTENTION", "eager")
        eager_graph = load_openvino_backbone(backbone, cache_dir=tmp_path, release_torch_weights=False)
    assert eager_graph.cache_entry != stand_in.cache_entry
    assert "GatherElements" in _op_types(eager_graph)
    ids, mask = batches[1]
    real = mask.bool().numpy()
    got = eager_graph(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
    np.testing.assert_allclose(got[real], _hidden(reference, ids, mask)[real], atol=1e-5, rtol=0)


@needs_openvino
def test_the_cache_key_names_the_converted_graph_and_its_version(tiny_hf_dir, monkeypatch):
    """An entry converted from another graph (eager, an older export forward, another head grouping) is never
    reused."""
    backbone = PairRM.from_pretrained(tiny_hf_dir, backend="torch").engine.model.pretrained_model
    key = openvino_backend._weights_key
    export = key(backbone, "fp32", "export")
    assert key(backbone, "fp32") == export  # the default graph
    assert key(backbone, "fp32", "eager") != export
    monkeypatch.setitem(openvino_backend.GRAPH_VERSIONS, "export", "export-next")
    assert key(backbone, "fp32", "export") != export
    monkeypatch.undo()
    monkeypatch.setattr(PairRMSelfAttention, "export_heads_per_group", 1)
    assert key(backbone, "fp32", "export") != export  # another head grouping traces another graph
    monkeypatch.setattr(openvino_backend, "CONVERTED_ATTENTION", "eager")
    assert key(backbone, "fp32") == key(backbone, "fp32", "eager")
