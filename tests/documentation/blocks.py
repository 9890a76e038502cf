"""Run the fenced code blocks of a Markdown document, in order, as a reader would.

The convention (written for contributors in ``docs/contributing.md``):

- ```` ```python ```` blocks run as scripts, ```` ```sh ```` blocks run line by line in
  ``bash``, ```` ```console ```` blocks run their ``$ `` lines and compare what follows
  with the output (``...`` matches anything). ```` ```text ```` blocks never run. Any
  other language, or none, is an error: the author must say whether a block runs.
- All blocks of one document share one fresh working folder, so a later block can use the
  files an earlier one wrote (``aiodicom generate study/`` then ``aiodicom store ... study/``).
- The ports 11112, 11113 and 11114 are documentation ports: each is replaced by a free
  port for the run, the same one in every block of the document, so runs never collide
  with each other or with a real service on 11112.
- ``aiodicom receive ...``, ``aiodicom qrscp ...`` and ``aiodicom serve ...`` in a shell
  block keep running in the background: the run waits until its ``--port`` accepts
  connections, goes on with the next line, and stops it with SIGTERM when the document
  ends; it must then exit with 0 (a graceful drain).
  A Python block preceded by ``<!-- docs-test: background port=11113 -->`` is run the
  same way (it must stop cleanly on SIGTERM).
- A Python block preceded by ``<!-- docs-test: file=mynode.py -->`` is not run: it is
  saved as ``mynode.py`` in the document's folder, a module later blocks import (e.g.
  ``aiodicom serve mynode:MyNode``).

The ``aiodicom`` that shell blocks call is this interpreter's (``python -m aiodicom``),
so the sources under test are the ones run.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from peers import PeerError, free_port, peer_env, stop_process, wait_for_port

RUNNABLE = ("python", "sh", "console")
NOT_RUN = ("text",)
DOC_PORTS = ("11112", "11113", "11114")
#: Seconds one command or Python block may take.
STEP_TIMEOUT = 120.0
#: Shell commands that serve until stopped.
_SERVERS = (("aiodicom", "receive"), ("aiodicom", "qrscp"), ("aiodicom", "serve"))

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
_MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<options>.*?)\s*-->\s*$")
_PORT_OPTION = re.compile(r"--port[ =](\d+)")


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its language, its text and its marker options."""

    path: Path
    line: int
    language: str
    code: str
    options: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def _options(text: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for word in text.split():
        key, _, value = word.partition("=")
        options[key] = value
    return options


def extract_blocks(path: Path) -> list[Block]:
    """The fenced blocks of ``path`` (any indent, ``` or ~~~ fences), in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        language = opening["info"].split()[0] if opening["info"].strip() else ""
        marker = _MARKER.match(lines[index - 1]) if index else None
        body: list[str] = []
        start = index + 1
        index += 1
        while index < len(lines):
            closing = _FENCE.match(lines[index])
            if (
                closing
                and closing["fence"].startswith(fence[0] * len(fence))
                and not closing["info"].strip()
            ):
                break
            line = lines[index]
            body.append(line[min(indent, len(line) - len(line.lstrip(" "))) :])
            index += 1
        else:
            raise AssertionError(f"{path}:{start}: unclosed code fence")
        index += 1
        options = _options(marker["options"]) if marker else {}
        blocks.append(Block(path, start, language, "\n".join(body) + "\n", options))
    return blocks


def commands(code: str) -> Iterator[str]:
    """Shell commands of a ``sh`` block: one per line, ``\\`` continues, comments skipped."""
    pending = ""
    for raw in code.splitlines():
        line = raw.rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        if line.strip() and not line.lstrip().startswith("#"):
            yield line.strip()
    if pending.strip():
        yield pending.strip()


def _is_server(command: str) -> bool:
    try:
        words = shlex.split(command, comments=True)
    except ValueError:
        return False
    return any(tuple(words[: len(server)]) == server for server in _SERVERS)


def _output_matches(expected: list[str], actual: list[str]) -> bool:
    """Each expected line, in order, equals an actual line; ``...`` inside matches anything."""
    patterns = [
        re.compile(".*".join(map(re.escape, line.split("..."))))
        for line in expected
        if line.strip()
    ]
    position = 0
    for pattern in patterns:
        while position < len(actual) and not pattern.fullmatch(actual[position].rstrip()):
            position += 1
        if position == len(actual):
            return False
        position += 1
    return True


class DocumentRun:
    """Runs one document's blocks in a shared folder; stops its background peers at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.ports = {name: str(free_port()) for name in DOC_PORTS}
        bin_dir = workdir.parent / f"{workdir.name}-bin"
        bin_dir.mkdir(exist_ok=True)
        shim = bin_dir / "aiodicom"
        shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m aiodicom "$@"\n')
        shim.chmod(0o755)
        self.env = peer_env({"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"})
        self.background: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]] = []

    def substitute(self, code: str) -> str:
        return re.sub(r"\b(" + "|".join(DOC_PORTS) + r")\b", lambda m: self.ports[m.group(1)], code)

    # --- one block ----------------------------------------------------------------------

    def run(self, block: Block) -> None:
        runner = {"python": self._python, "sh": self._sh, "console": self._console}.get(
            block.language
        )
        if runner is None:
            return  # text: never run
        runner(block, self.substitute(block.code))

    def _python(self, block: Block, code: str) -> None:
        if "file" in block.options:
            name = block.options["file"]
            assert re.fullmatch(r"\w+\.py", name), f"{block.where}: file=NAME.py, a plain module name"
            (self.workdir / name).write_text(code, encoding="utf-8")
            return
        script = self.workdir / f"block_{block.path.stem}_{block.line}.py"
        script.write_text(code, encoding="utf-8")
        if "background" in block.options:
            port = self.substitute(block.options.get("port", ""))
            assert port.isdigit(), f"{block.where}: a background block needs port=N"
            self._start(block, [sys.executable, str(script)], int(port))
            return
        self._check(block, code, [sys.executable, str(script)])

    def _sh(self, block: Block, code: str) -> None:
        for command in commands(code):
            self._shell(block, command)

    def _console(self, block: Block, code: str) -> None:
        command: str | None = None
        expected: list[str] = []
        for line in [*code.splitlines(), "$ "]:
            if line.startswith("$ "):
                if command:
                    output = self._shell(block, command)
                    assert _output_matches(expected, output.splitlines()), (
                        f"{block.where}: output of {command!r} differs\nexpected:\n"
                        + "\n".join(expected)
                        + f"\nactual:\n{output}"
                    )
                command, expected = line[2:].strip(), []
            else:
                expected.append(line)

    def _shell(self, block: Block, command: str) -> str:
        if _is_server(command):
            match = _PORT_OPTION.search(command)
            assert match, f"{block.where}: {command!r} must name its --port (a documentation port)"
            self._start(block, ["bash", "-c", f"exec {command}"], int(match.group(1)))
            return ""
        return self._check(block, command, ["bash", "-c", command])

    def _check(self, block: Block, shown: str, args: list[str]) -> str:
        try:
            result = subprocess.run(
                args, cwd=self.workdir, env=self.env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=STEP_TIMEOUT,
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(
                f"{block.where}: still running after {STEP_TIMEOUT} s:\n{shown}"
            ) from exc
        output = result.stdout.decode("utf-8", "replace")
        assert result.returncode == 0, (
            f"{block.where}: exit code {result.returncode}\n{shown}\noutput:\n{output}{self._peer_output()}"
        )
        return output

    # --- background peers ---------------------------------------------------------------

    def _start(self, block: Block, args: list[str], port: int) -> None:
        log = tempfile.TemporaryFile()
        process = subprocess.Popen(
            args,
            cwd=self.workdir,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.background.append((block.where, process, log))
        try:
            wait_for_port(port, process=process, timeout=30)
        except PeerError as exc:
            raise AssertionError(f"{block.where}: {exc}{self._peer_output()}") from None

    def _peer_output(self) -> str:
        parts = []
        for where, _process, log in self.background:
            log.seek(0)
            parts.append(f"\n--- background from {where}:\n{log.read().decode('utf-8', 'replace')}")
        return "".join(parts)

    def close(self) -> None:
        """Stop background peers (SIGTERM, newest first); each must exit with 0."""
        failures = []
        for where, process, _log in reversed(self.background):
            code = stop_process(process, grace=30)
            if code != 0:
                failures.append(f"{where}: background process exited with {code}")
        output = self._peer_output()
        for _where, _process, log in self.background:
            log.close()
        self.background.clear()
        assert not failures, "\n".join(failures) + output
