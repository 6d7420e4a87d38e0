"""Regression tests for the jobs, loading and API half of issue 21 ("Hardening"), one or more per item.

Each test states the behaviour the issue asked for; each failed on the commit before the fix.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pairrm_hf.cli import main
from pairrm_hf.jobs import runner
from pairrm_hf.jobs.io import read_table, write_rows

ROWS = [
    {"prompt": f"Question {i}: what is {i} + {i}?", "candidates": [f"{2 * i}", f"maybe {i}", "no idea"]}
    for i in range(4)
]


@pytest.fixture(scope="module")
def model(tiny_hf_dir) -> str:
    return str(tiny_hf_dir)


def _run(*args) -> int:
    return main([*map(str, args), "--no-progress"])


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ------------------------------------------------------------------------------------------- item 5
def test_an_edit_while_the_job_starts_is_never_recorded_as_the_computed_content(model, tiny_rm, tmp_path, monkeypatch):
    src = _jsonl(tmp_path / "in.jsonl", ROWS)
    edited = [{**ROWS[0], "candidates": ["a brand new answer", "another", "third"]}, *ROWS[1:]]
    real_read = runner.read_table

    def read_then_someone_edits(*args, **kwargs):
        table = real_read(*args, **kwargs)
        _jsonl(src, edited)  # an edit landing right after the rows were read, before the job records its input
        return table

    out = tmp_path / "out.jsonl"
    monkeypatch.setattr(runner, "read_table", read_then_someone_edits)
    assert _run("rank", src, "-o", out, "--model", model, "--chunk-size", 2, "--keep-parts") == 0
    monkeypatch.undo()
    out.unlink()  # the parts folder is kept: a rerun resumes from its chunks
    code = _run("rank", src, "-o", out, "--model", model, "--chunk-size", 2)
    if code == 0:  # resuming is only right if row 0 holds the scores of the edited row
        expected = tiny_rm.rank_batch([edited[0]["prompt"]], [edited[0]["candidates"]])[0].scores
        assert _read(out)[0]["pairrm_scores"] == pytest.approx(expected.tolist(), abs=1e-5)
    else:
        assert code == 2  # refused: the chunks were computed from other input content


def test_a_file_is_fingerprinted_from_the_bytes_it_was_parsed_from(tmp_path):
    from pairrm_hf.jobs.io import content_fingerprint, input_fingerprint

    src = _jsonl(tmp_path / "in.jsonl", ROWS)
    table = read_table(src)
    assert table.content == content_fingerprint(src)
    _jsonl(src, ROWS[:1])
    assert input_fingerprint(src, None, table)["content"] == table.content != content_fingerprint(src)


# ------------------------------------------------------------------------------------------- item 6
def test_lone_surrogates_are_bad_rows_found_before_compute(model, tmp_path, capsys):
    rows = [*ROWS[:2], {"prompt": "fine", "candidates": ["ok", "bad \ud800 text"]}, ROWS[3]]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")  # json spells it "\\ud800"
    out = tmp_path / "out.jsonl"
    assert _run("rank", src, "-o", out, "--model", model) == 2
    err = capsys.readouterr().err
    assert f"{src}: line 3" in err and "candidates[1]" in err and "surrogate" in err, err
    assert _run("rank", src, "-o", out, "--model", model, "--on-error", "skip") == 0
    assert [r["prompt"] for r in _read(out)] == [ROWS[0]["prompt"], ROWS[1]["prompt"], ROWS[3]["prompt"]]
    rejects = _read(Path(f"{out}.rejects.jsonl"))
    assert [r["location"] for r in rejects] == ["line 3"]


def test_lone_surrogates_in_the_api_are_a_value_error_naming_the_input(tiny_rm):
    with pytest.raises(ValueError, match=r"candidates\[0\]\[1\]: holds a lone surrogate"):
        tiny_rm.rank_batch(["p"], [["ok", "x\udfff"]])
    with pytest.raises(ValueError, match=r"prompts\[0\]: holds a lone surrogate"):
        tiny_rm.rank_batch(["\ud800"], [["a", "b"]])
    with pytest.raises(ValueError, match=r"\['content'\]: holds a lone surrogate"):
        tiny_rm.compare_conversations(
            [[{"role": "user", "content": "q"}, {"role": "assistant", "content": "\ud800"}]],
            [[{"role": "user", "content": "q"}, {"role": "assistant", "content": "b"}]],
        )


# ------------------------------------------------------------------------------------------- item 7
@pytest.mark.parametrize(
    "column,values,bad_row",
    [
        ("meta", ["a", "b", 3, "d"], 2),  # mixed types
        ("big", [1, 2, 10**30, 4], 2),  # beyond int64
        ("note", ["x", "\ud800", "y", "z"], 1),  # not writable as UTF-8
    ],
)
def test_parquet_output_is_checked_on_the_real_columns_before_compute(model, tmp_path, capsys, column, values, bad_row):
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({**r, column: v}) + "\n" for r, v in zip(ROWS, values)), encoding="utf-8")
    out = tmp_path / "out.parquet"
    assert _run("rank", src, "-o", out, "--model", model) == 2
    err = capsys.readouterr().err
    assert f"line {bad_row + 1}" in err and repr(column) in err, err
    assert not Path(f"{out}.parts").exists() or not list(Path(f"{out}.parts").glob("chunk-*"))  # nothing computed
    assert _run("rank", src, "-o", out, "--model", model, "--on-error", "skip") == 0
    assert pq.read_table(out).num_rows == len(ROWS) - 1


def test_parquet_column_of_empty_objects_is_named_before_compute(model, tmp_path, capsys):
    pytest.importorskip("pyarrow")
    src = _jsonl(tmp_path / "in.jsonl", [{**r, "extra": {}} for r in ROWS])
    assert _run("rank", src, "-o", tmp_path / "out.parquet", "--model", model) == 2
    err = capsys.readouterr().err
    assert "column 'extra'" in err and "Parquet" in err, err


def test_csv_cells_longer_than_the_csv_module_default_are_read(model, tmp_path):
    long_answer = "word " * 40_000  # 200,000 characters, beyond csv's 131,072 default
    src = tmp_path / "in.csv"
    write_rows(src, [{"prompt": "p", "candidates": [long_answer, "short"]}])
    table = read_table(src)
    assert json.loads(table.rows[0]["candidates"])[0] == long_answer


def test_json_nested_too_deep_in_one_line_is_a_skippable_bad_row(model, tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    deep = '{"prompt": "p", "candidates": ["a", "b"], "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    src.write_text(json.dumps(ROWS[0]) + "\n" + deep + "\n" + json.dumps(ROWS[1]) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert _run("rank", src, "-o", out, "--model", model) == 2
    assert f"{src}: line 2" in capsys.readouterr().err
    assert _run("rank", src, "-o", out, "--model", model, "--on-error", "skip") == 0
    assert len(_read(out)) == 2


# ------------------------------------------------------------------------------------------- item 8
def test_column_oriented_json_with_unequal_columns_is_refused(model, tmp_path, capsys):
    src = tmp_path / "in.json"
    src.write_text(json.dumps({"prompt": ["p1", "p2", "p3"], "candidates": [["a", "b"]]}))
    assert _run("rank", src, "-o", tmp_path / "out.jsonl", "--model", model) == 2
    err = capsys.readouterr().err
    assert "different lengths" in err and "'prompt': 3" in err and "'candidates': 1" in err, err


def test_extra_cells_in_a_ragged_csv_row_are_a_bad_row_not_a_null_column(model, tmp_path, capsys):
    src = tmp_path / "in.csv"
    src.write_text('prompt,candidates\np1,"[""a"", ""b""]"\np2,"[""a"", ""b""]",stray,cells\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert _run("rank", src, "-o", out, "--model", model) == 2
    assert f"{src}: line 3: 4 cells but the header has 2 columns" in capsys.readouterr().err
    assert _run("rank", src, "-o", out, "--model", model, "--on-error", "skip") == 0
    rows = _read(out)
    assert len(rows) == 1 and set(rows[0]) == {"prompt", "candidates", "pairrm_scores", "pairrm_ranks"}


def test_an_input_column_the_task_writes_is_not_overwritten(model, tmp_path, capsys):
    src = _jsonl(tmp_path / "in.jsonl", [{**ROWS[0], "pairrm_scores": "mine"}, ROWS[1]])
    out = tmp_path / "out.jsonl"
    assert _run("rank", src, "-o", out, "--model", model) == 2
    err = capsys.readouterr().err
    assert "line 1" in err and "'pairrm_scores'" in err and "overwritten" in err, err


def test_label_preferences_keeps_the_inputs_other_columns(tiny_rm):
    from pairrm_hf.trl import label_preferences

    rows = [
        {"id": f"r{i}", "source": "set-a", "prompt": r["prompt"], "completions": r["candidates"]}
        for i, r in enumerate(ROWS)
    ]
    out = label_preferences(rows, ranker=tiny_rm, strategy="all_pairs").to_list()
    assert len(out) == len(ROWS) * 3
    assert [r["id"] for r in out] == [f"r{i}" for i in range(len(ROWS)) for _ in range(3)]
    assert all(r["source"] == "set-a" and "completions" not in r for r in out)
    empty = label_preferences(rows[:1], ranker=tiny_rm, min_margin=1e9).column_names
    assert "id" in empty and "source" in empty


def test_label_preferences_mixing_plain_and_chat_completions(tiny_rm):
    from pairrm_hf.trl import label_preferences

    chat = [{"role": "user", "content": "Say hi"}]
    mixed = [{"prompt": chat, "completions": ["hi there", [{"role": "assistant", "content": "go away"}]]}]
    out = label_preferences(mixed, ranker=tiny_rm, ties="keep").to_list()
    same = [{"prompt": chat, "completions": [[{"role": "assistant", "content": c}] for c in ("hi there", "go away")]}]
    expected = label_preferences(same, ranker=tiny_rm, ties="keep").to_list()
    assert out == expected and isinstance(out[0]["chosen"], list)
    plain_then_chat = [
        {"prompt": "p", "completions": ["a", "b"]},
        {
            "prompt": "q",
            "completions": [[{"role": "assistant", "content": "x"}], [{"role": "assistant", "content": "y"}]],
        },
    ]
    with pytest.raises(ValueError, match=r"column 'completions' mixes .*dataset\[0\].*dataset\[1\]"):
        label_preferences(plain_then_chat, ranker=tiny_rm)


def test_label_preferences_nan_margin_is_an_error_not_zero_pairs(tiny_rm):
    from pairrm_hf.trl import label_preferences

    rows = [{"prompt": r["prompt"], "completions": r["candidates"]} for r in ROWS]
    with pytest.raises(ValueError, match="min_margin.*nan"):
        label_preferences(rows, ranker=tiny_rm, min_margin=float("nan"))


# ------------------------------------------------------------------------------------------- item 10
class _CallsSystem:
    def __reduce__(self):
        import os

        return (os.system, ("echo executed > /dev/null",))


class _CallsExec:
    def __reduce__(self):
        return (exec, ("raise SystemExit('executed')",))


def _pickled_bin(layout_dir: Path, folder: Path, payload) -> Path:
    import shutil

    import torch

    shutil.copytree(layout_dir, folder)
    (folder / "model.safetensors").unlink()
    torch.save({"w": payload}, folder / "pytorch_model.bin")
    return folder / "pytorch_model.bin"


def _load_through(surface: str, folder: Path, capsys) -> str:
    """The error text a user sees when loading ``folder`` through ``surface``."""
    if surface == "cli":
        assert main(["rank", "--model", str(folder), "--prompt", "p", "--candidates", "a", "b"]) == 2
        return capsys.readouterr().err
    with pytest.raises(ValueError) as err:
        if surface == "load_pairrm":
            from pairrm_hf import load_pairrm

            load_pairrm(folder)
        elif surface == "api":
            from pairrm_hf import PairRM

            PairRM.from_pretrained(folder)
        elif surface == "auto":
            from pairrm_hf import AutoModelForPairwiseRanking

            AutoModelForPairwiseRanking.from_pretrained(folder)
        else:
            from transformers import pipeline

            import pairrm_hf.pipelines  # noqa: F401  (registers the task)

            pipeline("pairwise-ranking", model=str(folder))
    return str(err.value)


@pytest.mark.parametrize("surface", ["load_pairrm", "api", "auto", "pipeline", "cli"])
@pytest.mark.parametrize("payload", [_CallsSystem, _CallsExec])
def test_pickled_code_in_hf_layout_weights_is_refused_clearly_everywhere(
    surface, payload, tiny_hf_dir, tmp_path, capsys
):
    path = _pickled_bin(tiny_hf_dir, tmp_path / "evil", payload())
    message = _load_through(surface, tmp_path / "evil", capsys)
    assert str(path) in message and "holds Python objects besides tensors" in message, message
    assert "weights_only" not in message and "safe_globals" not in message and "trust the source" not in message


def test_pickled_code_in_legacy_weights_is_not_called_damaged(tiny_legacy_dir, tiny_backbone_dir, tmp_path):
    from pairrm_hf import load_pairrm

    _pickled_bin(tiny_legacy_dir, tmp_path / "evil", _CallsSystem())
    with pytest.raises(ValueError) as err:
        load_pairrm(tmp_path / "evil", backbone_config=tiny_backbone_dir)
    message = str(err.value)
    assert "holds Python objects besides tensors" in message and "posix.system" in message, message
    assert "damaged" not in message and "weights_only" not in message


# ------------------------------------------------------------------------------------------- item 11
def _damaged(tiny_hf_dir: Path, folder: Path, kind: str) -> tuple[Path, str]:
    import shutil

    shutil.copytree(tiny_hf_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    if kind == "config_list":
        (folder / "config.json").write_text("[1, 2]")
        return folder / "config.json", "holds a JSON list, not an object"
    if kind == "length_text":
        (folder / "config.json").write_text(json.dumps({**config, "source_max_length": "abc"}))
        return folder / "config.json", "source_max_length must be a positive integer"
    if kind == "tokenizer_json":
        (folder / "tokenizer.json").write_text('{"version": "1.0", "truncat')
        return folder / "tokenizer.json", "not valid JSON"
    import torch
    from safetensors.torch import load_file, save_file

    weights = load_file(folder / "model.safetensors")
    key = "pretrained_model.encoder.layer.0.attention.self.query_proj.weight"
    weights[key] = torch.zeros(weights[key].shape[0] + 1, weights[key].shape[1])
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return folder / "model.safetensors", f"{key} (65, 64) (config: (64, 64))"


@pytest.mark.parametrize("kind", ["config_list", "length_text", "tokenizer_json", "wrong_shape"])
def test_damaged_checkpoints_name_the_file_and_the_problem(kind, tiny_hf_dir, tmp_path):
    from pairrm_hf import load_pairrm

    path, what = _damaged(tiny_hf_dir, tmp_path / "broken", kind)
    with pytest.raises(ValueError) as err:
        load_pairrm(tmp_path / "broken")
    message = str(err.value)
    assert str(path) in message and what in message, message
    assert "ignore_mismatched_sizes" not in message


# ------------------------------------------------------------------------------------------- item 9
def _progress_lines(text: str) -> list[tuple[int, int]]:
    import re

    return [(int(a), int(b)) for a, b in re.findall(r"^pairrm rank: (\d+)/(\d+) pairs", text, re.MULTILINE)]


def test_progress_lines_when_stderr_is_no_terminal(tiny_hf_dir, tmp_path, capsys):
    import shutil

    folder = tmp_path / "model"  # a folder of its own: this process has not loaded it yet
    shutil.copytree(tiny_hf_dir, folder)
    src = _jsonl(tmp_path / "in.jsonl", ROWS)
    args = ["rank", str(src), "-o", str(tmp_path / "out.jsonl"), "--model", str(folder), "--batch-size", "2"]
    # one chunk holds the whole file, so the lines must come from inside the chunk (per batch), not per chunk
    assert main([*args, "--progress-interval", "0"]) == 0
    err = capsys.readouterr().err
    lines = _progress_lines(err)
    total = len(ROWS) * 3 * 2
    assert len(lines) >= total // 2 and lines[-1] == (total, total), err[-800:]
    assert [n for n, _ in lines] == sorted(n for n, _ in lines)
    assert main([*args, "--progress-interval", "3600", "--overwrite"]) == 0  # nothing within the first hour
    assert not _progress_lines(capsys.readouterr().err)


def test_no_progress_also_silences_the_weight_loading_bar(tiny_hf_dir, tmp_path, capsys):
    import shutil

    from transformers.utils import logging as hf_logging

    folder = tmp_path / "model"
    shutil.copytree(tiny_hf_dir, folder)
    src = _jsonl(tmp_path / "in.jsonl", ROWS)
    assert _run("rank", src, "-o", tmp_path / "out.jsonl", "--model", folder, "--progress-interval", "0") == 0
    err = capsys.readouterr().err
    assert "Loading weights" not in err and not _progress_lines(err), err
    assert hf_logging.is_progress_bar_enabled()  # the switch is restored after loading


# ------------------------------------------------------------------------------------------- item 13
def test_median_length_lexical_reference_does_not_depend_on_input_order(tiny_rm):
    import numpy as np

    cands = ["bbb", "aaa", "ccc", "z", "yyyyy"]  # three candidates tie at the median length
    order = [1, 2, 4, 0, 3]
    shuffled = [cands[i] for i in order]  # aaa, ccc, yyyyy, bbb, z
    base = tiny_rm.rank_with_ref(["p"], [cands], ref_mode="median_length_lexical")[0]
    again = tiny_rm.rank_with_ref(["p"], [shuffled], ref_mode="median_length_lexical")[0]
    np.testing.assert_allclose(again, base[order], atol=1e-5)
    assert base[0] == 0.0  # (length, text) order: z, aaa, bbb, ccc, yyyyy; the median is "bbb"
    # upstream's median_length keeps input order among ties (documented): z, aaa, ccc, bbb, yyyyy gives "ccc"
    assert tiny_rm.rank_with_ref(["p"], [shuffled], ref_mode="median_length")[0][1] == 0.0


def test_from_pretrained_understands_transformers_keywords(tiny_hf_dir):
    import torch

    from pairrm_hf import PairRM

    rm = PairRM.from_pretrained(tiny_hf_dir, device_map="cpu", torch_dtype=torch.bfloat16)
    assert rm.device.type == "cpu" and next(rm.model.parameters()).dtype == torch.bfloat16
    assert PairRM.from_pretrained(tiny_hf_dir, device_map={"": "cpu"}, torch_dtype="auto").device.type == "cpu"
    with pytest.raises(ValueError, match="PairRM runs on one device"):
        PairRM.from_pretrained(tiny_hf_dir, device_map={"encoder": "cpu", "head": "cuda:0"})
    with pytest.raises(TypeError, match=r"from_pretrained\(\) got unexpected keyword argument\(s\) \['batchsize'\]"):
        PairRM.from_pretrained(tiny_hf_dir, batchsize=4)


def test_pairrm_repr_says_what_it_runs(tiny_rm, tiny_hf_dir):
    text = repr(tiny_rm)
    assert text.startswith("PairRM(") and str(tiny_hf_dir) in text and "DebertaV2PairRM" in text
    assert "device=cpu" in text and "dtype=float32" in text and "batch_size=8" in text, text
    assert f"lengths={tiny_rm.lengths.source_max_length}/{tiny_rm.lengths.candidate_max_length}" in text


def test_rank_with_several_prompts_points_to_rank_batch(tiny_rm):
    with pytest.raises(TypeError, match="use rank_batch"):
        tiny_rm.rank(["first prompt", "second prompt"], [["a", "b"], ["c", "d"]])


def test_cli_json_and_pipeline_name_the_candidate_alike(tiny_hf_dir, tiny_rm, capsys):
    from transformers import pipeline

    import pairrm_hf.pipelines  # noqa: F401  (registers the task)

    cands = ["Paris.", "Berlin.", "I do not know."]
    assert (
        main(["rank", "--model", str(tiny_hf_dir), "--prompt", "Capital of France?", "--candidates", *cands, "--json"])
        == 0
    )
    cli = json.loads(capsys.readouterr().out)
    pipe = pipeline("pairwise-ranking", model=str(tiny_hf_dir), device="cpu")("Capital of France?", cands)
    assert [r["candidate"] for r in cli] == [r["candidate"] for r in pipe]
    assert all(r["text"] == r["candidate"] for r in cli)  # the older key stays
    assert [r.as_dict() for r in tiny_rm.rank("Capital of France?", cands)] == [
        {k: r[k] for k in ("index", "candidate", "score", "rank")} for r in cli
    ]


def test_server_names_the_field_of_a_lone_surrogate(tiny_rm):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    httpx = pytest.importorskip("httpx")
    from pairrm_hf.serve.app import BackgroundServer, create_app
    from pairrm_hf.serve.service import PairRMService

    service = PairRMService(tiny_rm)
    try:
        with BackgroundServer(create_app(service)) as server:
            body = '{"prompts": ["p"], "candidates": [["a", "b\\ud800"]]}'  # valid JSON, not text
            r = httpx.post(f"{server.url}/rank", content=body, headers={"Content-Type": "application/json"})
    finally:
        service.close()
    assert r.status_code == 422 and r.json()["field"] == "candidates[0][1]", r.text
    assert "lone surrogate" in r.json()["error"]
