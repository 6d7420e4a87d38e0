"""Opt-in int8 CPU inference (``quantize="int8"``): close to fp32, measured against the kept fp32 model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pairrm_hf import PairRM
from pairrm_hf.ranking.quantization import quantize_int8

PROMPTS = ["What is the capital of France?", "Write a poem about the sea."]
CANDS = [
    ["Paris.", "Berlin is the capital", "the capital city of france is paris", "no", "maybe one two"],
    ["The sea is blue", "water water sea", "hello", "I like the sun and the moon", "red green blue sky"],
]


@pytest.fixture(scope="module")
def int8_and_fp32(tiny_hf_dir):
    return PairRM.from_pretrained(tiny_hf_dir, quantize="int8"), PairRM.from_pretrained(tiny_hf_dir, device="cpu")


def test_every_transformer_linear_is_int8_and_its_outputs_track_fp32(int8_and_fp32):
    q, f = int8_and_fp32
    int8_linear = torch.ao.nn.quantized.dynamic.Linear
    pairs = [(n, m) for n, m in q.model.pretrained_model.encoder.named_modules() if isinstance(m, int8_linear)]
    fp32_linears = [n for n, m in f.model.pretrained_model.encoder.named_modules() if isinstance(m, torch.nn.Linear)]
    assert sorted(n for n, _ in pairs) == sorted(fp32_linears) and fp32_linears
    assert isinstance(q.model.head_layer[4], torch.nn.Linear)  # the head stays fp32
    # the int8 model shares the fp32 reference's unquantized tensors instead of copying them
    ref = q.engine.reference_model
    assert (
        q.model.pretrained_model.embeddings.word_embeddings.weight
        is ref.pretrained_model.embeddings.word_embeddings.weight
    )
    assert isinstance(ref.pretrained_model.encoder.layer[0].attention.self.query_proj, torch.nn.Linear)
    # each int8 layer against its fp32 original on inputs shaped like hidden states (unit scale, as after LayerNorm)
    x = torch.randn(4, 16, f.model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    fp32 = dict(f.model.pretrained_model.encoder.named_modules())
    for name, module in pairs:
        ref = fp32[name]
        inp = x if ref.in_features == x.shape[-1] else torch.randn(4, 16, ref.in_features)
        with torch.no_grad():
            err = (module(inp) - ref(inp)).norm() / ref(inp).norm()
        assert err < 0.03, (name, float(err))


def test_int8_logits_are_close_to_fp32_and_check_precision_measures_against_fp32(int8_and_fp32):
    q, f = int8_and_fp32
    assert q.device.type == "cpu" and q.engine.reference_model is not None
    a = np.stack(f.comparison_matrices(PROMPTS, CANDS))
    b = np.stack(q.comparison_matrices(PROMPTS, CANDS))
    diff = float(np.abs(a - b).max())
    # The tiny random model (initializer 0.2) is a hard case: measured 0.075 max |Δ| and corr 0.91 here.
    assert 0 < diff < 0.15
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.85
    report = q.check_precision(PROMPTS, CANDS)
    assert report.max_abs_logit_diff == pytest.approx(diff, abs=1e-5)  # the reference is the fp32 model
    s_a, s_b = (m - m.transpose(0, 2, 1) for m in (a, b))
    iu = np.triu_indices(a.shape[1], k=1)
    assert report.symmetric_flips == int((np.sign(s_a[:, iu[0], iu[1]]) != np.sign(s_b[:, iu[0], iu[1]])).sum())
    assert report.pairs == sum(len(c) * (len(c) - 1) for c in CANDS)


def test_int8_runs_on_the_qnnpack_backend_too(tiny_hf_dir):
    """qnnpack uses no AVX-512 at all: a stand-in for CPUs without AVX-512 VNNI (fbgemm has AVX2 kernels too)."""
    if "qnnpack" not in torch.backends.quantized.supported_engines:
        pytest.skip("this torch build has no qnnpack")
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = "qnnpack"
    try:
        q = PairRM.from_pretrained(tiny_hf_dir, quantize="int8")
        out = np.stack(q.comparison_matrices(PROMPTS[:1], CANDS[:1]))
    finally:
        torch.backends.quantized.engine = previous
    ref = np.stack(PairRM.from_pretrained(tiny_hf_dir, device="cpu").comparison_matrices(PROMPTS[:1], CANDS[:1]))
    assert float(np.abs(out - ref).max()) < 0.15


def test_quantize_bad_values_name_the_argument(tiny_hf_dir, tiny_rm):
    with pytest.raises(ValueError, match="quantize must be one of"):
        PairRM.from_pretrained(tiny_hf_dir, quantize="int4")
    with pytest.raises(ValueError, match="CPU only"):
        PairRM.from_pretrained(tiny_hf_dir, quantize="int8", device="cuda")
    with pytest.raises(ValueError, match="fp32 model"):
        quantize_int8(_bf16_copy(tiny_rm.model))


def _bf16_copy(model):
    import copy

    return copy.deepcopy(model).to(torch.bfloat16)
