"""The library is silent until the application configures logging (issue 8, item 8).

Each case runs a small embedding application in its own interpreter: a real
Server and a real client storing an instance over 127.0.0.1, so every log call
on the receive and send paths (association, server, handler) is exercised.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

APP = r'''
import sys
import anyio
import aiodicom
from aiodicom.synthetic import make_dataset

async def on_store(instance):
    if instance.patient_id == "FAIL":
        raise RuntimeError("handler bug")   # logged with its traceback at ERROR
    instance.save_under(sys.argv[1])
    return None

async def main():
    server = aiodicom.Server("APP", "127.0.0.1", 0, on_store=on_store)
    async with anyio.create_task_group() as tg:
        port = await tg.start(server.serve)
        async with aiodicom.connect("127.0.0.1", port, called_ae="APP") as assoc:
            (await assoc.echo()).raise_for_status()
            (await assoc.store(make_dataset(rows=16, columns=16))).raise_for_status()
            assert await assoc.store(make_dataset(rows=16, columns=16, patient_id="FAIL")) == 0xA700
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:  # not DICOM: a warning
            await stream.send(b"GET / HTTP/1.0\r\n\r\n")
            try:
                await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass
        server.shutdown(grace=1)

SETUP
aiodicom.run(main)
'''


def _run_app(tmp_path: Path, setup: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "app.py"
    script.write_text(APP.replace("SETUP", setup))
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    result = subprocess.run(
        [sys.executable, str(script), str(out)], capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 0, result.stderr
    assert len(list(out.rglob("*.dcm"))) == 1, "the application did not store its instance"
    return result


def test_an_application_that_does_not_configure_logging_sees_nothing(tmp_path: Path) -> None:
    result = _run_app(tmp_path, "")
    assert result.stdout == ""
    assert result.stderr == ""


def test_configure_logging_json_prints_one_object_per_line_under_aiodicom_names(tmp_path: Path) -> None:
    result = _run_app(tmp_path, 'aiodicom.configure_logging("INFO", fmt="json", stream=sys.stdout)')
    assert result.stderr == ""
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records, "configured logging printed nothing"
    assert all(r["logger"].startswith("aiodicom.") for r in records)
    assert all({"timestamp", "level", "event"} <= set(r) for r in records)
    events = {(r["logger"], r["event"]) for r in records}
    assert ("aiodicom.server", "listening") in events
    assert ("aiodicom.server", "association_released") in events
    assert ("aiodicom.association", "association_established") in events  # the client side
    released = next(r for r in records if r["event"] == "association_released")
    assert isinstance(released["assoc"], int)  # bound context travels as structured fields
    failed = next(r for r in records if r["event"] == "handler_failed")
    assert failed["level"] == "error" and "RuntimeError: handler bug" in failed["exception"]
    assert any(r["level"] == "warning" and r["logger"] == "aiodicom.server" for r in records)


def test_configure_logging_level_filters(tmp_path: Path) -> None:
    result = _run_app(tmp_path, 'aiodicom.configure_logging("ERROR", fmt="console", stream=sys.stdout)')
    assert result.stderr == ""
    records = [line for line in result.stdout.splitlines() if not line.startswith((" ", "Traceback", "RuntimeError"))]
    assert len(records) == 1, result.stdout
    assert " ERROR   aiodicom.server: handler_failed " in records[0]
    assert "RuntimeError: handler bug" in result.stdout


def test_an_application_logging_basicconfig_gets_aiodicom_records(tmp_path: Path) -> None:
    setup = 'import logging; logging.basicConfig(level=logging.INFO, format="%(name)s|%(message)s")'
    result = _run_app(tmp_path, setup)
    lines = result.stderr.splitlines()
    assert any(line.startswith("aiodicom.server|listening ") and "host='127.0.0.1'" in line for line in lines)
    assert any(line.startswith("aiodicom.server|association_released") for line in lines)
    assert result.stdout == ""
