"""``pairrm`` jobs that never mix runs, and the CLI's input, output, progress and extras rules (issues 11 and 12).

Every job test ends with an output byte-identical to a clean run of the same command. Cases covered (see the
"Bad input" table of docs/guides/cli-jobs.md):

* two processes on one output share the chunks (claims) and neither computes one the other did;
* a process skips chunks another holds, waits for them, adopts finished ones and computes abandoned ones;
* changed options (``--aggregation``) are refused; a chunk without a matching job header is never adopted;
* an input edited in place with the same size and mtime is detected (content fingerprint);
* a failed start (bad ``--dtype``, bad ``--model``, unknown output extension, or a folder of another job that
  computed nothing) does not refuse the corrected command;
* output files get the umask's permissions; a failed write names the path;
* JSON-looking strings stay strings outside CSV list columns; the progress bar moves per batch of pairs and obeys
  the Hugging Face switches; ``pairrm --version``; a missing extra is named before any compute.
"""

from __future__ import annotations

import io
import json
import os
import re
import resource
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pairrm_hf import __version__
from pairrm_hf.cli import main
from pairrm_hf.jobs.io import write_rows
from pairrm_hf.jobs.locks import JobLock

ROWS = [
    {"prompt": f"Question {i}: what is {i} + {i}?", "candidates": [f"{2 * i}", f"maybe {i}", "no idea", f"{i}{i}"]}
    for i in range(6)
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


def _clean(model: str, src: Path, folder: Path, *options) -> bytes:
    """The output of a fresh run in a folder of its own."""
    folder.mkdir(exist_ok=True)
    out = folder / "clean.jsonl"
    assert _run("rank", src, "-o", out, "--model", model, *options) == 0
    return out.read_bytes()


def _subprocess(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pairrm_hf.cli", *args, "--no-progress"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


# ------------------------------------------------------------------------------------------- concurrency
@pytest.mark.slow  # two fresh interpreters import torch + transformers
def test_two_processes_on_one_output_share_the_chunks(model, tmp_path):
    rows = [{"prompt": f"Q{i}?", "candidates": [f"a{i}", "bb", "c c", f"{i} d", "e"]} for i in range(40)]
    src = _input(tmp_path, rows)
    want = _clean(model, src, tmp_path / "ref", "--chunk-size", 1)
    out = tmp_path / "out.jsonl"
    args = ["rank", str(src), "-o", str(out), "--model", model, "--chunk-size", "1"]
    procs = [_subprocess(args), _subprocess(args)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    computed = 0
    for rc, err in results:
        if rc == 0:
            computed += int(re.search(r"computed now: (\d+) chunks", err).group(1))
        else:  # started after the other had finished and cleaned up
            assert rc == 2 and ("already exists" in err or "just finished" in err), err[-2000:]
    assert any(rc == 0 for rc, _ in results)
    assert computed == len(rows), results  # every chunk computed exactly once between the two
    assert out.read_bytes() == want
    assert not Path(str(out) + ".parts").exists()


@pytest.mark.slow
def test_claimed_chunks_are_waited_for_adopted_or_taken_over(model, tmp_path):
    """Another "process" (this test) holds chunks 1 and 2: the job skips them, waits, adopts the one that was
    finished and computes the one that was abandoned."""
    src = _input(tmp_path)
    ref = tmp_path / "ref.jsonl"
    assert _run("rank", src, "-o", ref, "--model", model, "--chunk-size", 1, "--keep-parts") == 0
    out = tmp_path / "out.jsonl"
    parts = Path(str(out) + ".parts")
    parts.mkdir()
    holder = JobLock(str(parts))
    assert holder.claim(1) and holder.claim(2)
    proc = _subprocess(["rank", str(src), "-o", str(out), "--model", model, "--chunk-size", "1"])
    others = [parts / f"chunk-{k:06d}.jsonl" for k in (0, 3, 4, 5)]
    deadline = time.time() + 300
    while not all(p.exists() for p in others) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read()  # waiting for chunks 1 and 2, not finished without them
    # the same command, so the same job identity: the other process's chunk is adopted, not computed again
    shutil.copyfile(Path(str(ref) + ".parts") / "chunk-000001.jsonl", parts / "chunk-000001.jsonl")
    holder.close()  # "finished" chunk 1, abandoned chunk 2
    assert proc.wait(timeout=300) == 0
    err = proc.stderr.read()
    assert "computed now: 5 chunks" in err and "1 finished by another process" in err, err[-2000:]
    assert out.read_bytes() == ref.read_bytes()
    assert not parts.exists()


def test_overwrite_refuses_while_another_process_works(model, tmp_path, capsys):
    src = _input(tmp_path)
    out = tmp_path / "o.jsonl"
    assert _run("rank", src, "-o", out, "--model", model, "--chunk-size", 1, "--shard", "0/2") == 0
    parts = Path(str(out) + ".parts")
    probe = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR); "
            "fcntl.lockf(fd, fcntl.LOCK_SH, 1, 0); print('locked', flush=True); time.sleep(60)",
            str(parts / ".lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert probe.stdout.readline().strip() == "locked"
        assert _run("rank", src, "-o", out, "--model", model, "--chunk-size", 1, "--overwrite") == 2
        assert "another pairrm process is working on this output" in capsys.readouterr().err
        assert parts.is_dir() and len(list(parts.glob("chunk-*"))) == 3
    finally:
        probe.kill()
        probe.wait()
    assert _run("rank", src, "-o", out, "--model", model, "--chunk-size", 1) == 0
    assert out.read_bytes() == _clean(model, src, tmp_path / "ref", "--chunk-size", 1)


# ------------------------------------------------------------------------------------------- identity
def test_changed_options_are_refused_and_foreign_chunks_never_adopted(model, tmp_path, capsys):
    src = _input(tmp_path)
    want = _clean(model, src, tmp_path / "ref", "--chunk-size", 1, "--aggregation", "max_wins")
    out = tmp_path / "o.jsonl"
    parts = Path(str(out) + ".parts")
    base = ["rank", src, "-o", out, "--model", model, "--chunk-size", 1]
    assert _run(*base, "--shard", "0/2") == 0  # max_logits chunks 0, 2, 4
    assert _run(*base, "--aggregation", "max_wins") == 2
    err = capsys.readouterr().err
    assert "unfinished job with different spec" in err and "--overwrite" in err
    # The case the issue found: chunks left without a manifest (an older version's race). They name their job
    # in their first line, so a run with other options computes them again instead of adopting them.
    (parts / "manifest.json").unlink()
    assert _run(*base, "--aggregation", "max_wins") == 0
    assert out.read_bytes() == want
    # and --overwrite starts over cleanly
    out2 = tmp_path / "o2.jsonl"
    assert _run("rank", src, "-o", out2, "--model", model, "--chunk-size", 1, "--shard", "1/2") == 0
    assert (
        _run("rank", src, "-o", out2, "--model", model, "--chunk-size", 1, "--aggregation", "max_wins", "--overwrite")
        == 0
    )
    assert out2.read_bytes() == want


def test_same_size_same_mtime_edit_is_detected(model, tmp_path, capsys):
    src = _input(tmp_path)
    out = tmp_path / "o.jsonl"
    base = ["rank", src, "-o", out, "--model", model, "--chunk-size", 1]
    assert _run(*base, "--shard", "0/2") == 0
    before = src.stat()
    text = src.read_text()
    edited = text.replace('"no idea"', '"no clue"', 1)  # same length
    assert len(edited) == len(text) and edited != text
    src.write_text(edited)
    os.utime(src, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert src.stat().st_size == before.st_size and src.stat().st_mtime_ns == before.st_mtime_ns
    assert _run(*base) == 2
    assert "unfinished job with different input" in capsys.readouterr().err
    assert _run(*base, "--overwrite") == 0
    assert out.read_bytes() == _clean(model, src, tmp_path / "ref", "--chunk-size", 1)


@pytest.mark.parametrize(
    "bad,message",
    [
        ({"--dtype": "float64"}, "dtype must be one of"),
        ({"--model": "{tmp}/no-such-model-folder"}, "could not find"),
        ({"-o": "{tmp}/o.txt"}, "unknown output type"),
    ],
)
def test_failed_start_leaves_nothing_that_refuses_the_fix(bad, message, model, tmp_path, capsys):
    src = _input(tmp_path)
    out = tmp_path / "o.jsonl"
    good = {"-o": str(out), "--model": model, "--chunk-size": "1"}
    args = {**good, **{k: v.replace("{tmp}", str(tmp_path)) for k, v in bad.items()}}
    assert _run("rank", src, *[x for kv in args.items() for x in kv]) != 0
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]  # no output, no job folder, nothing else
    assert _run("rank", src, *[x for kv in good.items() for x in kv]) == 0
    assert out.read_bytes() == _clean(model, src, tmp_path / "ref", "--chunk-size", 1)


def test_folder_of_a_job_that_computed_nothing_is_taken_over(model, tmp_path):
    """A start that died after creating its folder (e.g. killed while loading the model) computed no chunk: the
    corrected command takes the folder over instead of asking for --overwrite."""
    src = _input(tmp_path)
    other = tmp_path / "other.jsonl"
    assert _run("rank", src, "-o", other, "--model", model, "--chunk-size", 1, "--keep-parts", "--seed", 3) == 0
    out = tmp_path / "o.jsonl"
    parts = Path(str(out) + ".parts")
    parts.mkdir()
    shutil.copyfile(Path(str(other) + ".parts") / "manifest.json", parts / "manifest.json")
    assert _run("rank", src, "-o", out, "--model", model, "--chunk-size", 1) == 0
    assert out.read_bytes() == _clean(model, src, tmp_path / "ref", "--chunk-size", 1)


# ------------------------------------------------------------------------------------------- writing
@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640)])
def test_outputs_get_the_umask_permissions(umask, mode, model, tmp_path):
    src = _input(tmp_path)
    old = os.umask(umask)
    try:
        for ext in ("jsonl", "parquet"):
            out = tmp_path / f"o.{ext}"
            assert _run("rank", src, "-o", out, "--model", model) == 0
            assert stat.S_IMODE(out.stat().st_mode) == mode, (ext, oct(out.stat().st_mode))
    finally:
        os.umask(old)


def test_a_failed_write_names_the_path(model, tmp_path, capsys):
    """RLIMIT_FSIZE makes writes past 4 kB fail (EFBIG), as a full disk would (ENOSPC): the error names the file."""
    rows = [{"prompt": f"Q{i}?", "candidates": ["x" * 300, f"a{i}"]} for i in range(30)]
    src = _input(tmp_path, rows)
    out = tmp_path / "o.jsonl"
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        with pytest.raises(OSError, match=re.escape(f"cannot write {out}: File too large")):
            write_rows(out, rows)
        rc = _run("rank", src, "-o", out, "--model", model)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert rc == 1
    err = capsys.readouterr().err
    assert f"cannot write {out}" in err and "free some space" in err, err
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))  # no partial file left behind
    assert _run("rank", src, "-o", out, "--model", model) == 0  # resumes once there is room
    assert out.read_bytes() == _clean(model, src, tmp_path / "ref")


# ------------------------------------------------------------------------------------------- CLI rules
JSONISH = [
    {"prompt": "[3, 1, 2]", "candidates": ["[1]", '{"a": 1}', "plain"], "a": "[3, 1, 2]", "b": '{"x": 2}'},
    {"prompt": '{"role": "user"}', "candidates": ["[]", "x"], "a": "[]", "b": "y"},
]


@pytest.mark.parametrize("fmt", ["jsonl", "json", "parquet", "csv"])
def test_json_looking_strings_are_not_decoded(fmt, model, tiny_rm, tmp_path):
    src = _input(tmp_path, JSONISH, f"in.{fmt}")
    out = tmp_path / "o.jsonl"
    assert _run("rank", src, "-o", out, "--model", model) == 0
    got = [json.loads(line) for line in out.read_text().splitlines()]
    want = tiny_rm.rank_batch([r["prompt"] for r in JSONISH], [r["candidates"] for r in JSONISH])
    for g, w, row in zip(got, want, JSONISH):
        assert g["prompt"] == row["prompt"]  # still the text, in every format (CSV: a prompt is not a list column)
        assert g["candidates"] == row["candidates"]  # CSV: the list column's JSON text is decoded, its items are not
        np.testing.assert_allclose(g["pairrm_scores"], w.scores, atol=1e-5)
    assert _run("compare", src, "-o", tmp_path / "c.jsonl", "--model", model) == 0
    got = [json.loads(line) for line in (tmp_path / "c.jsonl").read_text().splitlines()]
    want = tiny_rm.compare([r["prompt"] for r in JSONISH], [r["a"] for r in JSONISH], [r["b"] for r in JSONISH])
    np.testing.assert_allclose([g["pairrm_logit"] for g in got], want, atol=1e-5)


def test_csv_list_cells_and_chats_are_still_decoded(model, tiny_rm, tmp_path):
    chat = [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello!"}]
    chat_b = [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Go away."}]
    src = _input(tmp_path, [{"prompt": "Hi?", "a": chat, "b": chat_b}], "in.csv")
    assert "Hello!" in src.read_text()
    assert _run("compare", src, "-o", tmp_path / "c.jsonl", "--model", model) == 0
    got = json.loads((tmp_path / "c.jsonl").read_text())
    np.testing.assert_allclose(got["pairrm_logit"], tiny_rm.compare_conversations([chat], [chat_b])[0], atol=1e-5)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _bar_counts(text: str) -> list[tuple[int, int]]:
    return [(int(a), int(b)) for a, b in re.findall(r"pairrm rank:\s+\d+%\|[^|]*\|\s*(\d+)/(\d+) ", text)]


def test_progress_moves_per_batch_of_pairs_and_obeys_hf_switches(model, tmp_path, monkeypatch):
    import huggingface_hub.utils as hub_utils
    import transformers

    rows = [
        {"prompt": f"Question {i}?", "candidates": [f"a{i}", f"b {i}", f"c  {i}", f"{i} d", f"e{i}e"]}
        for i in range(20)
    ]
    src = _input(tmp_path, rows)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    args = ["rank", str(src), "-o", str(tmp_path / "o.jsonl"), "--model", model, "--batch-size", "2"]
    assert main([*args, "--overwrite"]) == 0
    counts = _bar_counts(terminal.getvalue())
    total = 20 * 5 * 4
    assert counts and counts[-1] == (total, total), terminal.getvalue()[-500:]
    # One chunk of 20 rows: a bar that moved per chunk would jump from 0 to the end; this one moves per batch.
    assert any(0 < n < total for n, _ in counts), counts
    for disable, enable in [
        (hub_utils.disable_progress_bars, hub_utils.enable_progress_bars),
        (transformers.utils.logging.disable_progress_bar, transformers.utils.logging.enable_progress_bar),
    ]:
        terminal.seek(0)
        terminal.truncate()
        disable()
        try:
            assert main([*args, "--overwrite"]) == 0
        finally:
            enable()
        assert not _bar_counts(terminal.getvalue()) and "pairrm: output:" in terminal.getvalue()
    monkeypatch.setattr(sys.modules[hub_utils.tqdm.__module__], "HF_HUB_DISABLE_PROGRESS_BARS", True)  # = the env var
    terminal.seek(0)
    terminal.truncate()
    assert main([*args, "--overwrite"]) == 0
    assert not _bar_counts(terminal.getvalue())


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"pairrm-hf {__version__}"


@pytest.mark.parametrize(
    "missing,target,extra",
    [
        ("pyarrow", "out.parquet", "pyarrow"),
        ("pyarrow", "in.parquet", "pyarrow"),
        ("datasets", "folder", "datasets"),
    ],
)
def test_missing_extra_is_named_before_any_compute(missing, target, extra, tmp_path, monkeypatch, capsys):
    src = _input(tmp_path)
    if target == "in.parquet":
        src = _input(tmp_path, name="in.parquet")
    if target == "folder":
        import datasets

        src = tmp_path / "folder"
        datasets.Dataset.from_list(ROWS).save_to_disk(str(src))
    for name in [m for m in sys.modules if m == missing or m.startswith(missing + ".")]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed: import raises ImportError
    monkeypatch.setitem(sys.modules, missing, None)
    out = tmp_path / ("out.parquet" if target == "out.parquet" else "o.jsonl")
    # A model that does not exist proves nothing was loaded or computed first.
    assert _run("rank", src, "-o", out, "--model", tmp_path / "no-model") == 2
    err = capsys.readouterr().err
    assert f"optional package {extra!r}" in err and 'pip install "pairrm-hf[cli]"' in err, err
    assert not out.exists() and not Path(str(out) + ".parts").exists()
