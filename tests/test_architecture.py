"""The project's structural rules, checked on the source itself.

Layers import only downwards; the protocol core does no I/O; src/ uses no
thread pools and never imports pynetdicom (a test peer only); ruff and mypy
stay clean.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "aiodicom"

# package -> aiodicom packages it must never import
FORBIDDEN = {
    "codec": {"ul", "transport", "dimse", "qr", "grinders", "factory", "data", "cli", "pipeline"},
    "ul": {"transport", "dimse", "qr", "grinders", "factory", "data", "cli", "pipeline"},
    "transport": {"dimse", "qr", "grinders", "factory", "data", "cli", "pipeline"},
    "dimse": {"qr", "grinders", "factory", "data", "cli", "pipeline"},
    "qr": {"grinders", "factory", "data", "cli", "pipeline"},
    "grinders": {"ul", "transport", "dimse", "qr", "cli", "pipeline"},
    "factory": {"ul", "transport", "dimse", "qr", "cli", "pipeline"},
    "data": {"ul", "transport", "dimse", "qr", "cli", "pipeline"},
    "pipeline": {"cli"},
}
#: The sans-I/O core must not touch sockets, event loops or clocks.
NO_IO = {"asyncio", "anyio", "socket", "ssl", "selectors", "time", "uvloop", "trio"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _modules(package: str) -> list[Path]:
    return sorted((SRC / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layers_import_only_downwards(package: str) -> None:
    offending = []
    for path in _modules(package):
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] == "aiodicom" and len(parts) > 1 and parts[1] in FORBIDDEN[package]:
                offending.append(f"{path.relative_to(SRC)} imports {name}")
    assert not offending, offending


def test_upper_layer_core_is_sans_io() -> None:
    offending = [
        f"{path.relative_to(SRC)} imports {name}"
        for path in _modules("ul")
        for name in _imports(path)
        if name.split(".")[0] in NO_IO
    ]
    assert not offending, offending


def test_no_thread_pools_and_no_pynetdicom_in_src() -> None:
    offending = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        for word in ("run_in_executor", "to_thread", "ThreadPoolExecutor", "threading"):
            if word in text:
                offending.append(f"{path.relative_to(SRC)} mentions {word}")
        if any(name.split(".")[0] == "pynetdicom" for name in _imports(path)):
            offending.append(f"{path.relative_to(SRC)} imports pynetdicom")
    assert not offending, offending


def test_ruff_is_clean() -> None:
    if shutil.which("ruff") is None and subprocess.run(
        [sys.executable, "-m", "ruff", "--version"], capture_output=True
    ).returncode:
        pytest.skip("ruff is not installed")
    root = SRC.parents[1]
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "src", "tests", "benchmarks", "examples", "fuzz"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_is_clean() -> None:
    root = SRC.parents[1]
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "src"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_only_the_metrics_module_imports_prometheus() -> None:
    """The server emits events to an observer; prometheus_client stays an optional extra."""
    offending = [
        f"{path.relative_to(SRC)} imports {name}"
        for path in sorted(SRC.rglob("*.py"))
        if path != SRC / "metrics.py"
        for name in _imports(path)
        if name.split(".")[0] == "prometheus_client"
    ]
    assert not offending, offending


def test_errors_module_imports_nothing() -> None:
    """errors.py is the bottom of every layer: an import there risks a cycle from anywhere."""
    tree = ast.parse((SRC / "errors.py").read_text())
    imports = [
        ast.unparse(node) for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)
    ]
    assert imports == []


def _is_vr_literal(node: ast.AST, names: set[object]) -> bool:
    if isinstance(node, ast.Set | ast.Tuple | ast.List):
        elements = node.elts
    elif isinstance(node, ast.Dict):
        elements = [key for key in node.keys if key is not None]
    else:
        return False
    values = [e.value for e in elements if isinstance(e, ast.Constant)]
    return len(values) >= 3 and len(values) == len(elements) and all(v in names for v in values)


def _vr_literals(path: Path) -> list[str]:
    """Set/tuple/list/dict literals of three or more VR names (str or bytes) in ``path``,
    as ``path:line``, or ``path:NAME`` for one assigned at module level."""
    from aiodicom.codec.vr import VR_TABLE

    names: set[object] = set(VR_TABLE) | {vr.encode("ascii") for vr in VR_TABLE}
    tree = ast.parse(path.read_text(), filename=str(path))
    owner: dict[int, str] = {}
    for statement in tree.body:
        if isinstance(statement, ast.Assign | ast.AnnAssign):
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            for node in ast.walk(statement):
                owner[id(node)] = ",".join(ast.unparse(t) for t in targets)
    where = path.relative_to(SRC)
    found = [
        f"{where}:{owner.get(id(node), node.lineno)}"
        for node in ast.walk(tree)
        if _is_vr_literal(node, names)
    ]
    return [hit for hit in found if hit not in _VR_POLICIES]


#: Tables keyed by VR that hold a policy, not a fact about the VR: allowed outside codec/vr.py.
_VR_POLICIES = {
    "data/anonymize.py:_DUMMY",  # the dummy value de-identification writes
    "dimse/command.py:_ENCODERS",  # the command set's coder for each VR of group 0000
    "qr/matching.py:_NO_WILDCARDS",  # the VRs PS3.4 C.2.2.2.4 excludes from wildcard matching
    "qr/matching.py:_FORMATS",  # the query value each ranged VR accepts
    "dimse/command.py:_READERS",
}


def test_the_vr_table_is_the_only_one() -> None:
    """VR facts (header size, padding, undefined length...) live in codec/vr.py alone:
    three hand-written copies once disagreed about SV and UV."""
    offending = [
        hit
        for path in sorted(SRC.rglob("*.py"))
        if path != SRC / "codec" / "vr.py"
        for hit in _vr_literals(path)
    ]
    assert not offending, offending
    assert _vr_literals(SRC / "codec" / "vr.py"), "the check must see the table itself"
