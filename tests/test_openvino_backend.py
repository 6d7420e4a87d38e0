"""The OpenVINO CPU backend (``backend="openvino"``): same logits as torch fp32, one conversion cached on disk."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pairrm_hf import PairRM
from pairrm_hf.ranking.openvino_backend import (
    OpenVINOBackbone,
    check_backend,
    load_openvino_backbone,
    openvino_available,
)

needs_openvino = pytest.mark.skipif(
    not openvino_available(), reason="openvino is not installed (pip install 'pairrm-hf[openvino]')"
)

PROMPTS = ["What is the capital of France?", "Write a poem about the sea. " * 30]
CANDS = [
    ["Paris.", "Berlin is the capital", "the capital city of france is paris", "Paris."],
    ["The sea is blue " * 20, "water water sea", "hello", "I like the sun and the moon " * 15],
]


@pytest.fixture(scope="module")
def ov_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("openvino_cache")


@pytest.fixture(scope="module")
def ov_rm(tiny_hf_dir, ov_cache):
    if not openvino_available():
        pytest.skip("openvino is not installed (pip install 'pairrm-hf[openvino]')")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PAIRRM_OPENVINO_CACHE", str(ov_cache))
        return PairRM.from_pretrained(tiny_hf_dir, backend="openvino", batch_size=3)


@needs_openvino
def test_openvino_logits_match_torch_fp32_in_every_batching(ov_rm, tiny_rm):
    """Rows of 10 to ~1,000 tokens, padded and unpadded batches of several widths, one converted model."""
    assert ov_rm.engine.backend == "openvino" and ov_rm.device.type == "cpu"
    ours = np.stack(ov_rm.comparison_matrices(PROMPTS, CANDS))
    torch_fp32 = np.stack(tiny_rm.comparison_matrices(PROMPTS, CANDS))
    assert ov_rm.engine.last_stats["forward_calls"] > 1  # several batch shapes went through the one model
    assert float(np.abs(ours - torch_fp32).max()) <= 1e-5
    # duplicate candidates share one row: their logits tie exactly, as in torch
    assert ours[0][0, 1] == ours[0][3, 1]
    report = ov_rm.check_precision(PROMPTS, CANDS)  # the reference is the torch fp32 model
    assert report.max_abs_logit_diff == pytest.approx(float(np.abs(ours - torch_fp32).max()), abs=1e-6)


@needs_openvino
def test_openvino_keeps_the_torch_model_and_restores_it_after_each_call(ov_rm):
    model = ov_rm.model
    assert isinstance(ov_rm.engine.openvino_backbone, OpenVINOBackbone)
    ov_rm.rank(PROMPTS[0], CANDS[0])
    # the swap lasts one call: the caller's module tree and state_dict keys are the torch model's
    assert not isinstance(model.pretrained_model, OpenVINOBackbone)
    assert all(not k.startswith("pretrained_model.compiled") for k in model.state_dict())


@needs_openvino
def test_conversion_is_cached_and_a_changed_model_gets_its_own_entry(ov_rm, ov_cache, tiny_hf_dir):
    entry = ov_rm.engine.openvino_backbone.cache_entry
    assert entry.parent == ov_cache and (entry / "backbone.xml").exists()
    stamp = (entry / "backbone.bin").stat().st_mtime_ns
    again = load_openvino_backbone(ov_rm.model.pretrained_model, cache_dir=ov_cache)
    assert again.cache_entry == entry and (entry / "backbone.bin").stat().st_mtime_ns == stamp  # read, not rewritten
    assert not [p for p in ov_cache.iterdir() if p.name.startswith(".staging")]  # no half-written entries left
    changed = PairRM.from_pretrained(tiny_hf_dir, device="cpu").model.pretrained_model
    with torch.no_grad():
        changed.encoder.layer[0].output.dense.weight[0, 0] += 0.5
    other = load_openvino_backbone(changed, cache_dir=ov_cache)
    assert other.cache_entry != entry


@needs_openvino
def test_openvino_int8_tracks_fp32_and_is_checked_against_the_torch_model(tiny_hf_dir, ov_cache, tiny_rm):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PAIRRM_OPENVINO_CACHE", str(ov_cache))
        q = PairRM.from_pretrained(tiny_hf_dir, backend="openvino", quantize="int8")
    a = np.stack(tiny_rm.comparison_matrices(PROMPTS[:1], CANDS[:1]))
    b = np.stack(q.comparison_matrices(PROMPTS[:1], CANDS[:1]))
    diff = float(np.abs(a - b).max())
    # the tiny random model (initializer 0.2) is a hard case for int8, as for torch's int8 (tests/test_quantization)
    assert 0 < diff < 0.15
    assert q.check_precision(PROMPTS[:1], CANDS[:1]).max_abs_logit_diff == pytest.approx(diff, abs=1e-5)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"backend": "onnx"}, "backend must be one of"),
        ({"backend": "openvino", "device": "cuda"}, "CPU only"),
        ({"backend": "openvino", "compile": True}, "drop compile"),
        ({"backend": "openvino", "dtype": "bfloat16"}, "fp32 weights"),
        ({"backend": "openvino", "autocast_dtype": "bfloat16"}, "drop autocast"),
    ],
)
def test_bad_backend_options_are_refused_before_loading(options, message):
    """Checked before any conversion, and without needing openvino installed."""
    args = {"device": None, "dtype": None, "compile": False, "autocast_dtype": None, **options}
    with pytest.raises(ValueError, match=message):
        check_backend(args.pop("backend"), **args)


def test_missing_openvino_says_how_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_openvino(name, *args, **kwargs):
        if name == "openvino" or name.startswith("openvino."):
            raise ImportError("No module named 'openvino'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_openvino)
    with pytest.raises(ImportError, match=r"pairrm-hf\[openvino\]"):
        check_backend("openvino", device=None, dtype=None, compile=False, autocast_dtype=None)


@needs_openvino
def test_cli_job_and_server_run_on_openvino(ov_rm, ov_cache, tiny_hf_dir, tiny_rm, tmp_path, monkeypatch):
    """``pairrm rank --backend openvino`` (a resumable job) and the server's service, warm from the same cache."""
    from pairrm_hf.cli import main
    from pairrm_hf.jobs.io import read_table, write_rows
    from pairrm_hf.serve.service import PairRMService

    monkeypatch.setenv("PAIRRM_OPENVINO_CACHE", str(ov_cache))
    rows = [{"prompt": p, "candidates": c} for p, c in zip(PROMPTS, CANDS)]
    write_rows(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    args = ["rank", tmp_path / "in.jsonl", "-o", out, "--model", tiny_hf_dir, "--backend", "openvino"]
    assert main([*map(str, args), "--no-progress"]) == 0
    want = tiny_rm.rank_batch(PROMPTS, CANDS)
    for got, w in zip(read_table(out).rows, want):
        np.testing.assert_allclose(got["pairrm_scores"], w.scores, atol=1e-5)
    entries = sorted(p.name for p in ov_cache.iterdir())
    service = PairRMService.from_pretrained(tiny_hf_dir, backend="openvino")
    assert service.health()["backend"] == "openvino"
    assert sorted(p.name for p in ov_cache.iterdir()) == entries  # the same conversion, read back from the cache


@needs_openvino
def test_pipeline_runs_on_openvino(ov_cache, tiny_hf_dir, tiny_rm, monkeypatch):
    from transformers import pipeline

    monkeypatch.setenv("PAIRRM_OPENVINO_CACHE", str(ov_cache))
    pipe = pipeline("pairwise-ranking", model=str(tiny_hf_dir), backend="openvino")
    assert pipe.ranker.engine.backend == "openvino"
    rows = pipe(PROMPTS[0], CANDS[0])
    want = tiny_rm.rank_batch(PROMPTS[:1], CANDS[:1])[0]
    for r in rows:
        assert r["score"] == pytest.approx(float(want.scores[r["index"]]), abs=1e-5)
