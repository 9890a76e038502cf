"""SCP/SCU Role Selection for C-GET, sans I/O: what we propose, and what we read back.

The PDUs go through the real encoder and decoder and the acceptor's ``negotiate``, so a
field swapped on the wire (SCU role for SCP role) or an answer we never asked for shows.
"""

from __future__ import annotations

from aiodicom.codec.uids import EXPLICIT_VR_LITTLE_ENDIAN, STUDY_ROOT_GET
from aiodicom.synthetic import CT_IMAGE_STORAGE
from aiodicom.ul import pdu as P
from aiodicom.ul.negotiation import (
    AcceptorPolicy,
    accepted_scp_roles,
    build_request,
    negotiate,
    scp_role_selections,
)

MR = "1.2.840.10008.5.1.4.1.1.4"
SC = "1.2.840.10008.5.1.4.1.1.7"


def _wire(pdu: P.AssociateRQ | P.AssociateAC) -> P.AssociateRQ | P.AssociateAC:
    decoded = P.decode_bytes(P.encode(pdu))
    assert isinstance(decoded, (P.AssociateRQ, P.AssociateAC))
    return decoded


def test_we_propose_the_scp_role_only_once_per_class() -> None:
    roles = scp_role_selections([CT_IMAGE_STORAGE, MR, CT_IMAGE_STORAGE])
    assert roles == [P.RoleSelection(CT_IMAGE_STORAGE, False, True), P.RoleSelection(MR, False, True)]


def test_the_classes_the_acceptor_granted_are_the_ones_we_receive() -> None:
    contexts = [(STUDY_ROOT_GET, [EXPLICIT_VR_LITTLE_ENDIAN])] + [
        (uid, [EXPLICIT_VR_LITTLE_ENDIAN]) for uid in (CT_IMAGE_STORAGE, MR, SC)
    ]
    rq = _wire(build_request("SCP", "SCU", contexts, role_selections=scp_role_selections([CT_IMAGE_STORAGE, MR, SC])))
    assert isinstance(rq, P.AssociateRQ)
    assert [(r.sop_class_uid, r.scu_role, r.scp_role) for r in rq.user_information.role_selections] == [
        (CT_IMAGE_STORAGE, False, True), (MR, False, True), (SC, False, True),
    ]  # fmt: skip
    policy = AcceptorPolicy("SCP", supported=dict.fromkeys(uid for uid, _ in contexts), accept_scp_role_for=[CT_IMAGE_STORAGE, SC])
    ac, _ = negotiate(rq, policy)
    assert isinstance(ac, P.AssociateAC)
    assert accepted_scp_roles(rq, _wire(ac)) == {CT_IMAGE_STORAGE, SC}  # type: ignore[arg-type]


def test_an_scp_role_we_did_not_ask_for_is_ignored() -> None:
    rq = build_request("SCP", "SCU", [(CT_IMAGE_STORAGE, [EXPLICIT_VR_LITTLE_ENDIAN])],
                       role_selections=scp_role_selections([CT_IMAGE_STORAGE]))  # fmt: skip
    ac = P.AssociateAC(
        called_ae="SCP", calling_ae="SCU", presentation_contexts=[],
        user_information=P.UserInformation(
            max_pdu_length=0, implementation_class_uid="1.2.3",
            role_selections=[P.RoleSelection(MR, True, True), P.RoleSelection(CT_IMAGE_STORAGE, True, False)],
        ),
    )  # fmt: skip
    assert accepted_scp_roles(rq, ac) == frozenset()


def test_a_refused_scp_role_keeps_the_default_roles() -> None:
    rq = build_request("SCP", "SCU", [(CT_IMAGE_STORAGE, [EXPLICIT_VR_LITTLE_ENDIAN])],
                       role_selections=scp_role_selections([CT_IMAGE_STORAGE]))  # fmt: skip
    ac, _ = negotiate(rq, AcceptorPolicy("SCP", supported={CT_IMAGE_STORAGE: (EXPLICIT_VR_LITTLE_ENDIAN,)}))
    assert isinstance(ac, P.AssociateAC)
    assert accepted_scp_roles(rq, ac) == frozenset()
