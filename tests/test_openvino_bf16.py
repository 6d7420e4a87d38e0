"""bfloat16 on the CPU through OpenVINO: fp32 weights, bf16 compute where the CPU has it, f32 where it does not.

The assertions hold on both kinds of CI host: where OpenVINO reports native bf16 (AVX512-BF16, AMX) the logits move
by bf16 rounding; where it does not, OpenVINO computes in f32 and the logits are torch fp32's.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from pairrm_hf import PairRM
from pairrm_hf.jobs.runner import JobConfig, cpu_backend
from pairrm_hf.ranking import openvino_backend
from pairrm_hf.ranking.openvino_backend import openvino_available, openvino_inference_precision

pytestmark = pytest.mark.skipif(
    not openvino_available(), reason="openvino is not installed (pip install 'pairrm-hf[openvino]')"
)

PROMPTS = ["What is the capital of France?", "Write a poem about the sea. " * 30]
CANDS = [
    ["Paris.", "Berlin is the capital", "the capital city of france is paris"],
    ["The sea is blue " * 20, "water water sea", "hello"],
]


@pytest.fixture(scope="module")
def ov_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("openvino_bf16_cache")


@pytest.fixture
def cache(ov_cache, monkeypatch):
    monkeypatch.setenv("PAIRRM_OPENVINO_CACHE", str(ov_cache))
    monkeypatch.delenv("PAIRRM_BACKEND", raising=False)
    return ov_cache


@pytest.fixture(scope="module")
def fp32_matrices(tiny_rm):
    return np.stack(tiny_rm.comparison_matrices(PROMPTS, CANDS))


def _check_against_fp32(rm: PairRM, fp32: np.ndarray, bf16_bound: float) -> float:
    ours = np.stack(rm.comparison_matrices(PROMPTS, CANDS))
    diff = float(np.abs(ours - fp32).max())
    if rm.engine.openvino_backbone.inference_precision == "bf16":
        assert 0 < diff < bf16_bound  # bf16 rounding moves the logits, within its error on this random model
    else:
        assert diff <= 1e-5  # no native bf16: OpenVINO computed in f32
    # the yardstick of check_precision is the torch fp32 model the OpenVINO one was converted from
    assert rm.check_precision(PROMPTS, CANDS).max_abs_logit_diff == pytest.approx(diff, abs=1e-5)
    return diff


@pytest.mark.parametrize("option", ["dtype", "autocast_dtype"])
def test_bf16_on_the_cpu_runs_openvino_from_the_fp32_conversion(tiny_hf_dir, cache, fp32_matrices, option, caplog):
    fp32 = PairRM.from_pretrained(tiny_hf_dir, device="cpu")
    assert fp32.backend == "openvino" and fp32.engine.openvino_backbone.inference_precision == "f32"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pairrm_hf.ranking"):
        rm = PairRM.from_pretrained(tiny_hf_dir, device="cpu", **{option: "bfloat16"})
    converted = rm.engine.openvino_backbone
    assert rm.backend == "openvino" and converted.precision == "fp32"
    assert converted.inference_precision == openvino_inference_precision("bf16")
    # the torch model stays fp32 (OpenVINO casts for itself) and the fp32 conversion is reused, not converted again
    assert next(rm.engine.model.parameters()).dtype == torch.float32
    assert converted.cache_entry == fp32.engine.openvino_backbone.cache_entry
    assert not [r for r in caplog.records if "converting" in r.getMessage()]
    _check_against_fp32(rm, fp32_matrices, bf16_bound=0.1)
    assert f"computing in {converted.inference_precision} on openvino" in repr(rm)


def test_bf16_with_the_torch_backend_casts_the_weights(tiny_hf_dir, cache, fp32_matrices):
    rm = PairRM.from_pretrained(tiny_hf_dir, device="cpu", dtype="bfloat16", backend="torch")
    assert rm.backend == "torch" and next(rm.engine.model.parameters()).dtype == torch.bfloat16
    ours = np.stack(rm.comparison_matrices(PROMPTS, CANDS))
    assert 0 < float(np.abs(ours - fp32_matrices).max()) < 0.1


def test_auto_casts_for_torch_when_it_picks_torch(tiny_hf_dir, cache):
    """The cast waits for the backend: when auto ends on torch (here: eager attention asked for), the weights still
    become bf16 as asked."""
    rm = PairRM.from_pretrained(tiny_hf_dir, device="cpu", dtype="bfloat16", attention="eager")
    assert rm.backend == "torch" and next(rm.engine.model.parameters()).dtype == torch.bfloat16


def test_int8_with_bf16_keeps_int8_weights_and_computes_the_rest_in_bf16(tiny_hf_dir, cache, fp32_matrices):
    pytest.importorskip("nncf")
    rm = PairRM.from_pretrained(tiny_hf_dir, device="cpu", quantize="int8", dtype="bfloat16")
    converted = rm.engine.openvino_backbone
    assert converted.precision == "int8" and converted.inference_precision == openvino_inference_precision("bf16")
    ours = np.stack(rm.comparison_matrices(PROMPTS, CANDS))
    # the tiny random model is a hard case for int8 (see test_openvino_int8_tracks_fp32_…): the same bound
    assert 0 < float(np.abs(ours - fp32_matrices).max()) < 0.15


def test_a_cpu_without_native_bf16_computes_in_f32_and_says_so(tiny_hf_dir, cache, fp32_matrices, monkeypatch, caplog):
    """The fallback forced: OpenVINO reports no BF16 capability, so the model is compiled for f32 (exact)."""
    monkeypatch.setattr(openvino_backend, "cpu_capabilities", lambda: ["FP32", "INT8"])
    monkeypatch.setattr(openvino_backend, "_LOGGED_CHOICES", set())
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pairrm_hf.ranking"):
        rm = PairRM.from_pretrained(tiny_hf_dir, device="cpu", dtype="bfloat16")
        again = PairRM.from_pretrained(tiny_hf_dir, device="cpu", dtype="bfloat16")
    assert rm.engine.openvino_backbone.inference_precision == "f32"
    assert _check_against_fp32(rm, fp32_matrices, bf16_bound=0.1) <= 1e-5
    said = [r.getMessage() for r in caplog.records if "no native bf16" in r.getMessage()]
    assert len(said) == 1 and "computes in f32" in said[0]  # once per process
    assert again.engine.openvino_backbone.inference_precision == "f32"


def test_job_identity_names_who_computes_bf16(tiny_hf_dir, monkeypatch):
    """A bf16 job computed by OpenVINO never resumes as torch's bf16 (other numbers), nor on a host that computes
    it in f32; torch's bf16 keeps the plain dtype name of earlier jobs."""
    monkeypatch.delenv("PAIRRM_BACKEND", raising=False)

    def precision(**options):
        return JobConfig("in.jsonl", "o.jsonl", model=str(tiny_hf_dir), device="cpu", **options).precision()

    expected = {"dtype": "bfloat16", "backend": "openvino", "computes": openvino_inference_precision("bf16")}
    assert precision(dtype="bfloat16") == expected
    assert precision(dtype="bfloat16", backend="torch") == "bfloat16"
    assert precision(dtype="float16") == "float16" and precision() is None
    assert cpu_backend(JobConfig("i", "o", device="cpu", dtype="float16"))[0] == "torch"
    monkeypatch.setattr(openvino_backend, "cpu_capabilities", lambda: ["FP32"])
    assert precision(dtype="bfloat16")["computes"] == "f32"


def test_an_unknown_inference_precision_is_refused():
    with pytest.raises(ValueError, match=r"inference_precision must be one of \('f32', 'bf16'\), got 'fp16'"):
        openvino_inference_precision("fp16")
