"""The OpenVINO CPU backend (``backend="openvino"``): same logits as torch fp32, one conversion cached on disk."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

from pairrm_hf import PairRM
from pairrm_hf.models.attention import PairRMSelfAttention
from pairrm_hf.ranking import openvino_backend
from pairrm_hf.ranking.openvino_backend import (
    OpenVINOBackbone,
    auto_backend,
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
def test_long_batches_go_to_openvino_in_few_row_requests_with_the_same_results(ov_rm):
    """A batch is cut into requests by two bounds: the score budget (rows × heads × L²) and the position-term Gathers
    (rows × heads per group × L² ≤ 2^24); each cut is the largest within both, and it changes no row."""
    backbone = ov_rm.engine.openvino_backbone
    heads = backbone.config.num_attention_heads
    budget, safe = backbone.score_elements_per_request, openvino_backend.GATHER_SAFE_ELEMENTS
    assert backbone.gather_heads == min(PairRMSelfAttention.export_heads_per_group or heads, heads)

    def within(rows: int, length: int) -> bool:
        return rows * heads * length**2 <= budget and rows * backbone.gather_heads * length**2 <= safe

    for length in (16, 100, 300, 700, 1024, 1500, 2048):
        rows = backbone.rows_per_request(length)
        assert within(rows, length) and not within(rows + 1, length), length
    longest = backbone.longest_row
    assert longest >= 2048 and within(1, longest) and not within(1, longest + 1)
    assert backbone.rows_per_request(10**6) == 1  # never fewer than one row
    whole = np.stack(ov_rm.comparison_matrices(PROMPTS, CANDS))
    backbone.score_elements_per_request = heads * 300 * 300  # long batches now go a row or two per request
    try:
        assert backbone.rows_per_request(400) == 1 and backbone.rows_per_request(200) == 2
        cut = np.stack(ov_rm.comparison_matrices(PROMPTS, CANDS))
    finally:
        del backbone.score_elements_per_request  # back to the class default
    np.testing.assert_allclose(cut, whole, atol=1e-5, rtol=0)


def _ragged(rows: int, length: int, vocab: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (rows, length), generator=gen)
    mask = torch.ones_like(ids)
    for r in range(1, rows, 2):  # every other row padded: the gathers span real and padded positions
        mask[r, length - 37 * r :] = 0
    return ids, mask


@needs_openvino
def test_large_requests_match_torch_where_one_gather_would_pass_two_to_the_24(ov_rm, tiny_rm, monkeypatch):
    """Sixteen 1024-token rows of the tiny model with the score budget raised so that only the Gather bound cuts:
    in one request the position-term Gathers would hold 16 rows × L² × the heads of a group ≥ 2^25 elements, and
    OpenVINO's Gather, splitting that over two threads, took some values from the wrong head (|Δ| ~3e-3 measured).
    Cut to at most 2^24 elements per Gather, the rows match torch."""
    backbone = ov_rm.engine.openvino_backbone
    monkeypatch.setattr(backbone, "score_elements_per_request", 1 << 30, raising=False)
    rows = backbone.rows_per_request(1024)
    assert rows < 16 and rows * backbone.gather_heads * 1024**2 <= openvino_backend.GATHER_SAFE_ELEMENTS
    assert 16 * backbone.gather_heads * 1024**2 > openvino_backend.GATHER_SAFE_ELEMENTS
    ids, mask = _ragged(16, 1024, int(backbone.config.vocab_size), seed=3)
    with torch.inference_mode():
        got = backbone(input_ids=ids, attention_mask=mask).last_hidden_state
        want = tiny_rm.model.pretrained_model(input_ids=ids, attention_mask=mask).last_hidden_state
    real = mask.bool()
    assert float((got[real] - want[real]).abs().max()) <= 1e-5


@needs_openvino
def test_rows_too_long_for_an_exact_gather_run_on_torch_with_one_log_line(ov_rm, tiny_rm, monkeypatch, caplog):
    """With the Gather bound lowered so that rows over 100 tokens exceed it, such batches run on the torch backbone
    (the same numbers as torch fp32, said once in the log for any length over the limit); shorter rows still go to
    OpenVINO."""
    backbone = ov_rm.engine.openvino_backbone
    monkeypatch.setattr(openvino_backend, "GATHER_SAFE_ELEMENTS", backbone.gather_heads * 100 * 100)
    assert backbone.longest_row == 100
    requests = []
    monkeypatch.setattr(backbone, "compiled", _CountingCompiled(backbone.compiled, requests))
    long_ids, long_mask = _ragged(3, 150, int(backbone.config.vocab_size), seed=4)
    short_ids, short_mask = _ragged(2, 90, int(backbone.config.vocab_size), seed=5)
    with caplog.at_level(logging.WARNING, logger="pairrm_hf.ranking"), torch.inference_mode():
        for _ in range(2):
            got = backbone(input_ids=long_ids, attention_mask=long_mask).last_hidden_state
        backbone(input_ids=long_ids[:, :130], attention_mask=long_mask[:, :130])  # another length, no new line
        assert not requests  # the long rows never reached OpenVINO
        backbone(input_ids=short_ids, attention_mask=short_mask)
        want = tiny_rm.model.pretrained_model(input_ids=long_ids, attention_mask=long_mask).last_hidden_state
    assert len(requests) == 1
    real = long_mask.bool()
    assert float((got[real] - want[real]).abs().max()) <= 1e-5
    notes = [r.getMessage() for r in caplog.records if "run on torch, not OpenVINO" in r.getMessage()]
    assert len(notes) == 1 and "150 tokens" in notes[0] and "at most 100 tokens" in notes[0]


class _CountingCompiled:
    """A compiled model whose infer requests are recorded in ``requests``."""

    def __init__(self, compiled, requests: list):
        self._compiled, self._requests = compiled, requests

    def create_infer_request(self):
        request = self._compiled.create_infer_request()
        self._requests.append(request)
        return request


@needs_openvino
def test_an_openvino_gather_at_the_bound_is_exact_on_two_threads():
    """The assumption behind GATHER_SAFE_ELEMENTS, checked on the installed OpenVINO: a dynamic-shape Gather of
    exactly 2^24 output elements (4 heads × 2^22 indices, the export graph's largest at 2048 tokens) split over two
    threads gives numpy's result element for element."""
    import openvino
    import openvino.opset13 as ops

    heads, count, axis = 4, openvino_backend.GATHER_SAFE_ELEMENTS // 4, 4096
    data = ops.parameter(openvino.PartialShape([1, -1, -1]), openvino.Type.f32, name="data")
    index = ops.parameter(openvino.PartialShape([-1]), openvino.Type.i64, name="index")
    gathered = ops.gather(data, index, ops.constant(np.int64(2)))
    compiled = openvino.Core().compile_model(
        openvino.Model([gathered.output(0)], [data, index]), "CPU", {"INFERENCE_NUM_THREADS": 2}
    )
    rng = np.random.default_rng(0)
    values = rng.standard_normal((1, heads, axis), dtype=np.float32)
    positions = rng.integers(0, axis, count).astype(np.int64)
    out = compiled({"data": values, "index": positions})[0]
    assert out.size == openvino_backend.GATHER_SAFE_ELEMENTS
    np.testing.assert_array_equal(out, values[:, :, positions])


@needs_openvino
def test_openvino_keeps_the_torch_model_and_restores_it_after_each_call(ov_rm):
    model = ov_rm.model
    assert isinstance(ov_rm.engine.openvino_backbone, OpenVINOBackbone)
    ov_rm.rank(PROMPTS[0], CANDS[0])
    # the swap lasts one call: the caller's module tree and state_dict keys are the torch model's
    assert not isinstance(model.pretrained_model, OpenVINOBackbone)
    assert all(not k.startswith("pretrained_model.compiled") for k in model.state_dict())


@needs_openvino
def test_conversion_is_cached_and_a_changed_model_gets_its_own_entry(ov_rm, ov_cache, tiny_hf_dir, caplog):
    entry = ov_rm.engine.openvino_backbone.cache_entry
    assert entry.parent == ov_cache and (entry / "backbone.xml").exists()
    stamp = (entry / "backbone.bin").stat().st_mtime_ns
    again = load_openvino_backbone(ov_rm.model.pretrained_model, cache_dir=ov_cache)
    assert again.cache_entry == entry and (entry / "backbone.bin").stat().st_mtime_ns == stamp  # read, not rewritten
    assert not [p for p in ov_cache.iterdir() if p.name.startswith(".staging")]  # no half-written entries left
    changed = PairRM.from_pretrained(tiny_hf_dir, device="cpu").model.pretrained_model
    with torch.no_grad():
        changed.encoder.layer[0].output.dense.weight[0, 0] += 0.5
    with caplog.at_level(logging.WARNING, logger="pairrm_hf.ranking"):
        other = load_openvino_backbone(changed, cache_dir=ov_cache)
    assert other.cache_entry != entry
    # the first conversion of these weights says so once: where it is cached and how to skip it
    (message,) = [r.getMessage() for r in caplog.records if "converting" in r.getMessage()]
    assert str(other.cache_entry) in message and "once" in message and "backend='torch'" in message


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
        ({"backend": "Torch"}, "backend must be one of"),
        ({"backend": "openvino", "device": "cuda"}, "CPU only"),
        ({"backend": "openvino", "compile": True}, "drop compile"),
        ({"backend": "openvino", "dtype": "float16"}, "fp32 weights, computing in fp32 or bfloat16"),
        ({"backend": "openvino", "autocast_dtype": "float16"}, "computes in fp32 or bfloat16"),
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


# ------------------------------------------------------------------------------------------- backend="auto" (default)
@needs_openvino
def test_the_default_runs_openvino_on_cpu_and_matches_torch(ov_rm, ov_cache, tiny_hf_dir, tiny_rm, monkeypatch, caplog):
    """No backend named, no PAIRRM_BACKEND: a fp32 PairRM on the CPU runs on OpenVINO, read from the warm cache."""
    monkeypatch.delenv("PAIRRM_BACKEND", raising=False)
    monkeypatch.setenv("PAIRRM_OPENVINO_CACHE", str(ov_cache))
    monkeypatch.setattr(openvino_backend, "_LOGGED_CHOICES", set())
    with caplog.at_level(logging.INFO, logger="pairrm_hf.ranking"):
        rm = PairRM.from_pretrained(tiny_hf_dir, device="cpu")
        PairRM.from_pretrained(tiny_hf_dir, device="cpu")
    assert rm.backend == "openvino" and rm.engine.backend == "openvino"
    assert rm.engine.openvino_backbone.cache_entry == ov_rm.engine.openvino_backbone.cache_entry
    ours = np.stack(rm.comparison_matrices(PROMPTS, CANDS))
    want = np.stack(tiny_rm.comparison_matrices(PROMPTS, CANDS))
    assert float(np.abs(ours - want).max()) <= 1e-5
    choice = [r.getMessage() for r in caplog.records if "backend='auto'" in r.getMessage()]
    assert len(choice) == 1 and "runs on openvino" in choice[0] and "backend='torch'" in choice[0]  # said once
    assert not [r for r in caplog.records if "converting" in r.getMessage()]  # read back, not converted again


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"compile": True}, "compile"),
        ({"autocast_dtype": "float16"}, "autocast"),
        ({"dtype": "float16"}, "float16"),
        ({"attention": "eager"}, "attention='eager'"),
        ({"attention": "flex"}, "attention='flex'"),
    ],
)
def test_auto_picks_torch_where_openvino_does_not_apply(tiny_hf_dir, monkeypatch, caplog, options, reason):
    """Options OpenVINO refuses (see test_bad_backend_options_are_refused_before_loading) are no error under auto."""
    monkeypatch.delenv("PAIRRM_BACKEND", raising=False)
    monkeypatch.setattr(openvino_backend, "_LOGGED_CHOICES", set())
    with caplog.at_level(logging.INFO, logger="pairrm_hf.ranking"):
        rm = PairRM.from_pretrained(tiny_hf_dir, device="cpu", **options)
    assert rm.backend == "torch" and rm.engine.openvino_backbone is None
    choice = [r.getMessage() for r in caplog.records if "backend='auto'" in r.getMessage()]
    assert len(choice) == 1 and "runs on torch" in choice[0] and reason in choice[0]


def test_auto_picks_torch_on_a_gpu_and_for_other_rankers(tiny_rm):
    """The device is resolved before auto decides (no GPU needed to check the rule); only PairRM is converted."""
    cuda = auto_backend(
        tiny_rm.model, device=torch.device("cuda", 0), compile=False, autocast_dtype=None, attention=None, quantize=None
    )
    assert cuda == ("torch", "device cuda:0 is not the CPU")
    other = auto_backend(
        nn.Linear(2, 2), device=torch.device("cpu"), compile=False, autocast_dtype=None, attention=None, quantize=None
    )
    assert other[0] == "torch" and "not a PairRM" in other[1]
    cpu = auto_backend(
        tiny_rm.model, device=torch.device("cpu"), compile=False, autocast_dtype=None, attention=None, quantize=None
    )
    assert cpu[0] == ("openvino" if openvino_available() else "torch")


@needs_openvino
def test_pairrm_backend_variable_wins_over_auto_and_an_argument_wins_over_it(tiny_hf_dir, ov_cache, monkeypatch):
    monkeypatch.setenv("PAIRRM_OPENVINO_CACHE", str(ov_cache))
    monkeypatch.setenv("PAIRRM_BACKEND", "torch")
    assert PairRM.from_pretrained(tiny_hf_dir, device="cpu").backend == "torch"
    assert PairRM.from_pretrained(tiny_hf_dir, device="cpu", backend="openvino").backend == "openvino"
    monkeypatch.setenv("PAIRRM_BACKEND", "openvino")
    assert PairRM.from_pretrained(tiny_hf_dir, device="cpu").backend == "openvino"
    assert PairRM.from_pretrained(tiny_hf_dir, device="cpu", backend="auto").backend == "openvino"


def test_a_bad_pairrm_backend_variable_is_a_clear_error(tiny_hf_dir, monkeypatch):
    monkeypatch.setenv("PAIRRM_BACKEND", "onnx")
    with pytest.raises(ValueError, match=r"environment variable PAIRRM_BACKEND must be one of .*'onnx'"):
        PairRM.from_pretrained(tiny_hf_dir, device="cpu")


@needs_openvino
def test_auto_runs_torch_when_the_conversion_cannot_be_cached(tiny_hf_dir, tiny_rm, tmp_path, monkeypatch, caplog):
    """A cache root that cannot be created (here: a file) fails an explicit openvino; auto warns and runs torch."""
    monkeypatch.delenv("PAIRRM_BACKEND", raising=False)
    blocked = tmp_path / "not_a_folder"
    blocked.write_text("")
    monkeypatch.setenv("PAIRRM_OPENVINO_CACHE", str(blocked / "cache"))
    with pytest.raises(OSError):
        PairRM.from_pretrained(tiny_hf_dir, device="cpu", backend="openvino")
    with caplog.at_level(logging.WARNING, logger="pairrm_hf.ranking"):
        rm = PairRM.from_pretrained(tiny_hf_dir, device="cpu")
    assert rm.backend == "torch" and any("running on torch" in r.getMessage() for r in caplog.records)
    np.testing.assert_allclose(
        rm.rank_batch(PROMPTS[:1], CANDS[:1])[0].scores, tiny_rm.rank_batch(PROMPTS[:1], CANDS[:1])[0].scores, atol=1e-6
    )


@needs_openvino
def test_the_same_weights_from_another_folder_get_the_same_key(tiny_hf_dir, tmp_path):
    """Weights keyed by their bytes: a copy saved elsewhere (other path, save metadata) names the same entry."""
    from pairrm_hf import DebertaV2PairRM

    original = DebertaV2PairRM.from_pretrained(tiny_hf_dir)
    original.save_pretrained(tmp_path / "copy")
    moved = DebertaV2PairRM.from_pretrained(tmp_path / "copy")
    assert moved.config._name_or_path != original.config._name_or_path
    key = openvino_backend._weights_key
    assert key(moved.pretrained_model, "fp32") == key(original.pretrained_model, "fp32")
    assert key(moved.pretrained_model, "int8") != key(original.pretrained_model, "fp32")


# ------------------------------------------------------------------------------------------------------------ memory
@needs_openvino
def test_torch_backbone_weights_are_released_and_read_back_when_torch_needs_them(tiny_hf_dir, ov_cache, tiny_rm):
    """One copy of the backbone in memory: OpenVINO's. Reference runs and ``rm.model`` read the torch one back."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PAIRRM_OPENVINO_CACHE", str(ov_cache))
        rm = PairRM.from_pretrained(tiny_hf_dir, backend="openvino")
    stand_in, model = rm.engine.openvino_backbone, rm.engine.model
    assert stand_in.torch_weights_released
    assert all(p.is_meta for p in model.pretrained_model.parameters())
    assert not any(p.is_meta for n, p in model.named_parameters() if not n.startswith("pretrained_model."))
    ours = np.stack(rm.comparison_matrices(PROMPTS[:1], CANDS[:1]))  # OpenVINO runs without the torch weights
    assert stand_in.torch_weights_released
    # check_precision's reference is torch fp32: it reads the weights back, and they are the checkpoint's
    report = rm.check_precision(PROMPTS[:1], CANDS[:1])
    assert not stand_in.torch_weights_released
    want = np.stack(tiny_rm.comparison_matrices(PROMPTS[:1], CANDS[:1]))
    assert report.max_abs_logit_diff == pytest.approx(float(np.abs(ours - want).max()), abs=1e-6)
    reference = tiny_rm.model.state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in model.state_dict().items())


@needs_openvino
def test_weights_read_back_inside_inference_mode_are_ordinary_parameters(tiny_hf_dir, ov_cache, tiny_rm):
    """A torch pass reached from an engine call (rows too long for OpenVINO, token type ids) reads the weights back
    under inference mode; they still come back as parameters that track versions and can be trained."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PAIRRM_OPENVINO_CACHE", str(ov_cache))
        rm = PairRM.from_pretrained(tiny_hf_dir, backend="openvino")
    stand_in = rm.engine.openvino_backbone
    assert stand_in.torch_weights_released
    with torch.inference_mode():
        backbone = stand_in.torch_backbone
    params = list(backbone.parameters())
    assert not stand_in.torch_weights_released and not any(p.is_inference() or p.is_meta for p in params)
    assert all(p.requires_grad for p in params)
    reference = tiny_rm.model.pretrained_model.state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in backbone.state_dict().items())


@needs_openvino
def test_pairrm_model_gives_the_full_torch_model(tiny_hf_dir, ov_cache, tiny_rm, tmp_path):
    """``rm.model`` (what users save or fine-tune) holds every weight, read back once."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PAIRRM_OPENVINO_CACHE", str(ov_cache))
        rm = PairRM.from_pretrained(tiny_hf_dir, backend="openvino")
    assert rm.engine.openvino_backbone.torch_weights_released
    repr(rm)  # reading the dtype for a repr does not read the weights back
    assert rm.engine.openvino_backbone.torch_weights_released
    rm.model.save_pretrained(tmp_path / "saved")
    from pairrm_hf import DebertaV2PairRM

    saved = DebertaV2PairRM.from_pretrained(tmp_path / "saved").state_dict()
    assert all(torch.equal(v, saved[k]) for k, v in tiny_rm.model.state_dict().items())


@needs_openvino
def test_a_loaded_checkpoint_is_keyed_by_its_files_until_a_weight_changes(tiny_hf_dir, tmp_path):
    """Keyed by the checkpoint files, a warm start reads no torch weight; an in-place edit is keyed by the weights."""
    cache = tmp_path / "cache"
    backbone = PairRM.from_pretrained(tiny_hf_dir, backend="torch").engine.model.pretrained_model
    by_files = openvino_backend._weights_key(backbone, "fp32")
    unrecorded = PairRM.from_pretrained(tiny_hf_dir, backend="torch").engine.model.pretrained_model
    del unrecorded.__dict__["_pairrm_checkpoint"]
    by_weights = openvino_backend._weights_key(unrecorded, "fp32")
    assert by_files != by_weights  # two ways to name the same weights, each stable
    assert openvino_backend._weights_key(backbone, "fp32") == by_files
    weight = backbone.encoder.layer[0].output.dense.weight
    kept = weight[0, 0].item()
    with torch.no_grad():
        weight[0, 0] += 0.5
    edited = openvino_backend._weights_key(backbone, "fp32")
    assert edited not in (by_files, by_weights)
    with torch.no_grad():
        weight[0, 0] = kept  # the same values again, now known by their bytes
    assert openvino_backend._weights_key(backbone, "fp32") == by_weights
    assert not cache.exists()


@needs_openvino
def test_one_model_object_shared_by_an_openvino_and_a_torch_ranker(tiny_hf_dir, ov_cache, tiny_rm):
    """A model handed to OpenVINO (weights released) and then to torch engines still runs right on both."""
    from pairrm_hf import load_pairrm

    loaded = load_pairrm(tiny_hf_dir)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PAIRRM_OPENVINO_CACHE", str(ov_cache))
        ov = PairRM(loaded.model, loaded.tokenizer, backend="openvino")
        assert ov.engine.openvino_backbone.torch_weights_released
        on_torch = PairRM(loaded.model, loaded.tokenizer, device="cpu", backend="torch")
        again = PairRM(loaded.model, loaded.tokenizer, backend="openvino")  # releases the shared weights again
    want = np.stack(tiny_rm.comparison_matrices(PROMPTS[:1], CANDS[:1]))
    for rm in (ov, on_torch, again):
        got = np.stack(rm.comparison_matrices(PROMPTS[:1], CANDS[:1]))
        assert float(np.abs(got - want).max()) <= 1e-5


@needs_openvino
def test_cli_backend_auto_is_the_default_and_reads_the_cache(
    ov_rm, ov_cache, tiny_hf_dir, tiny_rm, tmp_path, monkeypatch, caplog
):
    from pairrm_hf.cli import main
    from pairrm_hf.cli.main import build_parser
    from pairrm_hf.jobs.io import read_table, write_rows

    assert build_parser().parse_args(["serve", "--model", "m"]).backend is None  # None: $PAIRRM_BACKEND, else auto
    assert build_parser().parse_args(["serve", "--model", "m", "--backend", "auto"]).backend == "auto"
    monkeypatch.delenv("PAIRRM_BACKEND", raising=False)
    monkeypatch.setenv("PAIRRM_OPENVINO_CACHE", str(ov_cache))
    write_rows(tmp_path / "in.jsonl", [{"prompt": p, "candidates": c} for p, c in zip(PROMPTS, CANDS)])
    monkeypatch.setattr(openvino_backend, "_LOGGED_CHOICES", set())
    entries = sorted(p.name for p in ov_cache.iterdir())
    out = tmp_path / "out.jsonl"
    args = ["rank", tmp_path / "in.jsonl", "-o", out, "--model", tiny_hf_dir, "--backend", "auto", "--device", "cpu"]
    with caplog.at_level(logging.INFO, logger="pairrm_hf.ranking"):
        assert main([*map(str, args), "--no-progress"]) == 0
    assert any("backend='auto' runs on openvino" in r.getMessage() for r in caplog.records)
    assert sorted(p.name for p in ov_cache.iterdir()) == entries  # the fixture's entry, read back
    for got, want in zip(read_table(out).rows, tiny_rm.rank_batch(PROMPTS, CANDS)):
        np.testing.assert_allclose(got["pairrm_scores"], want.scores, atol=1e-5)


def test_weights_that_cannot_be_written_stay_in_memory(tmp_path, caplog):
    """No copy on disk (e.g. a read-only or vanished cache folder), no release: the load goes on with torch's weights."""
    backbone = nn.Sequential(nn.Linear(3, 2))
    before = backbone[0].weight.detach().clone()
    with caplog.at_level(logging.WARNING, logger="pairrm_hf.ranking"):
        openvino_backend.release_backbone_weights(backbone, tmp_path / "vanished" / "torch_backbone.safetensors")
    assert not backbone[0].weight.is_meta and torch.equal(backbone[0].weight, before)
    assert "_pairrm_released" not in backbone.__dict__
    assert any("keeping the torch backbone's weights" in r.getMessage() for r in caplog.records)
    assert not list(tmp_path.iterdir())


@needs_openvino
def test_a_nearly_full_disk_compiles_without_the_blob_cache(tiny_hf_dir, tiny_rm, tmp_path, monkeypatch, caplog):
    """A blob cut short by a full disk crashed the next load: with too little room, no blob is written (forced here
    by reporting no free space) and the model still runs, exactly."""
    monkeypatch.setenv("PAIRRM_OPENVINO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(
        openvino_backend.shutil, "disk_usage", lambda path: type("Usage", (), {"free": 0, "total": 2**30})()
    )
    with caplog.at_level(logging.WARNING, logger="pairrm_hf.ranking"):
        rm = PairRM.from_pretrained(tiny_hf_dir, backend="openvino")
    entry = rm.engine.openvino_backbone.cache_entry
    assert (entry / "backbone.xml").exists() and not (entry / "compiled").exists()
    said = [r.getMessage() for r in caplog.records if "blob cache" in r.getMessage()]
    assert len(said) == 1 and "free under" in said[0]
    ours = np.stack(rm.comparison_matrices(PROMPTS[:1], CANDS[:1]))
    assert float(np.abs(ours - np.stack(tiny_rm.comparison_matrices(PROMPTS[:1], CANDS[:1]))).max()) <= 1e-5
