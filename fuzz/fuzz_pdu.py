#!/usr/bin/env python3
"""Fuzz the PDU decoder and the Upper Layer state machine with arbitrary bytes.

Invariant: whatever a peer sends, ``aiodicom.ul`` answers with a
:class:`~aiodicom.errors.ProtocolError` (turned into an A-ABORT) or an A-ASSOCIATE-RJ,
never with another exception. Any other exception is a defect (in the server it would
be a crashed association task or worse).

Each input is used twice:

1. as a stream of PDUs for :func:`aiodicom.ul.pdu.decode` (header checks, every item
   and sub-item parser, AE title fields), where only ``ProtocolError`` may come out;
2. as what a peer sends to an :class:`~aiodicom.ul.machine.UpperLayer` (byte 0: role,
   acceptor or requestor; byte 1: how the rest is split into reads), driven like the
   transport drives it: negotiation of any A-ASSOCIATE-RQ (``negotiate`` must answer,
   with titles of any kind), checking of any A-ASSOCIATE-AC, DIMSE message reassembly
   and command decoding of P-DATA, release answers, the ARTIM timer and the connection
   loss at the end. Here no exception at all may come out: the machine turns every
   ``ProtocolError`` into an abort itself.

Run: ``python fuzz/fuzz_pdu.py --runs 100000`` (see fuzz/README.md).
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _runner import Check, main  # noqa: E402

VERIFICATION = "1.2.840.10008.1.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
IMPLICIT = "1.2.840.10008.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
#: Caps what one fuzzed association may reserve, as the server's ASSOCIATE/PDU caps do.
PDU_CAP = 1 << 20


def load() -> tuple[Check, Sequence[bytes]]:
    from aiodicom.dimse import command as C
    from aiodicom.dimse.association import command_decoder
    from aiodicom.errors import ProtocolError
    from aiodicom.ul import events as E
    from aiodicom.ul import machine as M
    from aiodicom.ul import pdu as P
    from aiodicom.ul.assembly import MessageAssembler
    from aiodicom.ul.negotiation import (
        accepted_contexts,
        build_request,
        default_storage_policy,
        negotiate,
    )

    policy = default_storage_policy("FUZZ-SCP", [VERIFICATION, CT], require_called_ae=False)
    our_rq = build_request(
        "FUZZ-SCP", "FUZZ-SCU", [(VERIFICATION, [IMPLICIT]), (CT, [EXPLICIT, IMPLICIT])], async_ops_window=(4, 1)
    )

    # The command decoder with no data set sinks registered (a bad command set is a
    # ProtocolError); without sinks it never looks at its association argument.
    decode_command = command_decoder({})(None)  # type: ignore[arg-type]

    def decode_stream(data: bytes) -> None:
        view = memoryview(data)
        offset = 0
        while len(view) - offset >= 6:
            try:
                pdu_type, length = P.parse_header(view[offset : offset + 6], PDU_CAP)
                body = view[offset + 6 : offset + 6 + length]
                P.decode(pdu_type, body)  # a short body is a malformed PDU too
            except ProtocolError:
                return
            offset += 6 + length

    def drive(data: bytes) -> None:
        role = M.Role.REQUESTOR if data[:1] and data[0] & 1 else M.Role.ACCEPTOR
        chunk = 1 + (data[1] if len(data) > 1 else 255) * 16
        machine = M.UpperLayer(role, max_pdu_cap=PDU_CAP)
        if role is M.Role.REQUESTOR:
            machine.request(our_rq)
        machine.connection_made()
        assembler: MessageAssembler[Any] | None = None
        payload = data[2:]
        for offset in range(0, len(payload), chunk):
            for event in machine.receive_data(payload[offset : offset + chunk]):
                assembler = handle(machine, event, assembler)
            machine.data_to_send()
            if machine.should_close:
                break
        if machine.artim_running:
            machine.artim_expired()
        machine.connection_lost()

    def handle(machine: M.UpperLayer, event: object, assembler: MessageAssembler[Any] | None) -> Any:
        if isinstance(event, E.AssociateIndication):
            answer, contexts = negotiate(event.request, policy)
            if isinstance(answer, P.AssociateRJ):
                machine.reject(answer)
                return None
            machine.accept(answer)
            return MessageAssembler({c.id for c in contexts}, decode_command)
        if isinstance(event, E.AssociateAcceptConfirmation):
            try:
                contexts = accepted_contexts(our_rq, event.response)
            except ProtocolError as exc:
                machine.invalid_pdu(exc)
                return None
            return MessageAssembler({c.id for c in contexts}, decode_command)
        if isinstance(event, E.DataIndication) and assembler is not None:
            try:
                assembler.feed(event.pdvs)
            except ProtocolError as exc:
                assembler.abandon()
                machine.invalid_pdu(exc)
        elif isinstance(event, E.ReleaseIndication) and not event.collision:
            machine.release_response()
        return assembler

    def check(data: bytes) -> None:
        decode_stream(data[2:])
        drive(data)

    return check, seeds(P, C, our_rq, policy, negotiate)


def seeds(P: Any, C: Any, our_rq: Any, policy: Any, negotiate: Any) -> list[bytes]:
    """Valid conversations in both roles, for the mutations to start from."""
    rich_rq = our_rq.__class__(**{f: getattr(our_rq, f) for f in our_rq.__slots__})
    rich_rq.user_information = P.UserInformation(
        max_pdu_length=16384,
        implementation_class_uid="1.2.3.4",
        implementation_version_name="FUZZ",
        async_ops_window=(0, 1),
        role_selections=[P.RoleSelection(CT, True, True)],
        user_identity_rq=P.UserIdentityRQ(2, True, b"user", b"secret"),
        sop_class_extended=[P.SOPClassExtendedNegotiation(CT, b"\x01\x00")],
        sop_class_common_extended=[P.SOPClassCommonExtendedNegotiation(CT, "1.2.840.10008.4.2", ["1.2.3"])],
    )
    ac, _ = negotiate(our_rq, policy)
    echo = C.encode_command(C.CEchoRQ(1), has_dataset=False)
    echo_rsp = C.encode_command(C.CEchoRSP(1, 0), has_dataset=False)
    store = C.encode_command(C.CStoreRQ(2, CT, "1.2.3.4.5"), has_dataset=True)
    dataset = struct.pack("<HH2sH", 0x0008, 0x0018, b"UI", 10) + b"1.2.3.4.5\0"

    def pdata(*pdvs: tuple[int, bool, bool, bytes]) -> bytes:
        return bytes(P.encode(P.PDataTF([P.PDV(*pdv) for pdv in pdvs])))

    release_rq, release_rp = P.encode(P.ReleaseRQ()), P.encode(P.ReleaseRP())
    acceptor = [
        P.encode(our_rq) + pdata((1, True, True, echo)) + release_rq,
        P.encode(rich_rq)
        + pdata((3, True, True, store), (3, False, False, dataset[:6]))
        + pdata((3, False, True, dataset[6:]))
        + release_rq,
        P.encode(our_rq) + P.encode(P.Abort(0, 0)),
    ]
    requestor = [
        P.encode(ac) + pdata((1, True, True, echo_rsp)) + release_rp,
        P.encode(P.AssociateRJ(1, 1, 3)),
        P.encode(ac) + release_rq,
    ]
    return [b"\x00\x00" + s for s in acceptor] + [b"\x01\x00" + s for s in requestor] + [b"\x00\x01" + acceptor[0]]


if __name__ == "__main__":
    sys.exit(main(load))
