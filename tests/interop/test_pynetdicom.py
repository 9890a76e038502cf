"""pynetdicom as the requestor (its ``AE`` API and its apps) against our :class:`Server`.

pynetdicom is synchronous and runs its own threads, so each client session runs in a
worker thread (``anyio.to_thread``) while our server keeps the event loop. Threads are
fine here: the no-threads rule is for ``src/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_role
from pynetdicom.pdu_primitives import (
    AsynchronousOperationsWindowNegotiation,
    UserIdentityNegotiation,
)
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from aiodicom.dimse.server import Server
from aiodicom.synthetic import TRANSFER_SYNTAXES, make_dataset, write_study
from peers import dataset_bytes, run_pynetdicom

from .helpers import TEST_TIMEOUT, Collector, serving, sop_instance_uid

pytestmark = pytest.mark.anyio


def requestor(*, async_window: tuple[int, int] | None = None) -> tuple[AE, list[Any]]:
    ae = AE(ae_title="PYNETDICOM")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(Verification)
    # One context per transfer syntax (as pynetdicom's storescu app does), so a file is
    # sent in its own syntax and "arrived byte for byte" is a fair expectation.
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(CTImageStorage, ImplicitVRLittleEndian)
    ext_neg: list[Any] = []
    if async_window is not None:
        item = AsynchronousOperationsWindowNegotiation()
        item.maximum_number_operations_invoked, item.maximum_number_operations_performed = (
            async_window
        )
        ext_neg.append(item)
    return ae, ext_neg


def store_all(port: int, sources: list[Path | pydicom.Dataset], **kw: Any) -> list[int]:
    """One association; C-STORE every source; return the statuses (runs in a thread)."""
    ae, ext_neg = requestor(**kw)
    assoc = ae.associate("127.0.0.1", port, ae_title="AIODICOM", ext_neg=ext_neg)
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(source).Status) for source in sources]
    finally:
        assoc.release()


async def test_storescu_api_everything_arrives(tmp_path: Path) -> None:
    explicit = write_study(tmp_path / "e", images_per_series=3, rows=128, columns=128)
    implicit = write_study(
        tmp_path / "i", images_per_series=2, rows=64, columns=64,
        transfer_syntax=TRANSFER_SYNTAXES["implicit"],
    )  # fmt: skip
    in_memory = make_dataset(rows=32, columns=32)
    collector = Collector(tmp_path / "out")
    # Above 16 KiB a data set streams to the spool file as its PDVs arrive.
    server = Server("AIODICOM", "127.0.0.1", 0, on_store=collector, memory_threshold=16 * 1024)
    with anyio.fail_after(TEST_TIMEOUT):
        async with serving(server) as port:
            statuses = await anyio.to_thread.run_sync(
                store_all, port, [*explicit, *implicit, in_memory]
            )
    assert statuses == [0x0000] * 6
    assert len(collector.paths) == 6
    for source in explicit + implicit:
        uid = sop_instance_uid(source)
        stored = collector.paths[uid]
        # pynetdicom chose a context in the file's own transfer syntax, so nothing changed.
        assert dataset_bytes(stored) == dataset_bytes(source)
    stored_ds = pydicom.dcmread(collector.paths[in_memory.SOPInstanceUID])
    assert stored_ds.PatientID == in_memory.PatientID
    assert stored_ds.PixelData == in_memory.PixelData


async def test_echo_api_and_echoscu_app(tmp_path: Path) -> None:
    def echo(port: int) -> int:
        ae, _ = requestor()
        assoc = ae.associate("127.0.0.1", port, ae_title="AIODICOM")
        assert assoc.is_established
        try:
            return int(assoc.send_c_echo().Status)
        finally:
            assoc.release()

    echoes: list[str] = []

    async def on_echo(info: Any) -> None:
        echoes.append(info.calling_ae.strip())

    server = Server("AIODICOM", "127.0.0.1", 0, on_echo=on_echo)
    with anyio.fail_after(TEST_TIMEOUT):
        async with serving(server) as port:
            assert await anyio.to_thread.run_sync(echo, port) == 0x0000
            result = await anyio.to_thread.run_sync(
                lambda: run_pynetdicom(
                    "echoscu", ["127.0.0.1", str(port), "-aec", "AIODICOM", "-v"], timeout=20
                )
            )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Received Echo Response (Status: 0x0000 - Success)" in result.stdout + result.stderr
    assert echoes == ["PYNETDICOM", "ECHOSCU"]


async def test_storescu_app_recursive(tmp_path: Path) -> None:
    sources = write_study(tmp_path / "src" / "nested", images_per_series=3, rows=32, columns=32)
    collector = Collector(tmp_path / "out")
    server = Server("AIODICOM", "127.0.0.1", 0, on_store=collector)
    with anyio.fail_after(TEST_TIMEOUT):
        async with serving(server) as port:
            result = await anyio.to_thread.run_sync(
                lambda: run_pynetdicom(
                    "storescu",
                    ["127.0.0.1", str(port), str(tmp_path / "src"), "-r", "-aec", "AIODICOM"],
                    timeout=20,
                )
            )
    # pynetdicom's storescu exits 0 even when a store failed: check what arrived.
    assert set(collector.paths) == {sop_instance_uid(p) for p in sources}, result.stderr
    for source in sources:
        assert dataset_bytes(collector.paths[sop_instance_uid(source)]) == dataset_bytes(source)


@pytest.mark.parametrize(
    ("max_operations", "proposed", "answer"),
    [
        # The AC's first field is what the requestor may invoke (what we perform), the
        # second what we would invoke (we never invoke asynchronously): PS3.7 D.3.3.3.
        (1, (5, 5), (1, 1)),  # we perform one at a time unless configured otherwise
        (4, (8, 8), (4, 1)),  # never more than we are configured to perform
        (4, (2, 3), (2, 1)),  # never more than the requestor will invoke
        (4, (0, 0), (4, 1)),  # 0 means "unlimited" (PS3.7 D.3.3.3)
    ],
)
async def test_async_operations_window_answer(
    tmp_path: Path, max_operations: int, proposed: tuple[int, int], answer: tuple[int, int]
) -> None:
    def negotiate(port: int) -> tuple[tuple[int, int], bool, int]:
        ae, ext_neg = requestor(async_window=proposed)
        assoc = ae.associate("127.0.0.1", port, ae_title="AIODICOM", ext_neg=ext_neg)
        assert assoc.is_established
        try:
            present = any(
                isinstance(item, AsynchronousOperationsWindowNegotiation)
                for item in assoc.acceptor.user_information
            )
            status = int(assoc.send_c_store(make_dataset(rows=16, columns=16)).Status)
            return assoc.acceptor.asynchronous_operations, present, status
        finally:
            assoc.release()

    collector = Collector(tmp_path / "out")
    server = Server("AIODICOM", "127.0.0.1", 0, on_store=collector, max_operations=max_operations)
    with anyio.fail_after(TEST_TIMEOUT):
        async with serving(server) as port:
            window, present, status = await anyio.to_thread.run_sync(negotiate, port)
    assert present, "a proposed window must be answered"
    assert window == answer
    assert status == 0x0000
    assert len(collector.paths) == 1


async def test_no_window_item_when_none_proposed(tmp_path: Path) -> None:
    def negotiate(port: int) -> bool:
        ae, _ = requestor()
        assoc = ae.associate("127.0.0.1", port, ae_title="AIODICOM")
        try:
            return any(
                isinstance(item, AsynchronousOperationsWindowNegotiation)
                for item in assoc.acceptor.user_information
            )
        finally:
            assoc.release()

    server = Server("AIODICOM", "127.0.0.1", 0, max_operations=4)
    with anyio.fail_after(TEST_TIMEOUT):
        async with serving(server) as port:
            assert not await anyio.to_thread.run_sync(negotiate, port)


async def test_context_results_read_by_pynetdicom() -> None:
    """pynetdicom decodes each context's result as we meant it (PS3.8 9.3.3.2)."""
    jpeg_lossless = "1.2.840.10008.1.2.4.70"
    unknown_class = "1.2.826.0.1.3680043.10.1447.99.2"

    def negotiate(port: int) -> tuple[list[tuple[str, str]], list[tuple[str, int]]]:
        ae = AE(ae_title="PYNETDICOM")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        ae.add_requested_context(CTImageStorage, jpeg_lossless)
        ae.add_requested_context(unknown_class, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", port, ae_title="AIODICOM")
        assert assoc.is_established
        try:
            accepted = [(c.abstract_syntax, c.transfer_syntax[0]) for c in assoc.accepted_contexts]
            rejected = [(c.abstract_syntax, c.result) for c in assoc.rejected_contexts]
            return accepted, rejected
        finally:
            assoc.release()

    async def on_store(instance: Any) -> None:
        return None

    server = Server("AIODICOM", "127.0.0.1", 0, on_store=on_store)
    with anyio.fail_after(TEST_TIMEOUT):
        async with serving(server) as port:
            accepted, rejected = await anyio.to_thread.run_sync(negotiate, port)
    assert accepted == [(CTImageStorage, ExplicitVRLittleEndian)]
    assert sorted(rejected) == sorted(
        [(CTImageStorage, 0x04), (unknown_class, 0x03)]  # transfer syntax / abstract syntax
    )


@pytest.mark.parametrize(
    ("scp_role_accepted", "roles"),
    [(False, (True, False)), (True, (True, True))],
    ids=["scp-role-refused", "scp-role-accepted"],
)
async def test_role_selection_answer_read_by_pynetdicom(
    scp_role_accepted: bool, roles: tuple[bool, bool]
) -> None:
    """pynetdicom proposes both roles for CT; it reads back the roles we granted."""

    def negotiate(port: int) -> list[tuple[bool | None, bool | None]]:
        ae = AE(ae_title="PYNETDICOM")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        role = build_role(CTImageStorage, scu_role=True, scp_role=True)
        assoc = ae.associate("127.0.0.1", port, ae_title="AIODICOM", ext_neg=[role])
        assert assoc.is_established
        try:
            return [(c.as_scu, c.as_scp) for c in assoc.accepted_contexts]
        finally:
            assoc.release()

    async def on_store(instance: Any) -> None:
        return None

    server = Server("AIODICOM", "127.0.0.1", 0, on_store=on_store)
    if scp_role_accepted:
        server.policy.accept_scp_role_for = [CTImageStorage]
    with anyio.fail_after(TEST_TIMEOUT):
        async with serving(server) as port:
            assert await anyio.to_thread.run_sync(negotiate, port) == [roles]


async def test_user_identity_response_read_by_pynetdicom() -> None:
    def negotiate(port: int, password: bytes) -> tuple[bool, bytes | None]:
        ae, _ = requestor()
        identity = UserIdentityNegotiation()
        identity.user_identity_type = 2
        identity.primary_field, identity.secondary_field = b"alice", password
        identity.positive_response_requested = True
        assoc = ae.associate("127.0.0.1", port, ae_title="AIODICOM", ext_neg=[identity])
        if not assoc.is_established:
            return False, None
        try:
            answer = assoc.acceptor.user_identity
            return True, None if answer is None else answer.server_response
        finally:
            assoc.release()

    server = Server("AIODICOM", "127.0.0.1", 0)
    server.policy.identity_check = lambda rq: b"ticket" if rq.secondary == b"secret" else None
    with anyio.fail_after(TEST_TIMEOUT):
        async with serving(server) as port:
            assert await anyio.to_thread.run_sync(negotiate, port, b"secret") == (True, b"ticket")
            assert await anyio.to_thread.run_sync(negotiate, port, b"wrong") == (False, None)
