"""A griffe extension for the API pages: Sphinx roles in our docstrings render as inline code.

The docstrings cross-reference with Sphinx roles (``:class:`~pairrm_hf.PairRM```, ``:func:`train_pairrm```), which
Markdown would show verbatim. This turns each role into inline code of the name a reader expects (the last
component when the target starts with ``~``, as Sphinx does), before mkdocstrings parses the docstring.
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


class SphinxRolesAsCode(griffe.Extension):
    """Rewrite Sphinx roles in every docstring as inline code."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(_plain, obj.docstring.value)
