"""A short bounded pass of every fuzz target (``fuzz/fuzz_*.py``), as CI runs it.

Each target runs as its own process, exactly as documented in fuzz/README.md, with the
default engine (atheris, coverage-guided, when installed; else hypothesis) for a few
seconds, and once with the hypothesis fallback. A defect makes the target exit non-zero
and leave a ``crash-*`` file. Targets are found by glob, so a new one is covered as soon
as it exists.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
TARGETS = sorted((ROOT / "fuzz").glob("fuzz_*.py"))
#: Bounds of one smoke pass: whichever comes first.
SECONDS = 3
RUNS = 20_000


def test_there_are_fuzz_targets() -> None:
    assert any(t.name == "fuzz_pdu.py" for t in TARGETS), TARGETS


def _run(target: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(target), *args],
        cwd=cwd, capture_output=True, text=True, timeout=180,
    )  # fmt: skip


@pytest.mark.parametrize("target", TARGETS, ids=[t.stem for t in TARGETS])
def test_short_fuzz_pass_finds_no_defect(target: Path, tmp_path: Path) -> None:
    done = _run(target, tmp_path, "--runs", str(RUNS), "--seconds", str(SECONDS))
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert not list(tmp_path.glob("crash-*")), output[-4000:]


@pytest.mark.parametrize("target", TARGETS, ids=[t.stem for t in TARGETS])
def test_hypothesis_fallback_runs(target: Path, tmp_path: Path) -> None:
    done = _run(target, tmp_path, "--engine", "hypothesis", "--runs", "200", "--seconds", str(SECONDS))
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "no defect" in done.stdout


def _load_pdu_target() -> ModuleType:
    sys.path.insert(0, str(ROOT / "fuzz"))
    try:
        spec = importlib.util.spec_from_file_location("fuzz_pdu_under_test", ROOT / "fuzz" / "fuzz_pdu.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(ROOT / "fuzz"))


def test_pdu_target_lets_only_protocol_errors_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """The target can fail: an exception other than ProtocolError from the decoder escapes
    it (and would be a crash for atheris), while a ProtocolError is the expected answer."""
    from aiodicom.errors import PDUTooLargeError
    from aiodicom.ul import pdu as P

    check, seeds = _load_pdu_target().load()
    for seed in seeds:
        check(seed)

    def refuse(pdu_type: int, body: object) -> P.PDU:
        raise PDUTooLargeError("a ProtocolError subclass is fine", P.REASON_INVALID_PARAMETER)

    monkeypatch.setattr(P, "decode", refuse)
    for seed in seeds:
        check(seed)

    def crash(pdu_type: int, body: object) -> P.PDU:
        raise KeyError("not a protocol error")

    monkeypatch.setattr(P, "decode", crash)
    with pytest.raises(KeyError):
        check(seeds[0])


def test_replay_runs_a_saved_input(tmp_path: Path) -> None:
    saved = tmp_path / "input"
    saved.write_bytes(b"\x00\x00" + bytes(range(256)))
    done = _run(ROOT / "fuzz" / "fuzz_pdu.py", tmp_path, "--replay", str(saved))
    assert done.returncode == 0 and "no defect" in done.stdout, done.stderr
