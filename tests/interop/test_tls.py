"""TLS, against DCMTK in both directions: certificates made by the test with ``trustme``.

Covers what a deployment gets wrong: a client without a certificate where one is
required, a peer signed by another CA, and plaintext sent to a TLS port (which must fail
for that connection only while the server keeps serving everyone else).
"""

from __future__ import annotations

import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
import trustme

from aiodicom.dimse.client import connect, contexts_for_files
from aiodicom.dimse.server import Server
from aiodicom.errors import AiodicomError
from aiodicom.synthetic import write_study
from aiodicom.ul import pdu as P
from aiodicom.ul.negotiation import build_request
from peers import (
    aiodicom_command,
    aiodicom_receive,
    dataset_bytes,
    peer_env,
    run_dcmtk,
    storescp,
)

from .helpers import TEST_TIMEOUT, Collector, Traced, files_by_uid, serving, sop_instance_uid

pytestmark = pytest.mark.anyio


@dataclass
class Pki:
    """PEM files of one CA, a server certificate for 127.0.0.1 and a client certificate."""

    ca: trustme.CA
    ca_pem: Path
    server_key: Path
    server_cert: Path
    client_key: Path
    client_cert: Path


def make_pki(directory: Path, name: str) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    # RSA: every TLS profile of DCMTK accepts it.
    ca = trustme.CA(key_type=trustme.KeyType.RSA, organization_name=name)
    server = ca.issue_cert("127.0.0.1", "localhost", key_type=trustme.KeyType.RSA)
    client = ca.issue_cert("storescu.test", key_type=trustme.KeyType.RSA)
    pki = Pki(
        ca, directory / "ca.pem", directory / "server.key", directory / "server.pem",
        directory / "client.key", directory / "client.pem",
    )  # fmt: skip
    ca.cert_pem.write_to_path(pki.ca_pem)
    server.private_key_pem.write_to_path(pki.server_key)
    server.cert_chain_pems[0].write_to_path(pki.server_cert)
    client.private_key_pem.write_to_path(pki.client_key)
    client.cert_chain_pems[0].write_to_path(pki.client_cert)
    return pki


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki", "aiodicom test CA")


@pytest.fixture
def other_pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "other-pki", "some other CA")


def server_context(pki: Pki, verify: ssl.VerifyMode) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=pki.ca_pem)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.verify_mode = verify
    return context


def client_context(trust: Pki, identity: Pki | None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=trust.ca_pem)
    if identity is not None:
        context.load_cert_chain(identity.client_cert, identity.client_key)
    return context


async def dcmtk(args: list[str]) -> tuple[int, str]:
    result = await anyio.to_thread.run_sync(lambda: run_dcmtk(args, timeout=20))
    return result.returncode, result.stdout + result.stderr


async def echo(port: int, context: ssl.SSLContext | None) -> bool:
    async with connect("127.0.0.1", port, called_ae="AIODICOM", ssl=context) as assoc:
        return (await assoc.echo()).is_success


async def echo_fails(port: int, context: ssl.SSLContext | None) -> str:
    """The error an echo attempt ends with (it must end with one of ours)."""
    try:
        await echo(port, context)
    except AiodicomError as exc:  # one of ours, not a bare ssl/OSError or an exception group
        return str(exc)
    raise AssertionError("the association should have failed")


@pytest.mark.dcmtk
async def test_dcmtk_storescu_tls_to_our_server(tmp_path: Path, pki: Pki) -> None:
    sources = write_study(tmp_path / "src", images_per_series=2, rows=64, columns=64)
    collector = Collector(tmp_path / "out")
    server = Server(
        "AIODICOM", "127.0.0.1", 0, on_store=collector,
        ssl=server_context(pki, ssl.CERT_REQUIRED),
    )  # fmt: skip
    with anyio.fail_after(TEST_TIMEOUT):
        async with serving(server) as port:
            code, output = await dcmtk(
                ["storescu", "+tls", str(pki.client_key), str(pki.client_cert),
                 "+cf", str(pki.ca_pem), "+sd", "-aec", "AIODICOM", "127.0.0.1", str(port),
                 str(tmp_path / "src")]
            )  # fmt: skip
    assert code == 0, output
    assert set(collector.paths) == {sop_instance_uid(p) for p in sources}
    for source in sources:
        assert dataset_bytes(collector.paths[sop_instance_uid(source)]) == dataset_bytes(source)


@pytest.mark.dcmtk
async def test_dcmtk_without_certificate_refused_when_required(tmp_path: Path, pki: Pki) -> None:
    sources = write_study(tmp_path / "src", images_per_series=1, rows=16, columns=16)
    collector = Collector(tmp_path / "out")
    server = Server(
        "AIODICOM", "127.0.0.1", 0, on_store=collector,
        ssl=server_context(pki, ssl.CERT_REQUIRED),
    )  # fmt: skip
    with anyio.fail_after(TEST_TIMEOUT):
        async with serving(server) as port:
            # +tla: TLS without a certificate of its own.
            code, output = await dcmtk(
                ["storescu", "+tla", "+cf", str(pki.ca_pem), "-aec", "AIODICOM",
                 "127.0.0.1", str(port), str(sources[0])]
            )  # fmt: skip
            assert code != 0, output
            # The server is still there for a client that has a certificate.
            assert await echo(port, client_context(pki, pki))
    assert collector.paths == {}


@pytest.mark.dcmtk
async def test_our_client_tls_to_dcmtk_storescp(tmp_path: Path, pki: Pki) -> None:
    sources = write_study(tmp_path / "src", images_per_series=2, rows=64, columns=64)
    out = tmp_path / "out"
    out.mkdir()
    tls = ("+tls", str(pki.server_key), str(pki.server_cert), "+cf", str(pki.ca_pem), "+B")
    with storescp(output_dir=out, args=tls) as peer:
        with anyio.fail_after(TEST_TIMEOUT):
            (contexts,) = contexts_for_files(sources)
            async with connect(
                "127.0.0.1", peer.port, called_ae="STORESCP", contexts=contexts,
                ssl=client_context(pki, pki),
            ) as assoc:  # fmt: skip
                for source in sources:
                    assert (await assoc.store(source)).is_success
    received = files_by_uid(out)
    assert set(received) == {sop_instance_uid(p) for p in sources}, peer.output()
    for source in sources:
        assert dataset_bytes(received[sop_instance_uid(source)]) == dataset_bytes(source)


@pytest.mark.dcmtk
async def test_our_client_trusting_another_ca_refuses_dcmtk(
    tmp_path: Path, pki: Pki, other_pki: Pki
) -> None:
    tls = ("+tls", str(pki.server_key), str(pki.server_cert), "+cf", str(pki.ca_pem))
    with storescp(args=tls) as peer:
        with anyio.fail_after(TEST_TIMEOUT):
            error = await echo_fails(peer.port, client_context(other_pki, pki))
    assert "CERTIFICATE_VERIFY_FAILED" in error or "certificate verify failed" in error


async def test_client_certificate_optional(pki: Pki) -> None:
    server = Server("AIODICOM", "127.0.0.1", 0, ssl=server_context(pki, ssl.CERT_OPTIONAL))
    with anyio.fail_after(TEST_TIMEOUT):
        async with serving(server) as port:
            assert await echo(port, client_context(pki, None))
            assert await echo(port, client_context(pki, pki))


async def test_client_certificate_required(pki: Pki) -> None:
    server = Server("AIODICOM", "127.0.0.1", 0, ssl=server_context(pki, ssl.CERT_REQUIRED))
    with anyio.fail_after(TEST_TIMEOUT):
        async with serving(server) as port:
            await echo_fails(port, client_context(pki, None))
            assert await echo(port, client_context(pki, pki))
            assert server.active_associations == 0


async def test_wrong_ca_refused_both_ways(pki: Pki, other_pki: Pki) -> None:
    server = Server("AIODICOM", "127.0.0.1", 0, ssl=server_context(pki, ssl.CERT_REQUIRED))
    with anyio.fail_after(TEST_TIMEOUT):
        async with serving(server) as port:
            # We do not trust the server's CA.
            error = await echo_fails(port, client_context(other_pki, pki))
            assert "certificate verify failed" in error.lower() or "CERTIFICATE_VERIFY" in error
            # The server does not trust our certificate's CA.
            foreign = client_context(pki, None)
            foreign.load_cert_chain(other_pki.client_cert, other_pki.client_key)
            await echo_fails(port, foreign)
            assert await echo(port, client_context(pki, pki))


async def test_plaintext_to_tls_port_fails_cleanly(pki: Pki) -> None:
    server = Server("AIODICOM", "127.0.0.1", 0, ssl=server_context(pki, ssl.CERT_OPTIONAL))
    rq = build_request("AIODICOM", "PLAIN", [("1.2.840.10008.1.1", ["1.2.840.10008.1.2"])])
    with anyio.fail_after(TEST_TIMEOUT):
        async with serving(server) as port:
            # A DICOM client without TLS: its A-ASSOCIATE-RQ is not a TLS record.
            error = await echo_fails(port, None)
            assert error

            # The same by hand: the server closes the connection without answering DICOM.
            def raw() -> bytes:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                    sock.sendall(P.encode(rq))
                    chunks = []
                    try:
                        while chunk := sock.recv(65536):
                            chunks.append(chunk)
                    except ConnectionResetError:
                        pass  # closing with a reset is as clean an answer as any
                    return b"".join(chunks)

            answer = await anyio.to_thread.run_sync(raw)
            assert not answer.startswith(b"\x02\x00"), "no A-ASSOCIATE-AC over plaintext"
            assert await echo(port, client_context(pki, pki))
            assert server.active_associations == 0


def test_cli_tls_receive_echo_and_store(tmp_path: Path, pki: Pki) -> None:
    """``aiodicom receive`` with TLS and required client certificates, driven by the CLI."""
    sources = write_study(tmp_path / "src", images_per_series=2, rows=16, columns=16)
    out = tmp_path / "out"
    server_tls = (
        "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key),
        "--tls-ca", str(pki.ca_pem), "--tls-require-client-cert",
    )  # fmt: skip
    client_tls = ("--tls", "--tls-ca", str(pki.ca_pem))
    identity = ("--tls-cert", str(pki.client_cert), "--tls-key", str(pki.client_key))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            aiodicom_command(*args), stdin=subprocess.DEVNULL, capture_output=True, text=True,
            env=peer_env(), timeout=TEST_TIMEOUT,
        )  # fmt: skip

    with aiodicom_receive(out, args=server_tls) as peer:
        port = str(peer.port)
        echo = cli("echo", "127.0.0.1", port, "--aec", "AIODICOM", *client_tls, *identity)
        store = cli("store", "127.0.0.1", port, str(tmp_path / "src"), *client_tls, *identity)
        traced = Traced("echo", "127.0.0.1", port, "--aec", "AIODICOM", *client_tls, *identity)
        anonymous = cli("echo", "127.0.0.1", port, *client_tls)
        plaintext = cli("echo", "127.0.0.1", port)
    assert echo.returncode == 0, echo.stderr
    assert store.returncode == 0, store.stdout + store.stderr
    assert traced.code == 0, traced.stderr
    traced.assert_blocking()  # TLS through ssl on the blocking driver's socket
    assert "ssl" in traced.modules
    for failed in (anonymous, plaintext):
        assert failed.returncode != 0
        assert "Traceback" not in failed.stderr, failed.stderr
        assert len(failed.stderr.strip().splitlines()) == 1, failed.stderr
    assert peer.returncode == 0, peer.output()
    assert set(files_by_uid(out)) == {sop_instance_uid(p) for p in sources}
