"""Smoke runs of the benchmark scripts on the tiny shape: they finish, write JSON, report every variant (or why it
could not run) and their numbers agree with independent expectations (fp32 paths match the fp32 reference)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run_module(module: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def _assert_available_or_reason(row: dict) -> None:
    assert row["ok"] or row.get("unavailable"), row


@pytest.mark.slow
def test_gpu_check_cpu_mode_reports_flex_rows(tmp_path):
    out = tmp_path / "gpu_check.json"
    small = ["--inputs", "1", "--n", "2", "--precision-inputs", "1", "--precision-n", "2", "--memory-inputs", "1"]
    small += ["--memory-n", "2", "--fixed-inputs", "2", "--row-tokens", "64", "--repeats", "1", "--threads", "1"]
    done = _run_module("benchmarks.gpu_check", "--device", "cpu", *small, "--json", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = report["results"]

    precision = {(r["dtype"], r["attention"]): r for r in rows if r["part"] == "precision"}
    assert {a for _, a in precision} == {"eager", "fused", "flex"}
    for dtype in ("fp32", "bf16", "fp16"):
        _assert_available_or_reason(precision[dtype, "flex"])
    # fp32 against fp32 eager: the documented 1e-5 tolerance, no decision flipped (flex too, once it exists)
    for attention in ("eager", "fused", "flex"):
        row = precision["fp32", attention]
        if row["ok"]:
            assert row["max_abs_diff"] <= 1e-5 and row["flips"] == 0, row

    speed = {r["variant"]: r for r in rows if r["part"] == "speed"}
    assert {"baseline", "engine fp32", "engine+flex fp32", "engine+eager fp32"} <= set(speed)
    _assert_available_or_reason(speed["engine+flex fp32"])
    assert speed["engine fp32"]["speedup_vs_fused"] == pytest.approx(1.0)
    assert speed["engine fp32"]["max_abs_diff_vs_baseline"] <= 1e-5

    at_2048 = {r["attention"]: r for r in rows if r["part"] == "memory" and r["workload"] == "long"}
    assert set(at_2048) == {"eager", "fused", "flex"}
    for row in at_2048.values():
        _assert_available_or_reason(row)
        if row["ok"]:  # the long workload's rows are cut to exactly the 2048-token budget
            assert row["mean_row_tokens"] == 2048 and row["peak_rss_mb"] > 0

    packing = {(r["attention"], r["packing"]): r for r in rows if r["part"] == "packing"}
    assert set(packing) == {(a, on) for a in ("fused", "flex") for on in (False, True)}
    for (_attention, on), row in packing.items():
        assert row["ok"], row  # packing runs on CPU too (flex compiled, or fused per segment after one warning)
        assert row["max_abs_diff_vs_unpacked"] <= 1e-5, row
        if on:  # packed rows carry no padding; unpacked mixed rows do
            assert row["padding_fraction"] == 0, row
    assert report["machine"]["flex"].startswith(("ran", "unavailable"))


def test_gpu_check_guard_skips_and_still_writes_json(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = _run_module("benchmarks.gpu_check", "--device", "cpu", "--max-seconds", "0", "--json", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["results"] == []
    notes = [s for s in report["machine"]["skipped"] if "wall-clock guard" in s]
    assert (
        any(s.startswith("precision") for s in notes)
        and any(s.startswith("speed") for s in notes)
        and any(s.startswith("memory") for s in notes)
    )


@pytest.mark.slow
def test_bench_rank_side_by_side_reports_every_backend(tmp_path, monkeypatch):
    from benchmarks.bench_rank import SIDE_BY_SIDE, main

    monkeypatch.setenv("PAIRRM_OPENVINO_CACHE", str(tmp_path / "ov"))
    out = tmp_path / "rank.json"
    argv = ["--side-by-side", "--shapes", "tiny", "--workloads", "short", "--configs", "2x3", "--repeats", "2"]
    assert main([*argv, "--threads", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["complete"]
    rows = {r["variant"]: r for r in report["results"]}
    assert set(rows) == set(SIDE_BY_SIDE)
    for row in rows.values():
        assert row["available"] or row["reason"], row
        if row["available"]:
            assert row["rounds"] == 2 and row["setup_s"] >= 0 and row["warmup_s"] >= 0, row
    assert rows["baseline"]["speedup_vs_baseline"] == pytest.approx(1.0)
    assert rows["engine"]["speedup_vs_engine"] == pytest.approx(1.0)
    # every fp32 path agrees with the fp32 baseline to the documented 1e-5, with no decision flipped
    for name in ("engine", "engine+eager", "engine+flex", "engine+export", "blender", "openvino"):
        if rows[name]["available"]:
            assert rows[name]["max_abs_diff_vs_baseline"] <= 1e-5, rows[name]
            assert rows[name]["decision_flips_vs_baseline"] == 0, rows[name]


def test_bench_rank_budget_stops_cleanly_and_writes_json(tmp_path):
    from benchmarks.bench_rank import main

    out = tmp_path / "rank.json"
    assert main(["--shapes", "tiny", "--workloads", "short", "--max-seconds", "0", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["complete"] is False and report["results"] == []


@pytest.mark.slow
def test_bench_head_groups_times_each_grouping_and_skips_rows_over_its_gather_limit(tmp_path):
    """The tiny shape (4 heads) with all heads, 1 and 3 per group: every grouping matches torch fp32 to 1e-5; rows of
    3,000 tokens run only where one head's Gather stays within 2^24 elements (3000² · 1 ≤ 2^24 < 3000² · 3)."""
    pytest.importorskip("openvino")
    from benchmarks.bench_head_groups import main

    out = tmp_path / "groups.json"
    argv = ["--shape", "tiny", "--groups", "0", "1", "3", "--batches", "3x40", "1x3000", "--rounds", "1"]
    assert main([*argv, "--threads", "1", "--json", str(out)]) == 0
    rows = {(r["batch"], r["heads_per_group"]): r for r in json.loads(out.read_text())}
    assert set(rows) == {(b, g) for b in ("3x40", "1x3000") for g in (None, 1, 3)}
    ran = {key for key, row in rows.items() if "seconds" in row}
    assert ran == {("3x40", None), ("3x40", 1), ("3x40", 3), ("1x3000", 1)}
    for key in ran:
        assert rows[key]["max_abs_hidden_diff"] <= 1e-5, rows[key]
    assert rows[("3x40", None)]["ratio_to_first"] == pytest.approx(1.0)
    assert "exact-Gather limit (2048)" in rows[("1x3000", None)]["reason"]
    assert rows[("1x3000", 3)]["gather_heads"] == 3
