"""DebertaV2PairRM: checkpoint keys, backbone initialisation, forward contract, dtypes, loss."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModel, DebertaV2Config

from pairrm_hf import DebertaV2PairRM, PairRM

PUBLISHED_HEAD_KEYS = {"head_layer.1.weight", "head_layer.1.bias", "head_layer.4.weight", "head_layer.4.bias"}


def test_state_dict_keys_are_the_published_ones(tiny_hf_dir):
    with safe_open(str(tiny_hf_dir / "model.safetensors"), "pt") as f:
        file_keys = set(f.keys())
    model = DebertaV2PairRM.from_pretrained(tiny_hf_dir)
    assert set(model.state_dict()) == file_keys
    assert PUBLISHED_HEAD_KEYS <= file_keys
    assert all(k.startswith("pretrained_model.") for k in file_keys - PUBLISHED_HEAD_KEYS)
    assert model.config.n_tasks == 1 and model.config.drop_out == 0.05
    assert model.prefix_ids == (4001, 4002, 4003)


def test_real_checkpoint_shapes_have_published_parameter_count():
    """The PairRM-hf config (upstream-facts §1a) builds 436,014,081 parameters (on the meta device: no memory)."""
    config = DebertaV2Config(
        vocab_size=128005,
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        position_buckets=256,
        relative_attention=True,
        share_att_key=True,
        pos_att_type=["p2c", "c2p"],
        norm_rel_ebd="layer_norm",
        position_biased_input=False,
        type_vocab_size=0,
        max_relative_positions=-1,
        n_tasks=1,
        drop_out=0.05,
        source_prefix_id=128001,
        cand1_prefix_id=128002,
        cand2_prefix_id=128003,
        cand_prefix_id=128004,
    )
    with torch.device("meta"):
        model = DebertaV2PairRM(config)
    assert sum(p.numel() for p in model.parameters()) == 436_014_081


def test_backbone_only_checkpoint_loads_the_backbone(tiny_backbone_dir):
    """base_model_prefix = "pretrained_model" makes from_pretrained fill the backbone (not leave it random)."""
    config = DebertaV2Config.from_pretrained(tiny_backbone_dir)
    config.update(dict(source_prefix_id=4001, cand1_prefix_id=4002, cand2_prefix_id=4003, cand_prefix_id=4004))
    model = DebertaV2PairRM.from_pretrained(tiny_backbone_dir, config=config)
    with safe_open(str(tiny_backbone_dir / "model.safetensors"), "pt") as f:
        for key in ("embeddings.word_embeddings.weight", "encoder.layer.1.attention.self.query_proj.weight"):
            assert torch.equal(model.pretrained_model.state_dict()[key], f.get_tensor(key))


def test_automodel_on_pairrm_checkpoint_is_not_pairrm(tiny_hf_dir):
    """The trap docs/guides/checkpoints.md warns about: AutoModel gives a DebertaV2Model with random weights."""
    model = AutoModel.from_pretrained(tiny_hf_dir)
    assert type(model).__name__ == "DebertaV2Model"
    ours = DebertaV2PairRM.from_pretrained(tiny_hf_dir)
    assert not torch.equal(
        model.embeddings.word_embeddings.weight, ours.pretrained_model.embeddings.word_embeddings.weight
    )


def _rows(rm: PairRM, pairs):
    enc = rm.engine.encoder
    rows = [enc.encode_pair(*p) for p in pairs]
    width = max(map(len, rows))
    ids = torch.tensor([r + [enc.pad_id] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return ids, mask


def test_forward_outputs_and_trimming(tiny_rm):
    ids, mask = _rows(tiny_rm, [("hi", "hello there", "go away"), ("q", "a", "b")])
    model = tiny_rm.model
    out = model(input_ids=ids, attention_mask=mask)
    assert out.logits.shape == (2,)
    assert out.candidate1_scores.shape == (2, 1) and out.candidate2_scores.shape == (2, 1)
    torch.testing.assert_close(out.logits, (out.candidate1_scores - out.candidate2_scores).mean(-1))
    # extra all-padding columns (upstream padded to 2048) are dropped and change nothing
    pad = torch.zeros(2, 40, dtype=ids.dtype)
    padded = model(input_ids=torch.cat([ids, pad], 1), attention_mask=torch.cat([mask, pad], 1))
    torch.testing.assert_close(padded.logits, out.logits, atol=1e-5, rtol=0)
    as_tuple = model(input_ids=ids, attention_mask=mask, return_dict=False)
    torch.testing.assert_close(as_tuple[0], out.logits)


def test_forward_validation_names_the_row(tiny_rm):
    ids, mask = _rows(tiny_rm, [("hi", "a", "b"), ("q", "a", "b")])
    broken = ids.clone()
    broken[1, 1] = 5  # drop row 1's source prefix
    with pytest.raises(ValueError, match=r"row 1 .*source=0"):
        tiny_rm.model(input_ids=broken, attention_mask=mask)
    doubled = ids.clone()
    doubled[0, 2] = tiny_rm.model.config.source_prefix_id
    with pytest.raises(ValueError, match=r"row 0 .*source=2"):
        tiny_rm.model(input_ids=doubled, attention_mask=mask)


def test_loss_matches_formula(tiny_rm):
    ids, mask = _rows(tiny_rm, [("hi", "a", "b"), ("q", "c", "d"), ("x", "e", "f")])
    model = tiny_rm.model
    labels = torch.tensor([1.0, -1.0, 0.0])
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    d = (out.candidate1_scores - out.candidate2_scores).squeeze(-1)
    want = -torch.stack(
        [torch.log(torch.sigmoid(d[0])), torch.log(torch.sigmoid(-d[1])), torch.log(torch.tensor(0.5))]
    ).mean()
    torch.testing.assert_close(out.loss, want, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="labels"):
        model(input_ids=ids, attention_mask=mask, labels=torch.ones(3, 2))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_long_inputs_stay_finite(tiny_hf_dir, dtype):
    """Full 2048-token rows in bf16/fp16: finite logits, same decisions as fp32 on clear-cut pairs."""
    long_text = " ".join(["The capital of France is Paris and the sea is wide."] * 250)
    prompts, a, b = [long_text] * 2, [long_text, "Paris."], ["Berlin. " * 300, long_text]
    fp32 = PairRM.from_pretrained(tiny_hf_dir, device="cpu").compare(prompts, a, b)
    half = PairRM.from_pretrained(tiny_hf_dir, device="cpu", dtype=dtype)
    assert half.model.dtype == dtype
    got = half.compare(prompts, a, b)
    assert got.dtype.name == "float32" and bool(torch.isfinite(torch.from_numpy(got)).all())
    assert abs(got - fp32).max() < 0.05


def test_loss_function_is_the_models_own_and_silent(tiny_hf_dir):
    """transformers' default ``loss_function`` is the causal-LM loss with a warning on first access (issue 21, 11)."""
    import logging

    from transformers.utils import logging as hf_logging

    from pairrm_hf.models.modeling_pair_ranker import PairRanker, PairRankerConfig

    model = DebertaV2PairRM.from_pretrained(str(tiny_hf_dir))
    ranker = PairRanker(
        PairRankerConfig(
            encoder={
                "model_type": "bert",
                "hidden_size": 16,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "intermediate_size": 32,
                "vocab_size": 50,
            }
        )
    )
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    hf_logger = hf_logging.get_logger("transformers.modeling_utils")
    hf_logger.addHandler(handler)
    try:
        for m in (model, ranker):
            assert m.loss_function.__func__ is type(m).pairwise_loss
    finally:
        hf_logger.removeHandler(handler)
    assert not [r for r in records if "loss_type" in r.getMessage()]
    left, right = torch.tensor([[2.0], [0.0]]), torch.tensor([[0.0], [1.0]])
    labels = torch.tensor([1.0, -1.0])
    # hand value: mean(-logsigmoid(2), -logsigmoid(1))
    expected = (
        -(torch.nn.functional.logsigmoid(torch.tensor(2.0)) + torch.nn.functional.logsigmoid(torch.tensor(1.0))) / 2
    )
    assert torch.allclose(model.loss_function(left, right, labels), expected)
    model.loss_function = len  # assignable, as on any transformers model
    assert model.loss_function is len
