"""A griffe extension for the API reference: our docstrings as the source shows them.

aiodicom's docstrings use Sphinx roles (``:class:`Server```) and document attributes
with ``#:`` comments, as Sphinx autodoc reads them. mkdocstrings understands neither:
roles would show as ``:class:Server`` and ``#:`` attributes would have no text. This
turns roles into inline code and lifts ``#:`` comments into attribute docstrings while
griffe loads the package, so the source stays the single place the text is written.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|meth|func|attr|mod|exc|data|obj|const):`~?([^`]+)`")


def _plain_roles(text: str) -> str:
    return _ROLE.sub(lambda match: f"`{match.group(1)}`", text)


class SphinxDocstrings(griffe.Extension):
    """Rewrite roles as code; take ``#:`` comments above an attribute as its docstring."""

    def on_instance(
        self, *, node: ast.AST | griffe.ObjectNode, obj: griffe.Object, agent: Any, **kwargs: Any
    ) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _plain_roles(obj.docstring.value)

    def on_attribute_instance(
        self,
        *,
        node: ast.AST | griffe.ObjectNode,
        attr: griffe.Attribute,
        agent: Any,
        **kwargs: Any,
    ) -> None:
        if attr.docstring is not None or attr.lineno is None:
            return
        filepath = attr.filepath
        if not isinstance(filepath, Path) or filepath not in attr.lines_collection:
            return
        lines = attr.lines_collection[filepath]
        comment: list[str] = []
        index = attr.lineno - 2  # the line above, 0-based
        while index >= 0 and lines[index].lstrip().startswith("#:"):
            comment.insert(0, lines[index].lstrip()[2:].strip())
            index -= 1
        if comment:
            attr.docstring = griffe.Docstring(_plain_roles(" ".join(comment)), parent=attr)
