"""The ``pairrm`` command and the job runner: formats, parity with the PairRM API, resume, shards, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pairrm_hf.cli import main
from pairrm_hf.jobs.io import read_table, write_rows
from pairrm_hf.ranking.preferences import preference_pairs as select_pairs

ROWS = [
    {
        "id": 0,
        "prompt": "What is the capital of France?",
        "candidates": ["Paris.", "Berlin is.", "I don't know."],
        "a": "Paris.",
        "b": "Berlin.",
        "ref": "Paris is the capital.",
        "inst": "Answer briefly. ",
    },
    {
        "id": 1,
        "prompt": "Write a haiku about rain.",
        "candidates": ["Rain falls softly down", "no"],
        "a": "no",
        "b": "Rain on the roof",
        "ref": "Drops on leaves",
        "inst": "Be poetic. ",
    },
    {"id": 2, "prompt": "2+2?", "candidates": ["4", "5", "four", "22"], "a": "4", "b": "4", "ref": "4", "inst": ""},
]
FORMATS = ["jsonl", "json", "csv", "parquet"]
ATOL = 1e-5


@pytest.fixture(scope="module")
def model(tiny_hf_dir) -> str:
    return str(tiny_hf_dir)


def _write_input(folder: Path, fmt: str, rows=ROWS) -> Path:
    path = folder / f"in.{fmt}"
    write_rows(path, rows)
    return path


def _read_output(path: Path) -> list[dict]:
    rows = read_table(path).rows
    for row in rows:  # CSV cells hold lists and numbers as text
        for key, value in row.items():
            numeric = key == "id" or key.startswith(("pairrm_", "score_", "rank_")) or key.endswith("_index")
            if isinstance(value, str) and (value[:1] == "[" or numeric):
                row[key] = json.loads(value)
    return rows


def _run(*args) -> int:
    return main([*map(str, args), "--no-progress"])


# ------------------------------------------------------------------------------------------- parity, per format
def test_single_prompt_rank_still_works(model, tiny_rm, capsys):
    assert main(["rank", "--prompt", "Hi?", "--candidates", "Hello!", "Go away", "--model", model, "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    want = tiny_rm.rank("Hi?", ["Hello!", "Go away"])
    assert [g["index"] for g in got] == [w.index for w in want]
    np.testing.assert_allclose([g["score"] for g in got], [w.score for w in want], atol=ATOL)


@pytest.mark.parametrize("fmt", FORMATS)
def test_rank_each_format_matches_api(fmt, model, tiny_rm, tmp_path):
    out = tmp_path / f"out.{fmt}"
    assert _run("rank", _write_input(tmp_path, fmt), "-o", out, "--model", model, "--chunk-size", 2) == 0
    got = _read_output(out)
    want = tiny_rm.rank_batch([r["prompt"] for r in ROWS], [r["candidates"] for r in ROWS])
    assert [int(g["id"]) for g in got] == [0, 1, 2] and [g["candidates"] for g in got] == [
        r["candidates"] for r in ROWS
    ]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g["pairrm_scores"], w.scores, atol=ATOL)
        assert g["pairrm_ranks"] == w.ranks.tolist()
    assert not os.path.exists(str(out) + ".parts")  # work folder removed after assembly


@pytest.mark.parametrize("fmt", FORMATS)
def test_compare_each_format_matches_api(fmt, model, tiny_rm, tmp_path):
    out = tmp_path / f"out.{fmt}"
    assert (
        _run("compare", _write_input(tmp_path, fmt), "-o", out, "--model", model, "--instruction-column", "inst") == 0
    )
    got = _read_output(out)
    want = tiny_rm.compare(
        [r["prompt"] for r in ROWS],
        [r["a"] for r in ROWS],
        [r["b"] for r in ROWS],
        instructions=[r["inst"] for r in ROWS],
    )
    np.testing.assert_allclose([g["pairrm_logit"] for g in got], want, atol=ATOL)
    assert got[2]["pairrm_logit"] == 0.0  # identical answers: the symmetric logit is exactly 0
    np.testing.assert_allclose([g["pairrm_prob_a"] for g in got], 1 / (1 + np.exp(-want)), atol=ATOL)


@pytest.mark.parametrize("fmt", FORMATS)
def test_score_each_format_matches_api(fmt, model, tiny_rm, tmp_path):
    out = tmp_path / f"out.{fmt}"
    assert _run("score", _write_input(tmp_path, fmt), "-o", out, "--model", model, "--reference-column", "ref") == 0
    got = _read_output(out)
    want = tiny_rm.rank_with_ref(
        [r["prompt"] for r in ROWS], [r["candidates"] for r in ROWS], references=[r["ref"] for r in ROWS]
    )
    for g, w in zip(got, want):
        np.testing.assert_allclose(g["pairrm_rewards"], w, atol=ATOL)


@pytest.mark.parametrize("fmt", FORMATS)
def test_label_each_format(fmt, model, tiny_rm, tmp_path):
    out = tmp_path / f"out.{fmt}"
    assert _run("label", _write_input(tmp_path, fmt), "-o", out, "--model", model, "--strategy", "all_pairs") == 0
    got = _read_output(out)
    expected = []
    for row, ranking in zip(ROWS, tiny_rm.rank_batch([r["prompt"] for r in ROWS], [r["candidates"] for r in ROWS])):
        s = ranking.scores
        order = sorted(range(len(s)), key=lambda k: -s[k])  # best first, ties in input order
        for a in range(len(order)):
            for b in range(a + 1, len(order)):
                w, lose = order[a], order[b]
                if s[w] > s[lose]:
                    expected.append((str(row["id"]), row["candidates"][w], row["candidates"][lose]))
    assert [(str(g["id"]), g["chosen"], g["rejected"]) for g in got] == expected
    assert all(g["score_chosen"] > g["score_rejected"] for g in got)


def test_label_best_vs_worst_and_random(model, tiny_rm, tmp_path):
    src = _write_input(tmp_path, "jsonl")
    assert _run("label", src, "-o", tmp_path / "bw.jsonl", "--model", model) == 0
    got = _read_output(tmp_path / "bw.jsonl")
    rankings = tiny_rm.rank_batch([r["prompt"] for r in ROWS], [r["candidates"] for r in ROWS])
    assert [(g["chosen_index"], g["rejected_index"]) for g in got] == [
        (int(np.argmax(r.scores)), int(np.argmin(r.scores))) for r in rankings
    ]
    assert (
        _run(
            "label",
            src,
            "-o",
            tmp_path / "r.jsonl",
            "--model",
            model,
            "--strategy",
            "best_vs_random",
            "--chunk-size",
            1,
        )
        == 0
    )
    assert (
        _run(
            "label",
            src,
            "-o",
            tmp_path / "r2.jsonl",
            "--model",
            model,
            "--strategy",
            "best_vs_random",
            "--chunk-size",
            3,
        )
        == 0
    )
    # The random choice is seeded per row: chunking does not change it.
    picks = [
        [(g["chosen_index"], g["rejected_index"]) for g in _read_output(tmp_path / f)] for f in ("r.jsonl", "r2.jsonl")
    ]
    assert picks[0] == picks[1]
    for g, r in zip(_read_output(tmp_path / "r.jsonl"), rankings):
        assert g["chosen_index"] == int(np.argmax(r.scores)) and r.scores[g["rejected_index"]] < r.scores.max()


def test_select_pairs_hand_computed():
    assert select_pairs([0.1, 0.5, -0.2], "best_vs_worst") == [(1, 2)]
    assert select_pairs([0.1, 0.5, -0.2], "all_pairs") == [(1, 0), (1, 2), (0, 2)]
    assert select_pairs([0.3, 0.3], "best_vs_worst") == [] and select_pairs([0.3, 0.3], "all_pairs") == []
    assert select_pairs([1.0], "best_vs_random") == []
    assert select_pairs([0.3, 0.3], "best_vs_worst", ties="keep") == [(0, 1)]
    assert select_pairs([0.5, 0.1, 0.45], "all_pairs", min_margin=0.1) == [(0, 1), (2, 1)]
    picks = {select_pairs([2.0, 1.0, 0.0], "best_vs_random", rng=np.random.default_rng(s))[0] for s in range(20)}
    assert picks == {(0, 1), (0, 2)}
    with pytest.raises(ValueError, match="strategy"):
        select_pairs([1, 2], "nope")


def test_dataset_folder_and_conversations(model, tiny_rm, tmp_path):
    import datasets

    convs = [
        {
            "a": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
            "b": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Go away."}],
        },
        {
            "a": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
            "b": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "5"}],
        },
    ]
    datasets.Dataset.from_list(convs).save_to_disk(str(tmp_path / "ds"))
    assert _run("compare", tmp_path / "ds", "-o", tmp_path / "c.jsonl", "--model", model) == 0
    got = _read_output(tmp_path / "c.jsonl")
    want = tiny_rm.compare_conversations([c["a"] for c in convs], [c["b"] for c in convs])
    np.testing.assert_allclose([g["pairrm_logit"] for g in got], want, atol=ATOL)
    assert got[0]["a"] == convs[0]["a"]


def test_limit(model, tmp_path):
    assert (
        _run("rank", _write_input(tmp_path, "jsonl"), "-o", tmp_path / "o.jsonl", "--model", model, "--limit", 2) == 0
    )
    assert [r["id"] for r in _read_output(tmp_path / "o.jsonl")] == [0, 1]


# ------------------------------------------------------------------------------------------- resume, shards
def _chunk_files(parts: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in parts.glob("chunk-*.jsonl")}


@pytest.mark.slow  # a fresh interpreter imports torch + transformers: ~5-30 s depending on load
def test_kill_and_resume(model, tmp_path, capsys):
    rows = [
        {"prompt": f"Question number {i}?", "candidates": [f"answer {i}", f"reply {i} x", "no idea", f"{i}"]}
        for i in range(16)
    ]
    src = _write_input(tmp_path, "jsonl", rows)
    out, parts = tmp_path / "out.jsonl", tmp_path / "out.jsonl.parts"
    args = ["rank", str(src), "-o", str(out), "--model", model, "--chunk-size", "1", "--keep-parts", "--no-progress"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pairrm_hf.cli", *args],
        stderr=subprocess.DEVNULL,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(list(parts.glob("chunk-*.jsonl"))) < 3 and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = _chunk_files(parts)
    assert 3 <= len(done) < len(rows), "the job must be killed part-way"
    assert not out.exists()

    assert main(args) == 0  # the same command resumes
    assert f"({len(done)} chunks were already done)" in capsys.readouterr().err
    after = _chunk_files(parts)
    assert {k: after[k] for k in done} == done  # finished chunks untouched (same inode, same mtime)
    assert len(after) == len(rows)

    assert _run("rank", src, "-o", tmp_path / "ref.jsonl", "--model", model, "--chunk-size", 1) == 0
    assert out.read_text() == (tmp_path / "ref.jsonl").read_text()  # 0 lost, 0 duplicated, same order


def test_resume_rejects_changed_job_unless_overwrite(model, tmp_path, capsys):
    src = _write_input(tmp_path, "jsonl")
    out = tmp_path / "o.jsonl"
    parts = Path(str(out) + ".parts")
    assert _run("rank", src, "-o", out, "--model", model, "--shard", "0/2", "--chunk-size", 1) == 0
    assert len(list(parts.glob("chunk-*"))) == 2 and not out.exists()  # chunks 0 and 2
    assert _run("rank", src, "-o", out, "--model", model, "--chunk-size", 2) == 2
    err = capsys.readouterr().err
    assert "chunk_size" in err and "--overwrite" in err
    assert _run("rank", src, "-o", out, "--model", model, "--chunk-size", 2, "--overwrite") == 0
    assert len(_read_output(out)) == 3
    assert _run("rank", src, "-o", out, "--model", model) == 2  # finished output is not silently replaced
    assert "already exists" in capsys.readouterr().err


def test_shards_merge_to_full_result(model, tmp_path, capsys):
    src = _write_input(tmp_path, "jsonl")
    full = tmp_path / "full.jsonl"
    assert _run("rank", src, "-o", full, "--model", model, "--chunk-size", 1) == 0
    out = tmp_path / "sharded.jsonl"
    assert _run("rank", src, "-o", out, "--model", model, "--chunk-size", 1, "--shard", "1/2") == 0
    assert main(["merge", str(out)]) == 2  # shard 0 still missing
    assert "not done yet" in capsys.readouterr().err
    assert _run("rank", src, "-o", out, "--model", model, "--chunk-size", 1, "--shard", "0/2") == 0
    assert main(["merge", str(out)]) == 0
    assert out.read_text() == full.read_text()


@pytest.mark.slow
def test_two_processes_torchrun(model, tmp_path):
    """What ``accelerate launch --multi_gpu`` runs (torchrun sets RANK/WORLD_SIZE); on CPU, over gloo.

    ``accelerate launch --cpu --num_processes 2`` starts ONE process on a single machine (multi-CPU needs mpirun),
    so torchrun is the way to get two local CPU processes through the same PartialState code path."""
    rows = [{"prompt": f"Q{i}?", "candidates": [f"a{i}", "bb", "c c"]} for i in range(5)]
    src = _write_input(tmp_path, "jsonl", rows)
    single = tmp_path / "single.jsonl"
    assert _run("rank", src, "-o", single, "--model", model, "--chunk-size", 1) == 0
    out = tmp_path / "multi.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "-m",
        "pairrm_hf.cli",
        "rank",
        str(src),
        "-o",
        str(out),
        "--model",
        model,
        "--chunk-size",
        "1",
        "--no-progress",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    # Each process computed its own round-robin share (chunks 0,2,4 and 1,3), and only one wrote the output.
    assert "computed now: 3 chunks" in res.stderr and "computed now: 2 chunks" in res.stderr, res.stderr[-3000:]
    assert res.stderr.count("output: ") == 1 and "process 1/2 done" in res.stderr
    got, want = _read_output(out), _read_output(single)
    assert [g["prompt"] for g in got] == [w["prompt"] for w in want]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g["pairrm_scores"], w["pairrm_scores"], atol=ATOL)


# ------------------------------------------------------------------------------------------- bad input
BAD_CASES = {
    "malformed_json": (
        b'{"prompt": "ok", "candidates": ["a", "b"]}\n{"prompt": "x", "candidates": [\n',
        "line 2",
        "malformed JSON",
    ),
    "missing_column": (
        b'{"prompt": "ok", "candidates": ["a"]}\n{"prompt": "x"}\n',
        "line 2",
        "'candidates': missing column",
    ),
    "wrong_type": (
        b'{"prompt": "ok", "candidates": ["a"]}\n{"prompt": 7, "candidates": ["a"]}\n',
        "line 2",
        "'prompt': must be a str or a list of",
    ),
    "wrong_item_type": (b'{"prompt": "ok", "candidates": ["a", 3]}\n', "line 1", "'candidates[1]'"),
    "empty_candidates": (
        b'{"prompt": "ok", "candidates": ["a"]}\n\n{"prompt": "x", "candidates": []}\n',
        "line 3",
        "'candidates': is an empty list",
    ),
    "non_utf8": (
        b'{"prompt": "ok", "candidates": ["a"]}\n{"prompt": "\xff\xfe", "candidates": ["a"]}\n',
        "line 2",
        "not valid UTF-8",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_stops_before_compute(case, tmp_path, capsys):
    data, where, what = BAD_CASES[case]
    src = tmp_path / "bad.jsonl"
    src.write_bytes(data)
    out = tmp_path / "o.jsonl"
    # A model path that does not exist proves nothing was loaded: validation comes first.
    assert _run("rank", src, "-o", out, "--model", tmp_path / "no-model") == 2
    err = capsys.readouterr().err
    assert str(src) in err and where in err and what in err, err
    assert not out.exists() and not os.path.exists(str(out) + ".parts")


def test_bad_input_skip_writes_rejects(model, tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_bytes(b"".join(BAD_CASES[c][0] for c in ("missing_column", "non_utf8", "empty_candidates")) + b"oops\n")
    out = tmp_path / "o.jsonl"
    assert _run("rank", src, "-o", out, "--model", model, "--on-error", "skip", "--chunk-size", 2) == 0
    good = _read_output(out)
    assert len(good) == 3 and all(g["prompt"] == "ok" for g in good)
    rejects = [json.loads(line) for line in Path(str(out) + ".rejects.jsonl").read_text().splitlines()]
    assert [r["location"] for r in rejects] == ["line 2", "line 4", "line 7", "line 8"]
    assert "missing column" in rejects[0]["reason"] and "UTF-8" in rejects[1]["reason"]
    assert "empty list" in rejects[2]["reason"] and "malformed JSON" in rejects[3]["reason"]


def test_bad_csv_and_files(tmp_path, capsys):
    csv_path = tmp_path / "bad.csv"
    csv_path.write_text('prompt,candidates\nhi,"[""a""]"\nyo,not a list\n')
    assert _run("rank", csv_path, "-o", tmp_path / "o.csv", "--model", tmp_path / "nope") == 2
    err = capsys.readouterr().err
    assert "bad.csv: line 3: field 'candidates': expected a list" in err
    assert _run("rank", tmp_path / "missing.jsonl", "-o", tmp_path / "o.jsonl") == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "x.txt").write_text("hi")
    assert _run("rank", tmp_path / "x.txt", "-o", tmp_path / "o.jsonl") == 2
    assert "unknown file type" in capsys.readouterr().err


def test_usage_errors_and_help(capsys):
    assert main(["rank", "in.jsonl", "--chunk-size", "0"]) == 2
    assert main(["rank", "in.jsonl", "--shard", "3/2"]) == 2
    assert main(["rank", "in.jsonl"]) == 2  # no output
    assert "missing -o/--output" in capsys.readouterr().err
    for command in ("rank", "compare", "score", "label", "merge", "convert", "info"):
        assert main([command, "--help"]) == 0
        assert "usage: pairrm " + command in capsys.readouterr().out


@pytest.mark.parametrize(
    "command, flag, expected",
    [
        ("rank", "--progress-interval", "a number of seconds >= 0"),
        ("serve", "--body-timeout", "a number of seconds > 0"),
        ("serve", "--idle-timeout", "a number of seconds > 0"),
        ("serve", "--group-timeout", "a number of seconds > 0"),
        ("serve", "--max-wait-ms", "a number of milliseconds >= 0"),
    ],
)
def test_duration_flags_parse_and_name_the_flag_when_wrong(command, flag, expected, capsys):
    from pairrm_hf.cli.main import build_parser

    head = [command, "in.jsonl", "-o", "out.jsonl"] if command == "rank" else [command]
    dest = flag.lstrip("-").replace("-", "_")
    assert getattr(build_parser().parse_args([*head, flag, "2.5"]), dest) == 2.5
    zero_ok = ">= 0" in expected
    for bad in ["-1", "soon", "nan", "inf", *([] if zero_ok else ["0"])]:
        assert main([*head, flag, bad]) == 2
        assert f"argument {flag}: expected {expected}, got {bad!r}" in capsys.readouterr().err
    if zero_ok:
        assert getattr(build_parser().parse_args([*head, flag, "0"]), dest) == 0.0


# ------------------------------------------------------------------------------------------- convert, info
def test_convert_and_info(tiny_legacy_dir, tiny_backbone_dir, tiny_rm, tmp_path, capsys):
    dst = tmp_path / "converted"
    assert main(["convert", str(tiny_legacy_dir), str(dst), "--backbone-config", str(tiny_backbone_dir)]) == 0
    assert main(["info", "--model", str(dst), "--json", "--device", "cpu"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["layout"] == "hf" and info["device"] == "cpu" and info["source_max_length"] == 1224
    assert info["candidate_max_length"] == 412 and info["parameters"] == sum(
        p.numel() for p in tiny_rm.model.parameters()
    )
    assert main(["convert", str(tiny_legacy_dir), str(dst)]) == 2  # not empty


# ------------------------------------------------------------------------------------------- library hooks
def test_rank_batch_fn_with_datasets_map(model, tiny_rm):
    import datasets

    from pairrm_hf.jobs.map_functions import rank_batch_fn

    ds = datasets.Dataset.from_list([{"prompt": r["prompt"], "candidates": r["candidates"]} for r in ROWS])
    out = ds.map(rank_batch_fn(model=model, device="cpu"), batched=True, batch_size=2, with_rank=True)
    want = tiny_rm.rank_batch([r["prompt"] for r in ROWS], [r["candidates"] for r in ROWS])
    for g, w in zip(out, want):
        np.testing.assert_allclose(g["pairrm_scores"], w.scores, atol=ATOL)


def test_ray_predictor_on_plain_batches(model, tiny_rm):
    from pairrm_hf.jobs.map_functions import PairRMPredictor

    predictor = PairRMPredictor(model=model, task="compare", device="cpu")
    batch = {"prompt": [r["prompt"] for r in ROWS], "a": [r["a"] for r in ROWS], "b": [r["b"] for r in ROWS]}
    want = tiny_rm.compare(batch["prompt"], batch["a"], batch["b"])
    np.testing.assert_allclose(predictor(batch)["pairrm_logit"], want, atol=ATOL)
    numpy_batch = {k: np.array(v, dtype=object) for k, v in batch.items()}
    got = predictor(numpy_batch)
    assert isinstance(got["pairrm_logit"], np.ndarray) and got["prompt"] is numpy_batch["prompt"]
    ranker = PairRMPredictor(model=model, device="cpu")
    cands = np.empty(2, dtype=object)
    cands[0], cands[1] = np.array(["x", "yy"]), np.array(["a", "b", "c"])
    ranked = ranker({"prompt": np.array(["p", "q"]), "candidates": cands})
    assert [len(s) for s in ranked["pairrm_scores"]] == [2, 3]
    with pytest.raises(ValueError, match="batch row 0: field 'candidates'"):
        ranker({"prompt": ["p"], "candidates": [[]]})


# ----------------------------------------------------------------------------------------------- --attention
def test_attention_option_reaches_the_job_model_and_the_server(model, tiny_rm, tmp_path, capsys, monkeypatch):
    import pairrm_hf.ranking.ranker as ranker_module
    from pairrm_hf.cli.main import build_parser
    from pairrm_hf.serve.service import PairRMService

    monkeypatch.setattr(ranker_module, "_SHARED", {})  # start from an empty process cache: the job loads its model
    out = tmp_path / "out.jsonl"
    assert _run("rank", _write_input(tmp_path, "jsonl"), "-o", out, "--model", model, "--attention", "eager") == 0
    (job_model,) = ranker_module._SHARED.values()
    assert job_model.engine.model.attention_implementation == "eager"
    want = tiny_rm.rank_batch([r["prompt"] for r in ROWS], [r["candidates"] for r in ROWS])  # fused attention
    for got, w in zip(_read_output(out), want):
        np.testing.assert_allclose(got["pairrm_scores"], w.scores, atol=ATOL)

    assert build_parser().parse_args(["serve", "--attention", "flex"]).attention == "flex"
    service = PairRMService.from_pretrained(model, attention="eager")
    assert service.rm.engine.model.attention_implementation == "eager"
    assert main(["rank", "--prompt", "Hi?", "--candidates", "a", "b", "--model", model, "--attention", "flash"]) == 2
    assert "invalid choice: 'flash'" in capsys.readouterr().err


def test_packing_option_reaches_the_job_model_and_the_server(model, tiny_rm, tmp_path, monkeypatch):
    import pairrm_hf.ranking.ranker as ranker_module
    from pairrm_hf.serve.service import PairRMService

    monkeypatch.setattr(ranker_module, "_SHARED", {})
    out = tmp_path / "out.jsonl"
    assert _run("rank", _write_input(tmp_path, "jsonl"), "-o", out, "--model", model, "--packing") == 0
    (job_model,) = ranker_module._SHARED.values()
    assert job_model.engine.packing and job_model.engine.backend == "torch"
    want = tiny_rm.rank_batch([r["prompt"] for r in ROWS], [r["candidates"] for r in ROWS])  # padded batches
    for got, w in zip(_read_output(out), want):
        np.testing.assert_allclose(got["pairrm_scores"], w.scores, atol=ATOL)
    service = PairRMService.from_pretrained(model, packing=True)
    assert service.rm.engine.packing
