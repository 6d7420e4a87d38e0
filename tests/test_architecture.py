"""House rules that ruff and lint-imports do not check: no module of pairrm_hf uses another module's private
(``_name``) names, and the formatter is never switched off."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "pairrm_hf"
MODULES = sorted(PACKAGE.rglob("*.py"))


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _resolve(path: Path, node: ast.ImportFrom, root: Path) -> str:
    """The absolute module a ``from ... import`` reads from."""
    if not node.level:
        return node.module or ""
    package = _module_name(path, root).split(".")
    if path.name != "__init__.py":
        package = package[:-1]  # a module's relative imports start from its package
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _is_module(dotted: str, root: Path) -> bool:
    rel = Path(*dotted.split("."))
    return (root / rel).with_suffix(".py").is_file() or (root / rel / "__init__.py").is_file()


def private_uses(path: Path, root: Path = ROOT) -> list[str]:
    """``file:line: what`` for each private name of another pairrm_hf module that ``path`` imports or reads
    (``root``: the folder holding the ``pairrm_hf`` package)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    me = _module_name(path, root)
    found: list[str] = []
    module_aliases: dict[str, str] = {}  # local name → pairrm_hf module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = _resolve(path, node, root)
            if not source.startswith("pairrm_hf"):
                continue  # third-party private names are out of our hands
            for alias in node.names:
                if _is_module(f"{source}.{alias.name}", root):
                    module_aliases[alias.asname or alias.name] = f"{source}.{alias.name}"
                elif _is_private(alias.name) and source != me:
                    found.append(f"{path.relative_to(root)}:{node.lineno}: from {source} import {alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("pairrm_hf") and alias.asname:
                    module_aliases[alias.asname] = alias.name
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in module_aliases
            and _is_private(node.attr)
            and module_aliases[node.value.id] != me
        ):
            module = module_aliases[node.value.id]
            found.append(f"{path.relative_to(root)}:{node.lineno}: {module}.{node.attr}")
    return found


def test_no_module_uses_another_modules_private_names():
    offences = [line for path in MODULES for line in private_uses(path)]
    assert not offences, "private names used across modules (make them public if they are shared):\n" + "\n".join(
        offences
    )


def test_the_private_name_check_catches_what_it_should(tmp_path):
    # A throwaway package laid out like pairrm_hf, so the rule itself is shown to fail on each kind of offence.
    pkg = tmp_path / "pairrm_hf"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "helpers.py").write_text("_secret = 1\npublic = 2\n")
    bad = pkg / "sub" / "user.py"
    bad.write_text(
        "from .helpers import _secret, public\n"
        "from . import helpers\n"
        "from pairrm_hf.sub.helpers import _secret as s2\n"
        "import pairrm_hf.sub.helpers as h\n"
        "x = helpers._secret + h._secret + helpers.public + helpers.__name__.__len__()\n"
        "from transformers.utils import _LazyModule\n"  # third party: not ours to fix
    )
    got = private_uses(bad, tmp_path)
    assert [g.split(": ", 1)[1] for g in got] == [
        "from pairrm_hf.sub.helpers import _secret",
        "from pairrm_hf.sub.helpers import _secret",
        "pairrm_hf.sub.helpers._secret",
        "pairrm_hf.sub.helpers._secret",
    ]


# Spelled in two parts so this file does not match itself.
_FORMATTER_OFF = ("# fmt: " + "skip", "# fmt: " + "off")
_SKIP_DIRS = {".git", ".venv", "venv", "node_modules", "build", "dist", "site", "__pycache__", ".ruff_cache"}


def _repo_python_files() -> list[Path]:
    return [
        p
        for p in ROOT.rglob("*.py")
        if not any(part in _SKIP_DIRS or part.endswith(".egg-info") for part in p.relative_to(ROOT).parts)
    ]


@pytest.mark.parametrize("marker", _FORMATTER_OFF)
def test_the_formatter_is_never_switched_off(marker):
    files = _repo_python_files()
    assert PACKAGE / "__init__.py" in files  # the scan does look at the package
    offences = [
        f"{p.relative_to(ROOT)}:{k}"
        for p in files
        for k, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
        if marker in line
    ]
    assert not offences, f"{marker!r} found (ruff format must own every line): {offences}"
