"""A griffe extension for the API pages: our reST-flavoured docstrings read well as Markdown.

The docstrings cross-reference with Sphinx roles (``:class:`~pairrm_hf.PairRM```, ``:func:`train_pairrm```), which
Markdown would show verbatim: each role becomes inline code of the name a reader expects (the last component when
the target starts with ``~``, as Sphinx does). Doctest examples (``>>>`` lines and their output) would read as
nested quotes: each becomes a fenced ``pycon`` block. Both happen before mkdocstrings parses the docstring.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|exc|obj|const):`(~?)([^`]+)`")


def _plain(match: re.Match) -> str:
    short, target = match.group(1), match.group(2).strip()
    if short:
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


def fence_doctests(text: str) -> str:
    """Put each doctest example (from a ``>>>`` line to the next blank line) in a fenced ``pycon`` block."""
    out: list[str] = []
    indent: str | None = None  # the open example's indentation, None outside one
    for line in text.split("\n"):
        if indent is None and line.lstrip().startswith(">>>"):
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}```pycon")
        elif indent is not None and not line.strip():
            out.append(f"{indent}```")
            indent = None
        out.append(line.replace("  # doctest: +SKIP", "") if indent is not None else line)
    if indent is not None:
        out.append(f"{indent}```")
    return "\n".join(out)


class SphinxRolesAsCode(griffe.Extension):
    """Rewrite Sphinx roles in every docstring as inline code, and fence its doctest examples."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = fence_doctests(ROLE.sub(_plain, obj.docstring.value))
