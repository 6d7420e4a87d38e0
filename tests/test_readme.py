"""Every code block of README.md runs, offline, against the tiny local models (Hub ids swapped for folders)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ORACLE = Path(__file__).parent / "fixtures" / "oracle"
BLOCK = re.compile(r"```(python|bash)\n(.*?)```", re.S)

# The README names the published checkpoints; the tests use tiny stand-ins with the same layout.
SUBSTITUTIONS = {
    "llm-blender/PairRM-hf": str(ORACLE / "tiny" / "pairrm_hf"),
    "mightbe/Better-PairRM": str(ORACLE / "tiny" / "pairrm_hf"),
    "llm-blender/PairRM": str(ORACLE / "tiny" / "pairrm_hf"),
    "llm-blender/gen_fuser_3b": str(ORACLE / "fuser_tiny"),
}


def _blocks() -> list[tuple[str, str, int]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    out = []
    for match in BLOCK.finditer(text):
        line = text[: match.start()].count("\n") + 1
        out.append((match.group(1), match.group(2), line))
    return out


CHAT_LM = "HuggingFaceTB/SmolLM2-135M-Instruct"


def _swap(code: str, tmp_path: Path) -> str:
    for hub_id, local in SUBSTITUTIONS.items():  # longest ids first: the dict is ordered that way
        code = code.replace(hub_id, local)
    if CHAT_LM in code:  # a tiny Llama with a chat template stands in for the small chat model
        from pairrm_hf.testing import build_tiny_llama
        from tests.conftest import ORACLE_FUSER

        code = code.replace(CHAT_LM, str(build_tiny_llama(tmp_path / "chat-lm", ORACLE_FUSER)))
    return code


def _runnable_shell(code: str) -> str | None:
    if "pytest" in code:
        return None  # the test command itself
    # "pip install … && cmd" → "cmd": the package is installed already
    return re.sub(r"(?m)^\s*pip install [^&\n]*&&\s*", "", code)


BLOCKS = _blocks()


def test_readme_has_the_two_setup_commands():
    shell = [code for kind, code, _ in BLOCKS if kind == "bash"]
    assert any(c.startswith("pip install -e . && pairrm rank") for c in shell)
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = next(c.strip() for c in shell if "pytest" in c)
    assert test_command in ci, "CI must run the README's test command"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """One folder for all blocks, as a reader running them top to bottom would have (files carry over)."""
    return tmp_path_factory.mktemp("readme")


@pytest.mark.parametrize("kind,code,line", BLOCKS, ids=[f"README.md:{line}" for _, _, line in BLOCKS])
def test_readme_block_runs(kind, code, line, workdir):
    tmp_path = workdir
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), TOKENIZERS_PARALLELISM="false")
    if kind == "python":
        script = tmp_path / f"block_{line}.py"
        script.write_text(_swap(code, tmp_path), encoding="utf-8")
        cmd = [sys.executable, str(script)]
    else:
        shell = _runnable_shell(code)
        if shell is None:
            pytest.skip("the test command")
        cmd = ["bash", "-euo", "pipefail", "-c", _swap(shell, tmp_path)]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"README.md:{line} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
