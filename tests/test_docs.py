"""Every ```python and ```bash block of README.md and of every docs/ page runs, offline, on tiny local models.

The Hub ids the docs name are swapped for tiny stand-ins with the same layout. The blocks of one page run top to
bottom in one folder (files carry over, as for a reader) and in one Python process (imports paid once per page).
"""

from __future__ import annotations

import configparser
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ORACLE = Path(__file__).parent / "fixtures" / "oracle"
BLOCK = re.compile(r"```(python|bash)\n(.*?)```", re.S)
README_MAX_LINES = 200

# The docs name the published checkpoints; the tests use tiny stand-ins with the same layout.
SUBSTITUTIONS = {
    "llm-blender/PairRM-hf": str(ORACLE / "tiny" / "pairrm_hf"),
    "mightbe/Better-PairRM": str(ORACLE / "tiny" / "pairrm_hf"),
    "llm-blender/PairRM": str(ORACLE / "tiny" / "pairrm_hf"),
    "llm-blender/gen_fuser_3b": str(ORACLE / "fuser_tiny"),
}
CHAT_LM = "HuggingFaceTB/SmolLM2-135M-Instruct"

# Pages whose blocks train models, run TRL or generation, or start many `pairrm` processes: longer than the rest.
SLOW_PAGES = {
    "docs/guides/backends.md",
    "docs/guides/distillation.md",
    "docs/guides/rl-at-scale.md",
    "docs/guides/cli-jobs.md",
    "docs/guides/pipelines.md",
    "docs/guides/rankers.md",
    "docs/guides/training.md",
    "docs/guides/trl.md",
}

# Run by the page's one Python process: each block in order, python blocks as fresh __main__ modules.
DRIVER = """\
import runpy, subprocess, sys
for kind, path, label in {blocks!r}:
    print(f"--- {{label}}", flush=True)
    print(f"--- {{label}}", file=sys.stderr, flush=True)
    if kind == "python":
        runpy.run_path(path, run_name="__main__")
    else:
        subprocess.run(["bash", "-euo", "pipefail", path], check=True)
"""


def blocks_of(page: Path) -> list[tuple[str, str, int]]:
    """The page's (kind, code, line) code blocks, in order."""
    text = page.read_text(encoding="utf-8")
    out = []
    for match in BLOCK.finditer(text):
        out.append((match.group(1), match.group(2), text[: match.start()].count("\n") + 1))
    return out


def _swap(code: str, workdir: Path) -> str:
    for hub_id, local in SUBSTITUTIONS.items():  # longest ids first: the dict is ordered that way
        code = code.replace(hub_id, local)
    if CHAT_LM in code:  # a tiny Llama with a chat template stands in for the small chat model
        from pairrm_hf.testing import build_tiny_llama
        from tests.conftest import ORACLE_FUSER

        code = code.replace(CHAT_LM, str(build_tiny_llama(workdir / "chat-lm", ORACLE_FUSER)))
    return code


def _runnable_shell(code: str) -> str | None:
    if "pytest" in code:
        return None  # the test command itself
    # "pip install … && cmd" → "cmd": the package is installed already
    return re.sub(r"(?m)^\s*pip install [^&\n]*&&\s*", "", code)


PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
RUNNABLE = [page for page in PAGES if blocks_of(page)]


def _page_id(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def _params():
    for page in RUNNABLE:
        marks = [pytest.mark.slow] if _page_id(page) in SLOW_PAGES else []
        yield pytest.param(page, id=_page_id(page), marks=marks)


@pytest.mark.parametrize("page", _params())
def test_page_blocks_run(page: Path, tmp_path: Path):
    blocks = []
    for kind, code, line in blocks_of(page):
        label = f"{_page_id(page)}:{line}"
        if kind == "bash":
            code = _runnable_shell(code)
            if code is None:
                continue
        path = tmp_path / f"block_{line}.{'py' if kind == 'python' else 'sh'}"
        path.write_text(_swap(code, tmp_path), encoding="utf-8")
        blocks.append((kind, str(path), label))
    driver = tmp_path / "run_page.py"
    driver.write_text(DRIVER.format(blocks=blocks), encoding="utf-8")
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), TOKENIZERS_PARALLELISM="false")
    result = subprocess.run(
        [sys.executable, str(driver)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200
    )
    ran = re.findall(r"(?m)^--- (\S+)$", result.stdout)
    where = ran[-1] if ran else _page_id(page)
    assert result.returncode == 0, f"{where} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    assert len(ran) == len(blocks)  # every runnable block ran


def test_readme_has_the_two_setup_commands():
    shell = [code for kind, code, _ in blocks_of(ROOT / "README.md") if kind == "bash"]
    assert any(c.startswith("pip install -e . && pairrm rank") for c in shell)
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = next(c.strip() for c in shell if "pytest" in c)
    assert test_command in ci, "CI must run the README's test command"


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move details into docs/"


def test_ci_builds_the_site_strictly():
    assert "mkdocs build --strict" in (ROOT / ".ci" / "run").read_text()


def test_architecture_page_names_the_contract_layers():
    """docs/architecture.md lists the layers of setup.cfg's import-linter contract, in the same order."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    contract = [line.strip() for line in config["importlinter:contract:layers"]["layers"].strip().splitlines()]
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    rows = re.findall(r"(?m)^\| (`[a-z_]+`(?: \\\| `[a-z_]+`)*) \|", page)
    documented = [row.replace("`", "").replace("\\|", "|") for row in rows]
    assert documented == contract


def test_every_docs_page_is_in_the_nav():
    """mkdocs.yml's nav names every page under docs/ (a page left out is unreachable from the site)."""
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    named = set(re.findall(r"(?m)^\s*- (?:[^:#\n]+: )?([\w/.-]+\.md)\s*(?:#.*)?$", nav))  # commented-out lines: no
    pages = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    assert pages <= named, f"not in mkdocs.yml's nav: {sorted(pages - named)}"
