"""int8 on the file-job commands: ``pairrm rank|compare|score|label FILE --quantize int8 [--calibration FILE]``.

* a real job at torch dynamic int8 writes scores that differ a little from fp32 and rank the same where fp32 is clear;
* quantization is part of the job's identity: resuming at another precision, with another backend for int8 or
  with other calibration rows is refused; the calibration counts by its content, not its path;
* the process-wide model (``shared_pairrm``) is never shared between precisions or calibrations;
* bad options and bad calibration files stop the command before anything is written or computed;
* ``pairrm rank --prompt``, ``pairrm eval`` and ``pairrm distill`` take the same options; ``pairrm info`` reports
  what a quantized load gives and ``pairrm demo`` serves an int8 model.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from pairrm_hf.cli import main
from pairrm_hf.cli.eval_command import eval_main
from pairrm_hf.jobs.io import InputError, write_rows
from pairrm_hf.jobs.runner import JobConfig, cpu_backend, read_job_calibration
from pairrm_hf.ranking import ranker as ranker_module
from pairrm_hf.ranking.openvino_backend import openvino_available
from pairrm_hf.ranking.ranker import shared_pairrm

ROWS = [
    {
        "prompt": f"Question {i}: what is {i} + {i}?",
        "candidates": [f"{2 * i}", f"maybe {i}", "no idea", f"{i}{i}", f"The answer is {2 * i}."],
    }
    for i in range(10)
]
#: calibration rows like the job's rows, none of them the same
CALIBRATION = [
    {"prompt": f"Question {k}: how many legs has a {animal}?", "candidates": [f"{legs}", "a few", f"{legs} legs."]}
    for k, (animal, legs) in enumerate([("cat", 4), ("bird", 2), ("spider", 8), ("ant", 6)])
]


@pytest.fixture(scope="module")
def model(tiny_hf_dir) -> str:
    return str(tiny_hf_dir)


def _run(*args) -> int:
    return main([*map(str, args), "--no-progress"])


def _input(folder: Path, rows=ROWS, name: str = "in.jsonl") -> Path:
    path = folder / name
    write_rows(path, rows)
    return path


def _calibration(path: Path, rows=CALIBRATION) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _scores(path: Path) -> list[np.ndarray]:
    return [np.asarray(json.loads(line)["pairrm_scores"]) for line in path.read_text().splitlines()]


# ----------------------------------------------------------------------------------------------------- a real job
def test_int8_job_scores_move_a_little_and_rank_the_same(model, tmp_path):
    src = _input(tmp_path)
    fp32, int8 = tmp_path / "fp32.jsonl", tmp_path / "int8.jsonl"
    assert _run("rank", src, "-o", fp32, "--model", model, "--backend", "torch") == 0
    assert _run("rank", src, "-o", int8, "--model", model, "--backend", "torch", "--quantize", "int8") == 0
    ref, got = _scores(fp32), _scores(int8)
    diff = max(np.abs(g - r).max() for g, r in zip(got, ref))
    # the tiny random model (scores within ±0.2, half the candidate gaps under 0.05) is a hard case for int8: its
    # scores move by up to ~0.05 (test_openvino_quantization allows 0.15); real checkpoints by ~1e-2
    # (docs/guides/backends.md)
    assert 0 < diff < 0.1
    agree = clear = total = 0
    for r, g in zip(ref, got):
        for i in range(len(r)):
            for j in range(i + 1, len(r)):
                total += 1
                same = np.sign(r[i] - r[j]) == np.sign(g[i] - g[j])
                agree += bool(same)
                if abs(r[i] - r[j]) > 0.1:  # a clear fp32 decision keeps its order
                    clear += 1
                    assert same, (r, g)
    assert clear >= 10  # and such clear decisions exist in these rows
    # near-ties may swap (measured: 88 of the 100 candidate pairs keep their order, every swapped gap < 0.07)
    assert agree / total >= 0.8, (agree, total)
    # the input columns and row order are the job's as ever
    rows = [json.loads(line) for line in int8.read_text().splitlines()]
    assert [{k: row[k] for k in ("prompt", "candidates")} for row in rows] == ROWS


def test_label_job_with_int8(model, tmp_path):
    """Every file-job command takes the options (``label`` here; all share one parser function)."""
    src = _input(tmp_path)
    out = tmp_path / "dpo.jsonl"
    assert _run("label", src, "-o", out, "--model", model, "--backend", "torch", "--quantize", "int8") == 0
    pairs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(pairs) == len(ROWS) and all(p["score_chosen"] > p["score_rejected"] for p in pairs)


# ----------------------------------------------------------------------------------------------------- identity
def test_resume_at_another_precision_or_backend_is_refused(model, tmp_path, capsys):
    src = _input(tmp_path)
    out = tmp_path / "o.jsonl"
    base = ["rank", src, "-o", out, "--model", model, "--chunk-size", 2]
    assert _run(*base, "--backend", "torch", "--shard", "0/2") == 0  # fp32 chunks 0, 2, 4: an unfinished job
    capsys.readouterr()
    assert _run(*base, "--backend", "torch", "--quantize", "int8") == 2
    err = capsys.readouterr().err
    assert "unfinished job with different quantize" in err and "--overwrite" in err
    assert sorted(p.name for p in Path(f"{out}.parts").glob("chunk-*")) == [f"chunk-00000{k}.jsonl" for k in (0, 2, 4)]
    # --overwrite starts over at int8; then an fp32 resume of that int8 job is refused the same way
    assert _run(*base, "--backend", "torch", "--quantize", "int8", "--shard", "1/2", "--overwrite") == 0
    assert _run(*base, "--backend", "torch") == 2
    assert "unfinished job with different quantize" in capsys.readouterr().err
    # int8 on OpenVINO is other numbers than torch's dynamic int8: the backend counts once int8 is asked for
    assert _run(*base, "--backend", "openvino", "--quantize", "int8") == 2
    assert "unfinished job with different quantize" in capsys.readouterr().err
    # torch's dynamic int8 measures activation ranges per batch: there the batch size changes scores too
    assert _run(*base, "--backend", "torch", "--quantize", "int8", "--batch-size", 4) == 2
    assert "unfinished job with different quantize" in capsys.readouterr().err
    # the same command resumes: the int8 chunks (1 and 3 of 0-4) are kept and the rest computed at int8
    assert _run(*base, "--backend", "torch", "--quantize", "int8") == 0
    assert "computed now: 3 chunks / 6 rows (2 chunks were already done)" in capsys.readouterr().err
    # byte-identical to a clean int8 run of the same chunks (dynamic int8 measures activation ranges per forward
    # batch, so unlike fp32 its scores follow which rows share a batch: the chunk size is part of the identity)
    clean = tmp_path / "clean.jsonl"
    assert (
        _run("rank", src, "-o", clean, "--model", model, "--chunk-size", 2, "--backend", "torch", "--quantize", "int8")
        == 0
    )
    assert out.read_bytes() == clean.read_bytes()


def test_int8_shards_merge(model, tmp_path):
    """``pairrm merge`` rebuilds the shards' identity from the manifest: int8, its backend and batch size included."""
    src = _input(tmp_path)
    out = tmp_path / "o.jsonl"
    int8 = ["--model", model, "--chunk-size", 3, "--backend", "torch", "--quantize", "int8", "--batch-size", 8]
    for shard in ("0/2", "1/2"):
        assert _run("rank", src, "-o", out, *int8, "--shard", shard) == 0
    assert not out.exists()
    assert main(["merge", str(out)]) == 0
    clean = tmp_path / "clean.jsonl"
    assert _run("rank", src, "-o", clean, *int8) == 0
    assert out.read_bytes() == clean.read_bytes()


def test_identity_counts_the_calibration_by_content_and_size(model, tmp_path, monkeypatch):
    """Read before any model loads; the file's path is not part of it (a copy resumes), its rows and size are."""
    monkeypatch.delenv("PAIRRM_BACKEND", raising=False)
    src = _input(tmp_path)
    first = _calibration(tmp_path / "calib.jsonl")
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    copy = Path(shutil.copy(first, moved / "renamed.jsonl"))
    other = _calibration(tmp_path / "other.jsonl", CALIBRATION[:-1])

    def identity(**options) -> dict:
        cfg = JobConfig(str(src), str(tmp_path / "o.jsonl"), model=model, backend="openvino", quantize="int8")
        for name, value in options.items():
            setattr(cfg, name, value)
        return cfg.identity()

    weight_only = identity()
    assert weight_only["quantize"] == {"method": "int8", "backend": "openvino", "calibration": None}
    assert identity(batch_size=4) == weight_only  # OpenVINO's int8 does not depend on the batches
    torch_int8 = identity(backend="torch")["quantize"]
    assert torch_int8 == {"method": "int8", "backend": "torch", "calibration": None, "batch_size": 16}
    # packing changes which rows share torch's dynamic activation scales; fp32 packing changes no identity
    assert identity(backend="torch", packing=True)["quantize"] == {**torch_int8, "packing": True}
    assert identity(quantize=None, packing=True) == identity(quantize=None)
    calibrated = identity(calibration=str(first))
    assert calibrated["quantize"]["calibration"]["size"] == 256  # the default, spelled out
    assert identity(calibration=str(copy)) == calibrated
    assert identity(calibration=str(first), calibration_size=256) == calibrated
    assert identity(calibration=str(first), calibration_size=8) != calibrated
    assert identity(calibration=str(other)) != calibrated
    full = identity(quantize=None)
    assert full["quantize"] is None
    # every other key is a full-precision job's: quantization adds to the identity, it changes nothing else
    assert {k: v for k, v in calibrated.items() if k != "quantize"} == {
        k: v for k, v in full.items() if k != "quantize"
    }


def test_auto_backend_for_int8_is_resolved_from_the_options(model, tmp_path, monkeypatch):
    monkeypatch.delenv("PAIRRM_BACKEND", raising=False)

    def backend(**options) -> str:
        return cpu_backend(JobConfig("in.jsonl", "o.jsonl", model=model, quantize="int8", **options))[0]

    installed = "openvino" if openvino_available("int8") else "torch"
    assert backend() == installed
    assert backend(backend="auto") == installed
    assert backend(backend="torch") == "torch" and backend(backend="openvino") == "openvino"
    assert backend(attention="eager") == "torch"  # auto runs torch for eager attention (see auto_backend)
    assert backend(dtype="bfloat16") == installed  # OpenVINO int8 computes the rest in bf16 (see test_openvino_bf16)
    assert backend(dtype="float16") == "torch"
    monkeypatch.setenv("PAIRRM_BACKEND", "torch")
    assert backend() == "torch"


def test_shared_model_is_never_shared_between_precisions(model):
    fp32 = shared_pairrm(model, "cpu", None, 8, backend="torch")
    int8 = shared_pairrm(model, "cpu", None, 8, backend="torch", quantize="int8")
    assert int8 is not fp32 and int8.engine.reference_model is not None and fp32.engine.reference_model is None
    assert shared_pairrm(model, "cpu", None, 8, backend="torch", quantize="int8") is int8


# ----------------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--calibration", "{calib}"], "--calibration {calib}: calibration= calibrates static int8: it needs"),
        (
            ["--quantize", "int8", "--backend", "torch", "--calibration", "{calib}"],
            "backend='torch' runs torch's dynamic int8",
        ),
        (
            ["--quantize", "int8", "--backend", "auto", "--attention", "eager", "--calibration", "{calib}"],
            "--backend auto picks torch here (--attention eager)",
        ),
        (["--quantize", "int8", "--calibration-size", "8"], "--calibration-size needs --calibration"),
        (["--quantize", "int8", "--backend", "openvino", "--calibration", "{tmp}/missing.jsonl"], "cannot be read"),
        (
            ["--quantize", "int8", "--backend", "openvino", "--calibration", "{bad}"],
            "{bad}, row 1 (line 2): field 'candidates': expected a list of at least 2 answers",
        ),
        (
            ["--quantize", "int8", "--backend", "openvino", "--calibration", "{bad_prompt}"],
            "{bad_prompt}, row 0 (line 1): field 'prompt' must be a str",
        ),
        (["--quantize", "int8", "--device", "cuda"], "runs on CPU only"),
        (["--quantize", "int8", "--calibration-size", "0"], "--calibration-size: expected a positive integer"),
        (["--quantize", "int4"], "argument --quantize: invalid choice"),
    ],
)
def test_bad_options_stop_the_job_before_anything_is_written(options, message, model, tmp_path, capsys):
    src = _input(tmp_path)
    places = {
        "calib": _calibration(tmp_path / "calib.jsonl"),
        "bad": _calibration(tmp_path / "bad.jsonl", [CALIBRATION[0], {"prompt": "p", "candidates": ["only one"]}]),
        "bad_prompt": _calibration(tmp_path / "bad_prompt.jsonl", [{"prompt": 3, "candidates": ["a", "b"]}]),
        "tmp": tmp_path,
    }
    before = sorted(p.name for p in tmp_path.iterdir())

    def fill(text: str) -> str:
        for name, value in places.items():
            text = text.replace("{" + name + "}", str(value))
        return text

    out = tmp_path / "o.jsonl"
    assert _run("rank", src, "-o", out, "--model", model, *map(fill, options)) == 2
    assert fill(message) in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output, no job folder: nothing was started


def test_read_job_calibration_names_the_file(tmp_path):
    bad = _calibration(tmp_path / "c.jsonl", [{"prompt": "p", "answers": ["a", "b"]}])
    cfg = JobConfig("in.jsonl", "o.jsonl", backend="openvino", quantize="int8", calibration=str(bad))
    with pytest.raises(InputError, match=r"c\.jsonl, row 0 \(line 1\): missing field 'candidates'"):
        read_job_calibration(cfg)
    assert read_job_calibration(JobConfig("in.jsonl", "o.jsonl")) is None


# ------------------------------------------------------------------------------------------- other commands
def test_single_prompt_rank_takes_int8(model, capsys):
    args = ["rank", "--model", model, "--prompt", "2+2?", "--candidates", "4", "five", "I think it is 4."]
    assert main([*args, "--backend", "torch", "--json"]) == 0
    fp32 = json.loads(capsys.readouterr().out)
    assert main([*args, "--backend", "torch", "--quantize", "int8", "--json"]) == 0
    int8 = json.loads(capsys.readouterr().out)
    by_index = {r["index"]: r["score"] for r in fp32}
    diff = [abs(r["score"] - by_index[r["index"]]) for r in int8]
    assert 0 < max(diff) < 0.1
    assert main([*args, "--backend", "torch", "--calibration", "c.jsonl"]) == 2
    assert "needs quantize='int8'" in capsys.readouterr().err


def test_eval_and_distill_take_the_options(model, tmp_path, capsys, monkeypatch):
    pref = tmp_path / "pref.jsonl"
    pref.write_text(
        "".join(
            json.dumps({"prompt": f"Q{i}?", "chosen": f"The answer is {i}.", "rejected": "no"}) + "\n" for i in range(4)
        )
    )
    calib = _calibration(tmp_path / "calib.jsonl")
    # --backend torch: torch's dynamic int8, no conversion; the same through $PAIRRM_BACKEND
    assert (
        eval_main(
            ["--model", model, "--data", str(pref), "--device", "cpu", "--quantize", "int8", "--backend", "torch"]
        )
        == 0
    )
    accuracy = json.loads(capsys.readouterr().out)["accuracy"]
    assert 0 <= accuracy <= 1
    monkeypatch.setenv("PAIRRM_BACKEND", "torch")
    assert eval_main(["--model", model, "--data", str(pref), "--device", "cpu", "--quantize", "int8"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == accuracy
    with pytest.raises(SystemExit) as exit_info:  # argparse names the choices
        eval_main(["--model", model, "--data", str(pref), "--backend", "onnx"])
    assert exit_info.value.code == 2 and "invalid choice: 'onnx'" in capsys.readouterr().err
    assert eval_main(["--model", model, "--data", str(pref), "--calibration", str(calib)]) == 2
    assert "needs quantize='int8'" in capsys.readouterr().err
    # distill: the teacher's options are checked before it loads (and before any training)
    args = ["distill", str(_input(tmp_path)), "-o", str(tmp_path / "student"), "--model", model]
    assert main([*args, "--calibration", str(calib)]) == 2
    assert "needs quantize='int8'" in capsys.readouterr().err
    assert not (tmp_path / "student").exists()


def _info(model: str, capsys, *options) -> dict:
    assert main(["info", "--model", model, "--json", *map(str, options)]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_info_reports_what_a_quantized_load_gives(model, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PAIRRM_BACKEND", raising=False)
    plain = _info(model, capsys)
    assert plain["quantize"] is None and "backend" not in plain  # no --quantize: the checkpoint only, no engine
    torch_int8 = _info(model, capsys, "--quantize", "int8", "--backend", "torch")
    assert torch_int8["quantize"] == {"method": "int8", "backend": "torch", "scheme": "dynamic", "calibration": None}
    assert torch_int8["backend"] == "torch" and torch_int8["device"] == "cpu"
    # everything else is the checkpoint's, as without --quantize (parameters: the fp32 model's)
    assert {k: v for k, v in torch_int8.items() if k not in ("quantize", "backend")} == {
        k: v for k, v in plain.items() if k != "quantize"
    }
    calib = _calibration(tmp_path / "calib.jsonl")
    bad = _calibration(tmp_path / "bad.jsonl", [CALIBRATION[0], {"prompt": "p", "candidates": ["only one"]}])
    assert main(["info", "--model", model, "--calibration", str(calib)]) == 2
    assert "needs quantize='int8'" in capsys.readouterr().err
    assert (
        main(["info", "--model", model, "--quantize", "int8", "--backend", "openvino", "--calibration", str(bad)]) == 2
    )
    assert f"{bad}, row 1 (line 2): field 'candidates'" in capsys.readouterr().err
    assert main(["info", "--model", model, "--quantize", "int8", "--device", "cuda"]) == 2
    assert "runs on CPU only" in capsys.readouterr().err
    if not openvino_available("int8"):
        return
    monkeypatch.setenv("PAIRRM_OPENVINO_CACHE", str(tmp_path / "ov-cache"))
    weight_only = _info(model, capsys, "--quantize", "int8")  # auto picks OpenVINO for int8 when it is installed
    assert weight_only["quantize"] == {
        "method": "int8",
        "backend": "openvino",
        "scheme": "weight-only",
        "calibration": None,
    }
    static = _info(model, capsys, "--quantize", "int8", "--calibration", calib, "--calibration-size", 8)
    rows = read_job_calibration(
        JobConfig("in.jsonl", "o.jsonl", quantize="int8", calibration=str(calib), calibration_size=8)
    )
    assert static["quantize"] == {
        "method": "int8",
        "backend": "openvino",
        "scheme": "static",
        "calibration": {"rows": rows.fingerprint, "size": 8},  # the digest a job's identity holds
    }


def _demo_scores(demo, model: str, prompt: str, candidates: list[str]) -> dict[int, float]:
    """Scores by candidate index as the page shows them (the rank function its button calls)."""
    (rank,) = [f.fn for f in demo.fns.values() if f.api_name == "rank"]
    ranking_html = rank(model, prompt, "", "\n".join(candidates))[0]
    cells = re.findall(r'<tr class="pairrm-rank"><td>\d+</td><td>([-+][\d.]+)</td><td>(\d+)</td>', ranking_html)
    assert len(cells) == len(candidates)
    return {int(index) - 1: float(score) for score, index in cells}


def test_demo_serves_int8_like_serve(model, tmp_path, capsys, monkeypatch):
    """``pairrm demo --quantize int8``: the page ranks with the int8 model (built by the command as it is served;
    only Gradio's launch is replaced, so no server starts); bad options stop the command before it serves."""
    gradio = pytest.importorskip("gradio")
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    monkeypatch.setattr(ranker_module, "_SHARED", {})
    launched = []
    monkeypatch.setattr(gradio.Blocks, "launch", lambda self, **kwargs: launched.append(self))
    args = ["demo", "--model", model, "--backend", "torch"]
    assert main([*args, "--quantize", "int8"]) == 0
    (demo,) = launched
    prompt, answers = "2+2?", ["4", "five", "I think it is 4.", "no idea"]
    shown = _demo_scores(demo, model, prompt, answers)
    (int8,) = ranker_module._SHARED.values()
    assert int8.engine.reference_model is not None and int8.device.type == "cpu"  # torch's dynamic int8 on the CPU
    want = {r.index: r.score for r in int8.rank(prompt, answers)}
    assert all(abs(shown[i] - want[i]) < 1e-4 for i in want)  # shown with 4 decimals
    fp32 = {r.index: r.score for r in shared_pairrm(model, "cpu", None, 16, backend="torch").rank(prompt, answers)}
    assert 0 < max(abs(shown[i] - fp32[i]) for i in fp32) < 0.1  # int8 numbers, not the fp32 model's
    bad = _calibration(tmp_path / "bad.jsonl", [{"prompt": 3, "candidates": ["a", "b"]}])
    assert main([*args, "--calibration", str(bad)]) == 2
    assert "needs quantize='int8'" in capsys.readouterr().err
    openvino = ["demo", "--model", model, "--backend", "openvino", "--quantize", "int8"]
    assert main([*openvino, "--calibration", str(bad)]) == 2
    assert f"{bad}, row 0 (line 1): field 'prompt' must be a str" in capsys.readouterr().err
    assert main([*args, "--quantize", "int8", "--device", "cuda"]) == 2
    assert "runs on CPU only" in capsys.readouterr().err
    assert len(launched) == 1 and len(ranker_module._SHARED) == 2  # none of them served or loaded anything


# ------------------------------------------------------------------------------------------- OpenVINO static int8
@pytest.mark.skipif(not openvino_available("int8"), reason="openvino and nncf are not installed")
def test_static_int8_job_resumes_by_calibration_content(model, tmp_path, monkeypatch, capsys):
    """One static-int8 job on the tiny model (8 calibration pairs): other rows are refused, a copy of the same rows
    at another path resumes, and the process's model is the one the job loaded."""
    monkeypatch.setenv("PAIRRM_OPENVINO_CACHE", str(tmp_path / "ov-cache"))
    src = _input(tmp_path)
    calib = _calibration(tmp_path / "calib.jsonl")
    other = _calibration(tmp_path / "other.jsonl", CALIBRATION[1:])
    moved = tmp_path / "moved"
    moved.mkdir()
    copy = Path(shutil.copy(calib, moved / "same-rows.jsonl"))
    out = tmp_path / "o.jsonl"
    base = ["rank", src, "-o", out, "--model", model, "--chunk-size", 5, "--backend", "openvino", "--quantize", "int8"]
    size = ["--calibration-size", 8]
    assert _run(*base, "--calibration", calib, *size, "--shard", "0/2") == 0
    assert _run(*base, "--calibration", other, *size) == 2
    assert "unfinished job with different quantize" in capsys.readouterr().err
    assert _run(*base, "--calibration", calib, "--calibration-size", 16) == 2
    assert "unfinished job with different quantize" in capsys.readouterr().err
    assert _run(*base, "--calibration", copy, *size) == 0
    assert "computed now: 1 chunks" in capsys.readouterr().err
    loaded = len(ranker_module._SHARED)
    # the model the job loaded, found by the rows' content (the job read them from the other path)
    calibrated = shared_pairrm(model, backend="openvino", quantize="int8", calibration=str(copy), calibration_size=8)
    assert len(ranker_module._SHARED) == loaded
    assert calibrated.engine.openvino_backbone.precision == "int8-static"
    fp32 = tmp_path / "fp32.jsonl"
    assert _run("rank", src, "-o", fp32, "--model", model, "--backend", "torch") == 0
    diff = max(np.abs(g - r).max() for g, r in zip(_scores(out), _scores(fp32)))
    assert 0 < diff < 0.15  # the tiny model's bound of test_openvino_quantization
