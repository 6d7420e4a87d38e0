"""The pipeline / fusion / best-of-n examples run end to end against tiny local models (subprocess, offline)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pairrm_hf.testing import build_tiny_llama
from tests.conftest import ORACLE_FUSER

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow
def test_examples_run(tiny_hf_dir, tmp_path):
    out = _run("examples/pipeline_rank.py", "--model", str(tiny_hf_dir))
    assert out.count("rank ") == 3 and "P(first answer is better)" in out
    out = _run("examples/fuse.py", "--model", str(ORACLE_FUSER), "--ranker", str(tiny_hf_dir), "--max-new-tokens", "4")
    assert "fused text:" in out and "fused from:" in out
    llama = build_tiny_llama(tmp_path / "llama", ORACLE_FUSER)
    out = _run(
        "examples/best_of_n.py", "--model", str(llama), "--ranker", str(tiny_hf_dir), "-n", "2", "--max-new-tokens", "4"
    )
    assert out.startswith("best of 2 :")
