"""DCMTK's ``echoscu`` and ``storescu`` talking to our :class:`Server`.

What arrives must be the sender's data set byte for byte (after the file meta, which
each side writes itself) when the transfer syntax is unchanged, the same decoded
elements when DCMTK converted it on the way, and a file ``dcmdump`` reads without a
warning.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pydicom
import pytest

from aiodicom.codec.uids import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
)
from aiodicom.dimse.server import Server
from aiodicom.dimse.store import AssociationInfo, ReceivedInstance
from aiodicom.synthetic import write_study
from peers import compress_jpeg_lossless, dataset_bytes, run_dcmtk

from .helpers import (
    TEST_TIMEOUT,
    Collector,
    assert_dcmdump_clean,
    assert_same_elements,
    serving,
    sop_instance_uid,
)

pytestmark = [pytest.mark.anyio, pytest.mark.dcmtk]

JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"


async def dcmtk(args: list[str], timeout: float = 20.0) -> tuple[int, str]:
    """Run a DCMTK client without blocking the event loop our server runs on."""
    result = await anyio.to_thread.run_sync(lambda: run_dcmtk(args, timeout=timeout))
    return result.returncode, result.stdout + result.stderr


def storescu_profile(directory: Path, *transfer_syntaxes: str) -> list[str]:
    """storescu options proposing CT Image Storage in ``transfer_syntaxes`` only, in that
    order, all in one presentation context.

    Its ``-x?`` options always add an uncompressed fallback context, and it sends a file
    in its own transfer syntax when that was accepted; a configuration profile is the
    only way to make it propose exactly one transfer syntax.
    """
    config = directory / "storescu.cfg"
    config.write_text(
        "[[TransferSyntaxes]]\n[Only]\n"
        + "".join(f"TransferSyntax{i} = {ts}\n" for i, ts in enumerate(transfer_syntaxes, 1))
        + "[[PresentationContexts]]\n[Only]\n"
        "PresentationContext1 = 1.2.840.10008.5.1.4.1.1.2\\Only\n"
        "[[Profiles]]\n[Only]\nPresentationContexts = Only\n"
    )
    return ["-xf", str(config), "Only"]


async def storescu_to_accept_any(folder: Path, options: list[str], out: Path) -> Collector:
    """``storescu +sd OPTIONS folder`` into a server accepting any transfer syntax; it must succeed."""
    collector = Collector(out)
    server = Server("AIODICOM", "127.0.0.1", 0, on_store=collector, accept_any_transfer_syntax=True)
    with anyio.fail_after(TEST_TIMEOUT):
        async with serving(server) as port:
            code, output = await dcmtk(
                ["storescu", "+sd", *options, "-aec", "AIODICOM", "127.0.0.1", str(port),
                 str(folder)]
            )  # fmt: skip
    assert code == 0, output
    return collector


async def test_echoscu(tmp_path: Path) -> None:
    server = Server("AIODICOM", "127.0.0.1", 0)
    with anyio.fail_after(TEST_TIMEOUT):
        async with serving(server) as port:
            code, output = await dcmtk(["echoscu", "-aec", "AIODICOM", "127.0.0.1", str(port)])
            assert code == 0, output
            # 128 presentation contexts, all for Verification: the maximum a peer may propose.
            code, output = await dcmtk(
                ["echoscu", "-v", "-ppc", "128", "-aec", "AIODICOM", "127.0.0.1", str(port)]
            )
            assert code == 0, output
            assert "Received Echo Response (Success)" in output


@pytest.mark.parametrize(
    ("option", "source_ts", "expected_ts"),
    [
        ("-xi", IMPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN),
        ("-xe", EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN),
        # DCMTK converts only when the peer accepted nothing in the file's own syntax.
        ("-xi", EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN),
        ("-xb", EXPLICIT_VR_BIG_ENDIAN, EXPLICIT_VR_BIG_ENDIAN),
    ],
)
async def test_storescu_transfer_syntaxes(
    tmp_path: Path, option: str, source_ts: str, expected_ts: str
) -> None:
    sources = write_study(
        tmp_path / "src" / "a" / "b", images_per_series=3, rows=32, columns=32,
        transfer_syntax=source_ts,
    )  # fmt: skip
    collector = Collector(tmp_path / "out")
    server = Server("AIODICOM", "127.0.0.1", 0, on_store=collector)
    with anyio.fail_after(TEST_TIMEOUT):
        async with serving(server) as port:
            code, output = await dcmtk(
                ["storescu", "+sd", "+r", option, "-aec", "AIODICOM", "127.0.0.1", str(port),
                 str(tmp_path / "src")]
            )  # fmt: skip
    assert code == 0, output
    assert len(collector.paths) == len(sources)
    for source in sources:
        stored = collector.paths[sop_instance_uid(source)]
        assert collector.transfer_syntaxes[sop_instance_uid(source)] == expected_ts
        assert pydicom.dcmread(stored).file_meta.TransferSyntaxUID == expected_ts
        if source_ts == expected_ts:
            assert dataset_bytes(stored) == dataset_bytes(source)
        else:
            assert_same_elements(source, stored)
        assert_dcmdump_clean(stored)


async def test_storescu_converts_to_big_endian(tmp_path: Path) -> None:
    """DCMTK re-encodes an explicit little endian file when only big endian was proposed."""
    sources = write_study(tmp_path / "src", images_per_series=2, rows=32, columns=32)
    collector = Collector(tmp_path / "out")
    server = Server("AIODICOM", "127.0.0.1", 0, on_store=collector)
    with anyio.fail_after(TEST_TIMEOUT):
        async with serving(server) as port:
            code, output = await dcmtk(
                ["storescu", "+sd", *storescu_profile(tmp_path, EXPLICIT_VR_BIG_ENDIAN),
                 "-aec", "AIODICOM", "127.0.0.1", str(port), str(tmp_path / "src")]
            )  # fmt: skip
    assert code == 0, output
    assert len(collector.paths) == len(sources)
    for source in sources:
        stored = collector.paths[sop_instance_uid(source)]
        assert pydicom.dcmread(stored).file_meta.TransferSyntaxUID == EXPLICIT_VR_BIG_ENDIAN
        assert dataset_bytes(stored) != dataset_bytes(source)
        assert_same_elements(source, stored)
        assert_dcmdump_clean(stored)


@pytest.mark.parametrize(
    "options",
    [
        ["-pdu", "4096", "--max-send-pdu", "4096"],
        ["-pdu", "131072"],
        ["--repeat", "3"],
    ],
    ids=["pdu-4096", "pdu-131072", "repeat-3"],
)
async def test_storescu_pdu_sizes_and_repeat(tmp_path: Path, options: list[str]) -> None:
    # 128x128x16 bit = 32 KiB of pixels: several PDUs at 4096, one at 131072.
    sources = write_study(tmp_path / "src", images_per_series=2, rows=128, columns=128)
    stored: list[bytes] = []

    async def on_store(instance: ReceivedInstance) -> None:
        stored.append(instance.dataset_bytes())
        instance.save(tmp_path / "out" / f"{len(stored)}.dcm")

    # A low memory threshold makes larger data sets stream to the spool file as they arrive.
    server = Server("AIODICOM", "127.0.0.1", 0, on_store=on_store, memory_threshold=16 * 1024)
    with anyio.fail_after(TEST_TIMEOUT):
        async with serving(server) as port:
            code, output = await dcmtk(
                ["storescu", "+sd", *options, "-aec", "AIODICOM", "127.0.0.1", str(port),
                 str(tmp_path / "src")]
            )  # fmt: skip
    assert code == 0, output
    repeats = 3 if "--repeat" in options else 1
    expected = sorted(dataset_bytes(p) for p in sources) * repeats
    assert sorted(stored) == sorted(expected)
    for path in (tmp_path / "out").iterdir():
        assert_dcmdump_clean(path)


async def test_storescu_compressed_with_accept_any(tmp_path: Path) -> None:
    plain = write_study(tmp_path / "plain", images_per_series=2, rows=64, columns=64)
    (tmp_path / "jpeg").mkdir()
    sources = [compress_jpeg_lossless(p, tmp_path / "jpeg" / p.name) for p in plain]
    assert pydicom.dcmread(sources[0]).file_meta.TransferSyntaxUID == JPEG_LOSSLESS_SV1
    collector = Collector(tmp_path / "out")
    server = Server("AIODICOM", "127.0.0.1", 0, on_store=collector, accept_any_transfer_syntax=True)
    with anyio.fail_after(TEST_TIMEOUT):
        async with serving(server) as port:
            code, output = await dcmtk(
                ["storescu", "+sd", "-xs", "-aec", "AIODICOM", "127.0.0.1", str(port),
                 str(tmp_path / "jpeg")]
            )  # fmt: skip
    assert code == 0, output
    assert len(collector.paths) == len(sources)
    for source in sources:
        stored = collector.paths[sop_instance_uid(source)]
        assert pydicom.dcmread(stored).file_meta.TransferSyntaxUID == JPEG_LOSSLESS_SV1
        assert dataset_bytes(stored) == dataset_bytes(source)
        assert_dcmdump_clean(stored)


async def test_storescu_compressed_refused_without_accept_any(tmp_path: Path) -> None:
    plain = write_study(tmp_path / "plain", images_per_series=1, rows=32, columns=32)
    source = compress_jpeg_lossless(plain[0], tmp_path / "image.dcm")
    collector = Collector(tmp_path / "out")
    server = Server("AIODICOM", "127.0.0.1", 0, on_store=collector)
    with anyio.fail_after(TEST_TIMEOUT):
        async with serving(server) as port:
            code, output = await dcmtk(
                ["storescu", "-d", *storescu_profile(tmp_path, JPEG_LOSSLESS_SV1),
                 "-aec", "AIODICOM", "127.0.0.1", str(port), str(source)]
            )  # fmt: skip
    assert code != 0, output
    assert collector.paths == {}
    # DCMTK prints the A-ASSOCIATE-AC: the JPEG context came back with result 4.
    assert "Context ID:        1 (Transfer Syntaxes Not Supported)" in output, output
    assert "No Acceptable Presentation Contexts" in output, output


async def test_storescu_deflated_stored_as_received(tmp_path: Path) -> None:
    """Deflated data is stored untouched with accept-any, and refused without it."""
    sources = write_study(tmp_path / "src", images_per_series=2, rows=32, columns=32)
    profile = storescu_profile(tmp_path, DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN)
    collector = Collector(tmp_path / "out")
    strict = Server("AIODICOM", "127.0.0.1", 0, on_store=collector)
    with anyio.fail_after(TEST_TIMEOUT):
        async with serving(strict) as port:
            code, output = await dcmtk(
                ["storescu", *profile, "-aec", "AIODICOM", "127.0.0.1", str(port), str(sources[0])]
            )
    assert code != 0 and "No Acceptable Presentation Contexts" in output, output
    assert collector.paths == {}

    collector = await storescu_to_accept_any(tmp_path / "src", profile, tmp_path / "out")
    assert len(collector.paths) == len(sources)
    for source in sources:
        stored = collector.paths[sop_instance_uid(source)]
        meta = pydicom.dcmread(stored, stop_before_pixels=True).file_meta
        assert meta.TransferSyntaxUID == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
        assert_same_elements(source, stored)
        assert_dcmdump_clean(stored)


async def test_accept_any_prefers_explicit_little_endian_from_storescu(tmp_path: Path) -> None:
    """storescu lists retired big endian first, then implicit: we still take explicit LE."""
    sources = write_study(tmp_path / "src", images_per_series=2, rows=32, columns=32)
    profile = storescu_profile(
        tmp_path, EXPLICIT_VR_BIG_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN
    )
    collector = await storescu_to_accept_any(tmp_path / "src", profile, tmp_path / "out")
    assert len(collector.paths) == len(sources)
    for source in sources:
        stored = collector.paths[sop_instance_uid(source)]
        meta = pydicom.dcmread(stored, stop_before_pixels=True).file_meta
        assert meta.TransferSyntaxUID == EXPLICIT_VR_LITTLE_ENDIAN
        assert dataset_bytes(stored) == dataset_bytes(source)


@pytest.mark.parametrize(
    ("server_options", "echoscu_options", "expected"),
    [
        ({"require_called_ae": True}, ["-aec", "SOMEONE"], "Called AE Title Not Recognized"),
        (
            {"calling_ae_allowlist": ["FRIEND"]},
            ["-aec", "AIODICOM", "-aet", "STRANGER"],
            "Calling AE Title Not Recognized",
        ),
    ],
    ids=["called-ae", "calling-ae"],
)
async def test_echoscu_rejections_decoded_by_dcmtk(
    server_options: dict[str, object], echoscu_options: list[str], expected: str
) -> None:
    """DCMTK reads our A-ASSOCIATE-RJ as the reason we meant."""
    server = Server("AIODICOM", "127.0.0.1", 0, **server_options)  # type: ignore[arg-type]
    with anyio.fail_after(TEST_TIMEOUT):
        async with serving(server) as port:
            code, output = await dcmtk(["echoscu", *echoscu_options, "127.0.0.1", str(port)])
            assert code != 0, output
            assert "Association Rejected" in output and expected in output, output
            assert "Rejected Permanent" in output, output


async def test_too_many_associations_rejected_transiently() -> None:
    from aiodicom.dimse.client import connect

    server = Server("AIODICOM", "127.0.0.1", 0, max_associations=1)
    with anyio.fail_after(TEST_TIMEOUT):
        async with serving(server) as port:
            async with connect("127.0.0.1", port, called_ae="AIODICOM") as held:
                code, output = await dcmtk(["echoscu", "-aec", "AIODICOM", "127.0.0.1", str(port)])
                assert code != 0, output
                assert "Rejected Transient" in output and "Local Limit Exceeded" in output, output
                assert (await held.echo()).is_success
            # Once the first one is released the next gets in (bounded by fail_after).
            while True:
                code, output = await dcmtk(["echoscu", "-aec", "AIODICOM", "127.0.0.1", str(port)])
                if code == 0:
                    break
                await anyio.sleep(0.05)


async def test_concurrent_storescu_processes(tmp_path: Path) -> None:
    studies = [
        write_study(tmp_path / f"src{i}", images_per_series=3, rows=64, columns=64)
        for i in range(4)
    ]
    collector = Collector(tmp_path / "out")
    server = Server("AIODICOM", "127.0.0.1", 0, on_store=collector)
    results: list[tuple[int, str]] = []

    async def send(folder: Path, port: int) -> None:
        results.append(
            await dcmtk(
                ["storescu", "+sd", "-aec", "AIODICOM", "127.0.0.1", str(port), str(folder)]
            )
        )

    with anyio.fail_after(TEST_TIMEOUT):
        async with serving(server) as port:
            async with anyio.create_task_group() as task_group:
                for i in range(4):
                    task_group.start_soon(send, tmp_path / f"src{i}", port)
    assert [code for code, _ in results] == [0] * 4, results
    sources = [path for study in studies for path in study]
    assert set(collector.paths) == {sop_instance_uid(p) for p in sources}
    for source in sources:
        assert dataset_bytes(collector.paths[sop_instance_uid(source)]) == dataset_bytes(source)


async def test_storescu_large_instance_streamed_to_disk(tmp_path: Path) -> None:
    """2 MiB of pixels in 16 KiB PDUs, spooled to disk as they arrive (threshold 64 KiB)."""
    sources = write_study(tmp_path / "src", images_per_series=1, rows=1024, columns=1024)
    spooled: list[bool] = []
    collector = Collector(tmp_path / "out")

    async def on_store(instance: ReceivedInstance) -> None:
        spooled.append(instance.spooled_path is not None)
        await collector(instance)

    server = Server(
        "AIODICOM", "127.0.0.1", 0, on_store=on_store, memory_threshold=64 * 1024,
        spool_dir=tmp_path / "spool",
    )  # fmt: skip
    with anyio.fail_after(TEST_TIMEOUT):
        async with serving(server) as port:
            code, output = await dcmtk(
                ["storescu", "--max-send-pdu", "16384", "-aec", "AIODICOM", "127.0.0.1",
                 str(port), str(sources[0])]
            )  # fmt: skip
    assert code == 0, output
    assert spooled == [True]
    stored = collector.paths[sop_instance_uid(sources[0])]
    assert dataset_bytes(stored) == dataset_bytes(sources[0])
    assert_dcmdump_clean(stored)
    assert not (tmp_path / "spool").exists()  # nothing left behind, not even the folder


async def test_storescu_several_sop_classes(tmp_path: Path) -> None:
    ct = write_study(tmp_path / "src" / "ct", images_per_series=2, rows=32, columns=32)
    mr = write_study(
        tmp_path / "src" / "mr", images_per_series=2, rows=32, columns=32, modality="MR"
    )
    collector = Collector(tmp_path / "out")
    server = Server("AIODICOM", "127.0.0.1", 0, on_store=collector)
    with anyio.fail_after(TEST_TIMEOUT):
        async with serving(server) as port:
            code, output = await dcmtk(
                ["storescu", "+sd", "+r", "-aec", "AIODICOM", "127.0.0.1", str(port),
                 str(tmp_path / "src")]
            )  # fmt: skip
    assert code == 0, output
    assert set(collector.paths) == {sop_instance_uid(p) for p in ct + mr}
    for source in ct + mr:
        assert dataset_bytes(collector.paths[sop_instance_uid(source)]) == dataset_bytes(source)


@pytest.mark.parametrize(
    ("identity", "accepted"),
    [
        (["-usr", "alice", "-pwd", "secret", "-rsp"], True),
        (["-usr", "alice", "-pwd", "wrong", "-rsp"], False),
        (["-usr", "mallory"], False),
    ],
    ids=["right-password", "wrong-password", "unknown-user"],
)
async def test_storescu_user_identity(tmp_path: Path, identity: list[str], accepted: bool) -> None:
    """User identity negotiation (PS3.7 D.3.3.7) with DCMTK, through ``AcceptorPolicy``."""
    from aiodicom.ul import pdu as P

    sources = write_study(tmp_path / "src", images_per_series=1, rows=16, columns=16)
    collector = Collector(tmp_path / "out")
    server = Server("AIODICOM", "127.0.0.1", 0, on_store=collector)
    seen: list[tuple[int, bytes, bytes]] = []

    def check(rq: P.UserIdentityRQ) -> bytes | None:
        seen.append((rq.identity_type, rq.primary, rq.secondary))
        ok = (rq.identity_type, rq.primary, rq.secondary) == (2, b"alice", b"secret")
        return b"" if ok else None  # username/passcode answers carry no server response

    server.policy.identity_check = check
    with anyio.fail_after(TEST_TIMEOUT):
        async with serving(server) as port:
            code, output = await dcmtk(
                ["storescu", *identity, "-aec", "AIODICOM", "127.0.0.1", str(port),
                 str(sources[0])]
            )  # fmt: skip
    assert len(seen) == 1
    if accepted:
        assert code == 0, output
        assert set(collector.paths) == {sop_instance_uid(sources[0])}
    else:
        assert code != 0, output
        assert "Association Rejected" in output, output
        assert collector.paths == {}


async def test_storescu_user_identity_ignored_without_a_check(tmp_path: Path) -> None:
    """A server that does not authenticate ignores the item (no -rsp: nothing expected)."""
    sources = write_study(tmp_path / "src", images_per_series=1, rows=16, columns=16)
    collector = Collector(tmp_path / "out")
    server = Server("AIODICOM", "127.0.0.1", 0, on_store=collector)
    with anyio.fail_after(TEST_TIMEOUT):
        async with serving(server) as port:
            code, output = await dcmtk(
                ["storescu", "-usr", "alice", "-aec", "AIODICOM", "127.0.0.1", str(port),
                 str(sources[0])]
            )  # fmt: skip
    assert code == 0, output
    assert set(collector.paths) == {sop_instance_uid(sources[0])}


@pytest.mark.parametrize("end", ["release", "abort"])
async def test_association_end_hooks(tmp_path: Path, end: str) -> None:
    """A released association calls ``on_released``, an aborted one ``on_aborted``;
    instances acknowledged before an abort stay stored, and the server keeps serving."""
    sources = write_study(tmp_path / "src", images_per_series=2, rows=16, columns=16)
    collector = Collector(tmp_path / "out")
    ended: list[tuple[str, str]] = []

    async def on_released(info: AssociationInfo) -> None:
        ended.append(("released", info.calling_ae.strip()))

    async def on_aborted(info: AssociationInfo) -> None:
        ended.append(("aborted", info.calling_ae.strip()))

    server = Server(
        "AIODICOM", "127.0.0.1", 0, on_store=collector,
        on_released=on_released, on_aborted=on_aborted,
    )  # fmt: skip
    extra = ["--abort"] if end == "abort" else []
    with anyio.fail_after(TEST_TIMEOUT):
        async with serving(server) as port:
            code, output = await dcmtk(
                ["storescu", "+sd", *extra, "-aec", "AIODICOM", "-aet", "ENDER", "127.0.0.1",
                 str(port), str(tmp_path / "src")]
            )  # fmt: skip
            assert code == 0, output
            while not ended:  # the hook runs once the connection is closed
                await anyio.sleep(0.01)
            code, output = await dcmtk(["echoscu", "-aec", "AIODICOM", "127.0.0.1", str(port)])
            assert code == 0, output
    expected = "released" if end == "release" else "aborted"
    assert ended[0] == (expected, "ENDER")
    assert set(collector.paths) == {sop_instance_uid(p) for p in sources}
