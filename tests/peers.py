"""Real DICOM peers for the tests: DCMTK and pynetdicom, run as separate processes.

Network tests prove interoperability against independent implementations, so they start
real programs on 127.0.0.1. Every helper here owns exactly the process it started: it
picks the port, waits until that port accepts connections (bounded), and on the way out
sends SIGTERM to that PID, then SIGKILL after a grace period, and reaps it. Nothing here
kills by name, so parallel test runs and the developer's own peers are never touched.

Peers write their output to an anonymous temporary file rather than a pipe (a chatty peer
blocks on a full pipe that nobody reads); ``Peer.output()`` reads it back for assertions
and failure messages.

pynetdicom is a test peer only: ``./dev`` installs it into ``<venv>/peers``, outside the
environment, so its console scripts (``storescu``, ``echoscu``, ...) never shadow DCMTK's
in the environment's bin/. :func:`peers_dir` names that folder; ``tests/conftest.py`` puts
it on ``sys.path`` and :func:`peer_env` on the ``PYTHONPATH`` of peer processes.

DCMTK tools are still run by absolute path (:func:`dcmtk`), skipping any same-named
pynetdicom script a developer's own PATH may hold. Pass bare names to :func:`run_dcmtk`;
it resolves them.

Import as ``from peers import ...`` (pytest puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

LOCALHOST = "127.0.0.1"

#: The DCMTK programs the test suite drives; a machine without them skips ``dcmtk`` tests
#: (and fails them when :data:`REQUIRE_DCMTK_ENV` is ``1``, as under ``./dev``).
DCMTK_TOOLS = (
    "dcmconv",
    "storescp",
    "storescu",
    "echoscu",
    "findscu",
    "movescu",
    "getscu",
    "dcmdump",
    "dcmcjpeg",
    "dcmdjpeg",
    "dcmcrle",
    "dcmdrle",
    "dcmqrscp",
    "dcmqridx",
)

READY_TIMEOUT = 10.0
STOP_GRACE = 5.0


class PeerError(RuntimeError):
    """A peer did not start or a tool failed (or is missing); the message holds its output."""


def _is_dcmtk_binary(path: str) -> bool:
    # pynetdicom installed the usual way puts Python console scripts named storescp,
    # storescu, echoscu, findscu, movescu and getscu into its environment's bin/: on PATH,
    # a bare "storescu" would silently run pynetdicom instead of DCMTK.
    try:
        with open(path, "rb") as fp:
            head = fp.read(4096)
    except OSError:
        return False
    return not (head.startswith(b"#!") and b"pynetdicom" in head)


@functools.cache
def dcmtk(tool: str) -> str | None:
    """Absolute path of DCMTK's ``tool``, skipping same-named pynetdicom scripts on PATH.

    ``AIODICOM_DCMTK_BIN`` names a folder to take the tools from instead of PATH.
    """
    search = os.environ.get("AIODICOM_DCMTK_BIN") or os.environ.get("PATH", os.defpath)
    for folder in search.split(os.pathsep):
        found = shutil.which(tool, path=folder)
        if found is not None and _is_dcmtk_binary(found):
            return os.path.abspath(found)
    return None


def missing_dcmtk_tools(tools: Sequence[str] = DCMTK_TOOLS) -> list[str]:
    """The DCMTK programs not found (empty when DCMTK is fully installed)."""
    return [tool for tool in tools if dcmtk(tool) is None]


#: The project's "DCMTK required" switch: set to ``1`` by ``./dev`` and CI. It also covers
#: dicom3tools (dciodvfy), which ``./dev`` installs alongside.
REQUIRE_DCMTK_ENV = "AIODICOM_REQUIRE_DCMTK"


def dcmtk_required() -> bool:
    """True when a missing DCMTK (or dicom3tools) tool must fail a test rather than skip it."""
    return os.environ.get(REQUIRE_DCMTK_ENV) == "1"


def _require(why: str | None) -> None:
    """Skip the running test for ``why`` (a missing tool), or fail it under the switch."""
    if why is None:
        return
    if dcmtk_required():
        pytest.fail(f"{REQUIRE_DCMTK_ENV}=1 requires it, but {why}", pytrace=False)
    pytest.skip(why)


def require_dcmtk(*tools: str) -> None:
    """Skip the running test when DCMTK ``tools`` (default: all) are missing, or fail it
    when the "DCMTK required" switch is on.

    The one place deciding what a missing DCMTK means: the ``dcmtk`` marker
    (``@pytest.mark.dcmtk`` or ``@pytest.mark.dcmtk("dcmcjpeg")``, see conftest.py) and
    fixtures call it, so no DCMTK-dependent test can skip silently where DCMTK is required.
    """
    missing = missing_dcmtk_tools(tools or DCMTK_TOOLS)
    _require(
        f"DCMTK is not installed (missing {', '.join(missing)}); apt-get install dcmtk, or run ./dev test"
        if missing
        else None
    )


def require_dicom3tools() -> None:
    """:func:`require_dcmtk` for dicom3tools' ``dciodvfy`` (the ``dicom3tools`` marker)."""
    _require(
        "dciodvfy is not installed; apt-get install dicom3tools, or run ./dev test"
        if shutil.which("dciodvfy") is None
        else None
    )


def _resolve_dcmtk(args: Sequence[str]) -> list[str]:
    """``args`` with a bare DCMTK tool name replaced by the real DCMTK binary's path."""
    command = list(args)
    if command and os.sep not in command[0]:
        path = dcmtk(command[0])
        if path is None:
            raise PeerError(f"DCMTK's {command[0]} is not installed (apt-get install dcmtk)")
        command[0] = path
    return command


#: Listening ports for peers come from below Linux's ephemeral range (32768-60999): a
#: port the kernel hands out for bind(0) can be taken a moment later as the source port of
#: some test's outgoing connection, and the peer then fails with "Address already in use".
_PORT_RANGE = (20000, 32000)
_handed_out: set[int] = set()


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port on ``host`` that was free a moment ago and that this run has not handed out.

    Drawn at random outside the ephemeral range (see ``_PORT_RANGE``), so outgoing
    connections never take it in the window before the peer binds it.
    """
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(*_PORT_RANGE)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise PeerError(f"no free port in {_PORT_RANGE} on {host}")


def peers_dir() -> Path:
    """Where the Python test peers (pynetdicom) are installed, apart from the environment.

    ``AIODICOM_PEERS_DIR`` overrides the default ``<environment>/peers`` that ``./dev`` fills.
    """
    return Path(os.environ.get("AIODICOM_PEERS_DIR") or Path(sys.prefix) / "peers")


def peer_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a peer process: ours plus ``TCP_NODELAY=1`` and the peers folder.

    Debian's DCMTK leaves Nagle's algorithm on unless this variable is set, which makes
    every DIMSE message wait ~45 ms on loopback and turns tests into timing lotteries.
    The peers folder goes on ``PYTHONPATH`` so ``python -m pynetdicom`` finds its package.
    """
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    if peers_dir().is_dir():
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, (str(peers_dir()), env.get("PYTHONPATH")))
        )
    if extra:
        env.update(extra)
    return env


def wait_for_port(
    port: int,
    *,
    host: str = LOCALHOST,
    timeout: float = READY_TIMEOUT,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    """Return once ``host:port`` accepts a TCP connection; raise :class:`PeerError` otherwise.

    When ``process`` is given and exits first, fail at once instead of waiting out the
    timeout: a peer that could not bind (bad option, port taken) never becomes ready.
    """
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise PeerError(f"peer exited with {process.returncode} before port {port} opened")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() >= deadline:
                raise PeerError(
                    f"nothing accepted connections on {host}:{port} within {timeout} s"
                ) from None
            time.sleep(0.02)


def stop_process(process: subprocess.Popen[bytes], grace: float = STOP_GRACE) -> int:
    """SIGTERM ``process``, SIGKILL it after ``grace`` seconds, reap it; return its code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


@dataclass
class Peer:
    """A running peer process listening on ``host:port``."""

    process: subprocess.Popen[bytes]
    port: int
    host: str
    args: tuple[str, ...]
    _log: IO[bytes]
    _final_output: str | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        """The exit status once stopped (negative: killed by that signal)."""
        return self.process.poll()

    def output(self) -> str:
        """Everything the peer printed so far (stdout and stderr interleaved).

        Still available after the peer was stopped, for assertion messages.
        """
        if self._final_output is not None:
            return self._final_output
        fd = self._log.fileno()
        size = os.fstat(fd).st_size
        # pread leaves the shared file offset alone, so the peer keeps appending correctly.
        return os.pread(fd, size, 0).decode("utf-8", "replace")


@contextmanager
def run_peer(
    args: Sequence[str],
    port: int,
    *,
    host: str = LOCALHOST,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    ready_timeout: float = READY_TIMEOUT,
    grace: float = STOP_GRACE,
) -> Iterator[Peer]:
    """Start ``args`` (which must listen on ``port``), wait until it is ready, stop it after.

    Generic on purpose: the DCMTK and pynetdicom helpers below, and tests that run
    ``aiodicom receive`` as a process, all go through here.
    """
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(
        list(args),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=peer_env(env),
        cwd=cwd,
    )
    peer = Peer(process=process, port=port, host=host, args=tuple(args), _log=log)
    try:
        try:
            wait_for_port(port, host=host, timeout=ready_timeout, process=process)
        except PeerError as exc:
            stop_process(process, grace)
            raise PeerError(f"{exc}\ncommand: {' '.join(args)}\noutput:\n{peer.output()}") from None
        yield peer
    finally:
        stop_process(process, grace)
        peer._final_output = peer.output()
        log.close()


# --- DCMTK --------------------------------------------------------------------


@contextmanager
def storescp(
    port: int | None = None,
    *,
    output_dir: str | Path | None = None,
    aet: str = "STORESCP",
    args: Sequence[str] = (),
) -> Iterator[Peer]:
    """DCMTK ``storescp``: stores into ``output_dir``, or discards (``--ignore``) without one.

    ``args`` go before the port (DCMTK wants options first), e.g. ``("+B", "-pdu",
    "131072")`` or fault injection such as ``("--abort-after",)``.
    """
    port = port or free_port()
    where = ["-od", str(output_dir)] if output_dir is not None else ["--ignore"]
    command = _resolve_dcmtk(["storescp", "-aet", aet, *where, *args, str(port)])
    with run_peer(command, port) as peer:
        yield peer


@contextmanager
def dcmqrscp(
    db_dir: str | Path,
    *,
    aet: str = "QRSCP",
    port: int | None = None,
    files: Sequence[str | Path] = (),
    destinations: Mapping[str, tuple[str, int]] | None = None,
    max_pdu: int = 16384,
) -> Iterator[Peer]:
    """DCMTK ``dcmqrscp`` serving the instances in ``files`` (indexed into ``db_dir``).

    ``destinations`` maps AE title to (host, port) for C-MOVE; DCMTK wants host names
    there, so ``127.0.0.1`` is written as ``localhost``.
    """
    port = port or free_port()
    db = Path(db_dir)
    storage = db / aet
    storage.mkdir(parents=True, exist_ok=True)
    hosts = []
    for i, (dest_aet, (host, dest_port)) in enumerate((destinations or {}).items()):
        host = "localhost" if host == LOCALHOST else host
        hosts.append(f"dest{i} = ({dest_aet}, {host}, {dest_port})")
    config = db / "dcmqrscp.cfg"
    config.write_text(
        f"NetworkTCPPort = {port}\n"
        f"MaxPDUSize = {max_pdu}\n"
        "MaxAssociations = 16\n"
        "HostTable BEGIN\n" + "".join(line + "\n" for line in hosts) + "HostTable END\n"
        "AETable BEGIN\n"
        f"{aet} {storage} RW (200, 1024mb) ANY\n"
        "AETable END\n"
    )
    if files:
        # dcmqridx rereads its index for every file: thousands take minutes, not seconds.
        run_dcmtk(["dcmqridx", str(storage), *map(str, files)], check=True, timeout=60 + 0.1 * len(files))
    with run_peer(_resolve_dcmtk(["dcmqrscp", "-c", str(config)]), port) as peer:
        yield peer


def run_dcmtk(
    args: Sequence[str], *, timeout: float = 60.0, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run a DCMTK client tool (``echoscu``, ``storescu``, ``findscu``, ...) to completion.

    A bare tool name is resolved to DCMTK's binary (never pynetdicom's same-named
    script). Output is captured as text for assertions; ``check=True`` raises with that
    output included when the tool fails, so a test failure explains itself.
    """
    result = subprocess.run(
        _resolve_dcmtk(args),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=peer_env(),
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise PeerError(
            f"{' '.join(args)} exited with {result.returncode}\n{result.stdout}{result.stderr}"
        )
    return result


async def run_dcmtk_async(
    args: Sequence[str], *, timeout: float = 60.0, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """:func:`run_dcmtk` for async tests: the event loop keeps serving while DCMTK runs.

    A test whose aiodicom server runs in the same event loop cannot block in
    ``subprocess.run``; this awaits the child instead (asyncio subprocess, no thread).
    On timeout the child is killed and reaped, then ``subprocess.TimeoutExpired`` is raised
    like ``subprocess.run`` does.
    """
    command = _resolve_dcmtk(args)
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=peer_env(),
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise subprocess.TimeoutExpired(command, timeout) from None
    result = subprocess.CompletedProcess(
        command,
        process.returncode if process.returncode is not None else -1,
        out.decode("utf-8", "replace"),
        err.decode("utf-8", "replace"),
    )
    if check and result.returncode != 0:
        raise PeerError(
            f"{' '.join(args)} exited with {result.returncode}\n{result.stdout}{result.stderr}"
        )
    return result


def compress_jpeg_lossless(src: str | Path, dst: str | Path) -> Path:
    """``dcmcjpeg`` (JPEG lossless, first-order prediction) ``src`` into ``dst``."""
    run_dcmtk(["dcmcjpeg", "+e1", str(src), str(dst)], check=True)
    return Path(dst)


def compress_rle(src: str | Path, dst: str | Path) -> Path:
    """``dcmcrle`` (RLE lossless) ``src`` into ``dst``."""
    run_dcmtk(["dcmcrle", str(src), str(dst)], check=True)
    return Path(dst)


# --- pynetdicom -----------------------------------------------------------------


def pynetdicom_command(app: str, *args: str) -> list[str]:
    """The command line of one of pynetdicom's apps, run by this interpreter."""
    return [sys.executable, "-m", "pynetdicom", app, *args]


@contextmanager
def pynetdicom_storescp(
    port: int | None = None,
    *,
    output_dir: str | Path | None = None,
    aet: str = "STORESCP",
    args: Sequence[str] = (),
) -> Iterator[Peer]:
    """pynetdicom's ``storescp`` app on 127.0.0.1 (stores into ``output_dir`` or ignores).

    It never sets TCP_NODELAY and answers the asynchronous operations window with 1/1, so
    it is a good check that we do not depend on DCMTK's habits.
    """
    port = port or free_port()
    where = ["-od", str(output_dir)] if output_dir is not None else ["--ignore"]
    command = pynetdicom_command(
        "storescp", str(port), "-aet", aet, "-ba", LOCALHOST, *where, *args
    )
    with run_peer(command, port) as peer:
        yield peer


def run_pynetdicom(
    app: str, args: Sequence[str], *, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run a pynetdicom client app to completion, output captured.

    Its ``storescu`` exits 0 even when stores failed: check what arrived, not the code.
    """
    return subprocess.run(
        pynetdicom_command(app, *args),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=peer_env(),
        timeout=timeout,
    )


# --- aiodicom as a process ------------------------------------------------------


def aiodicom_command(*args: str) -> list[str]:
    """``aiodicom ARGS...`` run by this interpreter (the installed package, not a shell)."""
    return [sys.executable, "-m", "aiodicom", *args]


@contextmanager
def aiodicom_receive(
    output_dir: str | Path,
    port: int | None = None,
    *,
    aet: str = "AIODICOM",
    args: Sequence[str] = (),
    grace: float = STOP_GRACE,
) -> Iterator[Peer]:
    """``aiodicom receive`` as a separate process, the way users and benchmarks run it.

    It stops on SIGTERM after finishing in-flight associations, so ``peer.returncode``
    is 0 after the block when the shutdown was clean.
    """
    port = port or free_port()
    command = aiodicom_command(
        "receive", "--port", str(port), "--aet", aet, "--output-dir", str(output_dir),
        "--host", LOCALHOST, *args,
    )  # fmt: skip
    with run_peer(command, port, grace=grace) as peer:
        yield peer


# --- Part 10 files ------------------------------------------------------------


def dataset_bytes(path: str | Path) -> bytes:
    """The data set of a Part 10 file: everything after the preamble and group 0002.

    Receivers may rewrite the file meta (their own implementation UID, group length), so
    "stored byte for byte" is checked on this part only. Written here rather than taken
    from ``aiodicom.codec.part10`` on purpose: the check must not share code with what it
    checks.
    """
    data = Path(path).read_bytes()
    if data[128:132] != b"DICM":
        raise ValueError(f"{path} is not a Part 10 file")
    offset = 132
    # File meta is always explicit VR little endian; walk it element by element.
    while offset + 8 <= len(data):
        group = int.from_bytes(data[offset : offset + 2], "little")
        if group != 0x0002:
            break
        vr = data[offset + 4 : offset + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR", b"OD", b"OL", b"OV"):
            length = int.from_bytes(data[offset + 8 : offset + 12], "little")
            offset += 12 + length
        else:
            length = int.from_bytes(data[offset + 6 : offset + 8], "little")
            offset += 8 + length
    return data[offset:]


def dcmdump(path: str | Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``dcmdump`` a file; its stderr carries DCMTK's warnings about malformed data."""
    return run_dcmtk(["dcmdump", *args, str(path)])


def dciodvfy(path: str | Path) -> list[str]:
    """dicom3tools' ``dciodvfy`` on a file: its "Error" and "Warning" lines (empty: valid).

    dciodvfy checks an instance against its IOD (types 1/2/1C/2C, defined terms,
    sequences). It is not DCMTK (Debian package dicom3tools); tests using it carry the
    ``dicom3tools`` marker so that a machine without it skips them, and CI fails them.
    """
    tool = shutil.which("dciodvfy")
    if tool is None:
        raise PeerError("dciodvfy is not installed (apt-get install dicom3tools; ./dev does)")
    result = subprocess.run(
        [tool, str(path)], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60
    )
    lines = (result.stdout + result.stderr).splitlines()
    return [line for line in lines if line.startswith(("Error", "Warning"))]
