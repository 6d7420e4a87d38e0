"""int8 through the library hooks: ``batch_fn`` / ``rank_batch_fn`` (``datasets.Dataset.map``) and ``PairRMPredictor``.

* ``Dataset.map`` with ``quantize="int8"`` writes the very columns of ``pairrm rank FILE --quantize int8`` on the same
  rows (torch's dynamic int8, OpenVINO's weight-only and static int8), from the very model the job loaded;
* torch's int8 moves scores from fp32 by a bounded, non-zero amount;
* ``PairRMPredictor`` (called directly on batch dicts, as Ray calls it) gives the same columns;
* bad options and bad calibration files raise when the callable is built, before any model loads; the callable
  holds the checked rows and pickles without the file.

A real Ray Data run with int8 is in ``tests/test_ray_data.py``.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from pairrm_hf.cli import main
from pairrm_hf.jobs.io import write_rows
from pairrm_hf.jobs.map_functions import BatchFn, PairRMPredictor, batch_fn, rank_batch_fn
from pairrm_hf.ranking import ranker as ranker_module
from pairrm_hf.ranking.openvino_backend import openvino_available

datasets = pytest.importorskip("datasets")

ROWS = [
    {
        "prompt": f"Question {i}: what is {i} + {i}?",
        "candidates": [f"{2 * i}", f"maybe {i}", "no idea", f"{i}{i}", f"The answer is {2 * i}."],
    }
    for i in range(10)
]
CALIBRATION = [
    {"prompt": f"Question {k}: how many legs has a {animal}?", "candidates": [f"{legs}", "a few", f"{legs} legs."]}
    for k, (animal, legs) in enumerate([("cat", 4), ("bird", 2), ("spider", 8), ("ant", 6)])
]
#: rows per chunk of the CLI job and per batch of ``map``: torch's dynamic int8 measures activation ranges per forward
#: batch, so the same rows must share a batch on both sides for the numbers to be the same
CHUNK = 5
NEEDS_OPENVINO = pytest.mark.skipif(not openvino_available("int8"), reason="openvino and nncf are not installed")


@pytest.fixture
def model(tiny_hf_dir, monkeypatch, tmp_path) -> str:
    monkeypatch.setattr(ranker_module, "_SHARED", {})  # an empty process cache: each test counts its own loads
    monkeypatch.setenv("PAIRRM_OPENVINO_CACHE", str(tmp_path / "ov-cache"))
    monkeypatch.delenv("PAIRRM_BACKEND", raising=False)
    return str(tiny_hf_dir)


def _calibration(path: Path, rows=CALIBRATION) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _cli_rank(tmp_path: Path, model: str, *options) -> list[dict]:
    src, out = tmp_path / "in.jsonl", tmp_path / f"cli-{len(list(tmp_path.iterdir()))}.jsonl"
    write_rows(src, ROWS)
    args = ["rank", src, "-o", out, "--model", model, "--chunk-size", CHUNK, "--no-progress", *options]
    assert main([str(a) for a in args]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def _map(fn: BatchFn) -> list[dict]:
    ds = datasets.Dataset.from_list(ROWS).map(fn, batched=True, batch_size=CHUNK, with_rank=True)
    return list(ds)


def _assert_same_columns(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want) and [list(g) for g in got] == [list(w) for w in want]
    for g, w in zip(got, want):
        assert g["pairrm_ranks"] == w["pairrm_ranks"]
        np.testing.assert_allclose(g["pairrm_scores"], w["pairrm_scores"], rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("backend", "calibrated"),
    [
        ("torch", False),
        pytest.param("openvino", False, marks=NEEDS_OPENVINO),
        pytest.param("openvino", True, marks=NEEDS_OPENVINO),
    ],
)
def test_dataset_map_int8_equals_the_cli_job(backend, calibrated, model, tmp_path):
    calibration = _calibration(tmp_path / "calib.jsonl") if calibrated else None
    options = ["--backend", backend, "--quantize", "int8"]
    if calibrated:
        options += ["--calibration", calibration, "--calibration-size", 8]
    cli = _cli_rank(tmp_path, model, *options)
    (job_model,) = ranker_module._SHARED.values()
    fn = rank_batch_fn(
        model=model,
        backend=backend,
        quantize="int8",
        calibration=None if calibration is None else str(calibration),
        calibration_size=8 if calibrated else None,
    )
    got = _map(fn)
    _assert_same_columns(got, cli)
    # the same shared-model key as the job's: map ran on the model the job loaded, nothing was loaded again
    assert list(ranker_module._SHARED.values()) == [job_model] and fn.shared_model(0) is job_model
    precision = job_model.engine.openvino_backbone.precision if backend == "openvino" else None
    assert precision == {"torch": None, "openvino": "int8-static" if calibrated else "int8"}[backend]
    assert job_model.backend == backend and job_model.device.type == "cpu"


def test_torch_int8_map_moves_scores_a_little_from_fp32(model):
    fp32 = _map(rank_batch_fn(model=model, device="cpu", backend="torch"))
    int8 = _map(rank_batch_fn(model=model, backend="torch", quantize="int8"))
    assert len(ranker_module._SHARED) == 2  # one model per precision, never shared
    diff = max(np.abs(np.subtract(i["pairrm_scores"], f["pairrm_scores"])).max() for i, f in zip(int8, fp32))
    # the tiny random model's int8 error (test_job_quantize allows the same 0.1); 0 would mean fp32 ran
    assert 0 < diff < 0.1, diff
    clear = 0
    for i, f in zip(int8, fp32):
        r, g = np.asarray(f["pairrm_scores"]), np.asarray(i["pairrm_scores"])
        for a in range(len(r)):
            for b in range(a + 1, len(r)):
                if abs(r[a] - r[b]) > 0.1:  # a clear fp32 decision keeps its order at int8
                    clear += 1
                    assert np.sign(r[a] - r[b]) == np.sign(g[a] - g[b])
    assert clear >= 10


def test_predictor_int8_on_batch_dicts_equals_dataset_map(model):
    """``PairRMPredictor`` as Ray calls it: built once (it loads the model), then called on batches."""
    want = _map(rank_batch_fn(model=model, backend="torch", quantize="int8"))
    predictor = PairRMPredictor(model=model, backend="torch", quantize="int8")
    assert len(ranker_module._SHARED) == 1  # the constructor took the map's model, torch's dynamic int8
    assert predictor.fn.shared_model(0).engine.reference_model is not None
    got: list[dict] = []
    for start in range(0, len(ROWS), CHUNK):
        part = ROWS[start : start + CHUNK]
        out = predictor({"prompt": [r["prompt"] for r in part], "candidates": [r["candidates"] for r in part]})
        got += [{k: out[k][j] for k in out} for j in range(len(part))]
    _assert_same_columns(got, want)
    # Ray's numpy batches: the new list columns come back as object arrays of lists, with the same numbers
    cands = np.empty(CHUNK, dtype=object)
    for j, r in enumerate(ROWS[:CHUNK]):
        cands[j] = np.array(r["candidates"])
    out = predictor({"prompt": np.array([r["prompt"] for r in ROWS[:CHUNK]]), "candidates": cands})
    assert isinstance(out["pairrm_scores"], np.ndarray)
    for j in range(CHUNK):
        np.testing.assert_allclose(out["pairrm_scores"][j], want[j]["pairrm_scores"], rtol=0, atol=1e-6)
    # label through the predictor at int8: one pair per row, chosen scored above rejected
    labeller = PairRMPredictor(model=model, task="label", backend="torch", quantize="int8")
    pairs = labeller(
        {"prompt": [r["prompt"] for r in ROWS[:CHUNK]], "candidates": [r["candidates"] for r in ROWS[:CHUNK]]}
    )
    assert len(pairs["chosen"]) == CHUNK and all(c > r for c, r in zip(pairs["score_chosen"], pairs["score_rejected"]))


@pytest.mark.parametrize(
    "build",
    [
        lambda m, **kw: rank_batch_fn(model=m, **kw),
        lambda m, **kw: batch_fn("score", m, **kw),
        lambda m, **kw: PairRMPredictor(model=m, **kw),
    ],
    ids=["rank_batch_fn", "batch_fn", "PairRMPredictor"],
)
def test_bad_calibration_raises_at_construction_naming_file_and_row(build, model, tmp_path):
    bad = _calibration(tmp_path / "bad.jsonl", [CALIBRATION[0], {"prompt": "p", "candidates": ["only one"]}])
    good = _calibration(tmp_path / "good.jsonl")
    cases = [
        (
            dict(backend="openvino", quantize="int8", calibration=str(bad)),
            rf"{bad}, row 1 \(line 2\): field 'candidates': expected a list of at least 2 answers",
        ),
        (
            dict(backend="openvino", quantize="int8", calibration=str(tmp_path / "missing.jsonl")),
            r"missing\.jsonl' cannot be read",
        ),
        (dict(calibration=str(good)), r"needs quantize='int8' \(got quantize=None\)"),
        (dict(backend="torch", quantize="int8", calibration=str(good)), "backend='torch' runs torch's dynamic int8"),
        # auto would pick torch for a fp16 model: refused now, not when the first batch loads the model
        (
            dict(dtype="float16", quantize="int8", calibration=str(good)),
            r"good\.jsonl\) calibrates OpenVINO's static int8, but backend='auto' picks torch here \(--dtype float16\)",
        ),
        (dict(quantize="int8", calibration_size=8), "calibration_size= needs calibration="),
        (dict(quantize="int8", device="cuda"), "runs on CPU only"),
        (dict(quantize="int4"), "quantize must be one of"),
        (dict(backend="onnx"), "onnx"),
    ]
    for options, message in cases:
        with pytest.raises(ValueError, match=message):
            build(model, **options)
    assert ranker_module._SHARED == {}  # nothing was loaded for any of them


def test_callable_holds_the_checked_rows_and_pickles_without_the_file(model, tmp_path):
    path = _calibration(tmp_path / "calib.jsonl")
    fn = rank_batch_fn(model=model, backend="openvino", quantize="int8", calibration=str(path), calibration_size=8)
    assert fn.calibration.size == 8 and len(fn.calibration.text.sources) == len(CALIBRATION)
    assert ranker_module._SHARED == {}  # checked, not loaded: the model loads on the first batch, in the worker
    path.unlink()  # a datasets worker or Ray actor elsewhere needs only the pickled callable
    copy = pickle.loads(pickle.dumps(fn))
    assert copy.calibration.fingerprint == fn.calibration.fingerprint and copy.quantize == "int8"
    # rows in memory are accepted as they are by from_pretrained, with the same digest as the file's
    rows = rank_batch_fn(model=model, backend="openvino", quantize="int8", calibration=CALIBRATION, calibration_size=8)
    assert rows.calibration.fingerprint == fn.calibration.fingerprint
