"""Association negotiation as pure functions: an A-ASSOCIATE-RQ and a policy in,
an A-ASSOCIATE-AC or -RJ out (acceptor); the accepted contexts read back from
the answer (requestor). No I/O, so every rule is testable on its own.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

from aiodicom._record import FrozenRecord, Record, field
from aiodicom.codec.ae import ae_title_problem, normalize_ae_title
from aiodicom.codec.uids import (
    APPLICATION_CONTEXT_NAME,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    IMPLICIT_VR_LITTLE_ENDIAN,
    UNCOMPRESSED_TRANSFER_SYNTAXES,
)
from aiodicom.errors import ProtocolError
from aiodicom.ul import pdu as P

#: What we announce as our maximum PDU length by default. Large, so senders
#: use few PDUs per data set; finite, so one PDU never costs unbounded memory.
DEFAULT_MAX_PDU_LENGTH = 4 * 1024 * 1024


class AcceptedContext(FrozenRecord):
    """A presentation context both sides agreed on."""

    id: int
    abstract_syntax: str
    transfer_syntax: str


class AcceptorPolicy(Record):
    """What an SCP accepts; see :func:`negotiate`."""

    ae_title: str
    #: abstract syntax -> transfer syntaxes we accept for it, in our preference order.
    supported: Mapping[str, tuple[str, ...]]
    #: Accept any transfer syntax the requestor proposes, e.g. to store compressed data
    #: untouched (see :func:`choose_transfer_syntax`).
    accept_any_transfer_syntax: bool = False
    #: Reject associations whose called AE title is not ours (reason 7).
    require_called_ae: bool = False
    #: If set, only these calling AE titles may associate (reason 3 otherwise).
    calling_ae_allowlist: Collection[str] | None = None
    max_pdu_length: int = DEFAULT_MAX_PDU_LENGTH
    #: Operations we perform concurrently; answered to a proposed window.
    max_operations_performed: int = 1
    #: Decides a user identity negotiation: return the server response bytes to
    #: accept (b"" when no response is needed), or None to reject the association.
    identity_check: Callable[[P.UserIdentityRQ], bytes | None] | None = None
    #: SOP classes for which we accept the requestor acting as SCP (C-GET sub-operations).
    accept_scp_role_for: Collection[str] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        # Our own titles are checked once, here: an invalid one is a start-up error
        # (InvalidAETitleError), never a server that silently rejects every peer.
        self.ae_title = normalize_ae_title(self.ae_title, "our AE title")
        if self.calling_ae_allowlist is not None:
            self.calling_ae_allowlist = frozenset(
                normalize_ae_title(title, "allowed calling AE title") for title in self.calling_ae_allowlist
            )


def check_ae_titles(rq: P.AssociateRQ, policy: AcceptorPolicy) -> P.AssociateRJ | None:
    """The rejection the requested AE titles deserve, or None (PS3.8 table 9-21).

    An invalid or unknown called title is reason 7, an invalid or unlisted calling
    title reason 3, both permanent from the service user: retrying cannot help.
    Leading and trailing spaces are not significant.
    """
    called, calling = rq.called_ae.strip(" "), rq.calling_ae.strip(" ")
    if ae_title_problem(called) is not None or (policy.require_called_ae and called != policy.ae_title):
        return _reject(P.RJ_SOURCE_USER, P.RJ_USER_CALLED_AE_NOT_RECOGNIZED)
    if ae_title_problem(calling) is not None or (
        policy.calling_ae_allowlist is not None and calling not in policy.calling_ae_allowlist
    ):
        return _reject(P.RJ_SOURCE_USER, P.RJ_USER_CALLING_AE_NOT_RECOGNIZED)
    return None


def negotiate(
    rq: P.AssociateRQ, policy: AcceptorPolicy
) -> tuple[P.AssociateAC | P.AssociateRJ, list[AcceptedContext]]:
    """Answer an A-ASSOCIATE-RQ according to ``policy``.

    Returns the answer PDU and the contexts it accepts (empty for a rejection).
    """
    if rq.application_context != APPLICATION_CONTEXT_NAME:
        return _reject(P.RJ_SOURCE_USER, P.RJ_USER_APPLICATION_CONTEXT_NOT_SUPPORTED), []
    rejection = check_ae_titles(rq, policy)
    if rejection is not None:
        return rejection, []

    info = rq.user_information
    reply = P.UserInformation(
        max_pdu_length=policy.max_pdu_length,
        implementation_class_uid=IMPLEMENTATION_CLASS_UID,
        implementation_version_name=IMPLEMENTATION_VERSION_NAME,
    )
    if info.user_identity_rq is not None and policy.identity_check is not None:
        response = policy.identity_check(info.user_identity_rq)
        if response is None:
            return _reject(P.RJ_SOURCE_USER, P.RJ_USER_NO_REASON), []
        if info.user_identity_rq.positive_response_requested:
            reply.user_identity_ac = P.UserIdentityAC(response)
    if info.async_ops_window is not None:
        invoked, _performed = info.async_ops_window
        performed = policy.max_operations_performed
        if invoked != 0:
            performed = min(performed, invoked)
        # PS3.7 D.3.3.3: the AC's "invoked" field is how many operations the
        # *requestor* may invoke (what we perform); "performed" is about requests
        # we would invoke, and we invoke none asynchronously.
        reply.async_ops_window = (max(performed, 1), 1)
    for role in info.role_selections:
        reply.role_selections.append(
            P.RoleSelection(
                role.sop_class_uid,
                role.scu_role,
                role.scp_role and role.sop_class_uid in policy.accept_scp_role_for,
            )
        )

    answers: list[P.PresentationContextAC] = []
    accepted: list[AcceptedContext] = []
    for context in rq.presentation_contexts:
        ours = policy.supported.get(context.abstract_syntax)
        if ours is None:
            answers.append(
                P.PresentationContextAC(context.id, P.ContextResult.ABSTRACT_SYNTAX_NOT_SUPPORTED)
            )
            continue
        chosen = _choose(tuple(context.transfer_syntaxes), ours, policy.accept_any_transfer_syntax)
        if chosen is None:
            answers.append(
                P.PresentationContextAC(context.id, P.ContextResult.TRANSFER_SYNTAXES_NOT_SUPPORTED)
            )
            continue
        answers.append(P.PresentationContextAC(context.id, P.ContextResult.ACCEPTANCE, chosen))
        accepted.append(AcceptedContext(context.id, context.abstract_syntax, chosen))

    ac = P.AssociateAC(
        called_ae=rq.called_ae,
        calling_ae=rq.calling_ae,
        presentation_contexts=answers,
        user_information=reply,
        application_context=APPLICATION_CONTEXT_NAME,
    )
    return ac, accepted


#: With ``accept_any``, the uncompressed syntaxes we take first when the requestor lists
#: an uncompressed one first: the commonest encodings, and never retired big endian
#: while a little endian one is on offer.
ANY_UNCOMPRESSED_PREFERENCE: tuple[str, ...] = (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
)


def choose_transfer_syntax(
    proposed: Iterable[str], ours: tuple[str, ...], accept_any: bool
) -> str | None:
    """Pick the transfer syntax for one context.

    Normally our preference order wins among what was proposed. With
    ``accept_any``, a requestor listing a compressed (or deflated) syntax first has
    data in it, so that one is taken and its data arrive untouched; when it lists
    an uncompressed one first, explicit VR little endian wins, then implicit, then
    its own order with explicit big endian (retired) last.
    """
    proposed = [ts for ts in proposed if ts]
    if accept_any:
        return _any_transfer_syntax(proposed)
    offered = set(proposed)
    for ts in ours:
        if ts in offered:
            return ts
    return None


def _choose(proposed: tuple[str, ...], ours: tuple[str, ...], accept_any: bool) -> str | None:
    """:func:`choose_transfer_syntax`, remembered for proposals of UID size.

    A requestor proposes the same contexts on every association, so each answer is
    worked out once; a longer proposal (only a broken or hostile peer's) is not kept.
    """
    if len(proposed) <= 8 and sum(map(len, proposed)) <= 512 and type(ours) is tuple:
        return _choose_cached(proposed, ours, accept_any)
    return choose_transfer_syntax(proposed, ours, accept_any)


_choose_cached = functools.lru_cache(maxsize=4096)(choose_transfer_syntax)


def _any_transfer_syntax(proposed: list[str]) -> str | None:
    if not proposed or proposed[0] not in UNCOMPRESSED_TRANSFER_SYNTAXES:
        return proposed[0] if proposed else None
    for ts in ANY_UNCOMPRESSED_PREFERENCE:
        if ts in proposed:
            return ts
    current = [ts for ts in proposed if ts != EXPLICIT_VR_BIG_ENDIAN]
    return (current or proposed)[0]


def _reject(source: int, reason: int, result: int = P.RJ_PERMANENT) -> P.AssociateRJ:
    return P.AssociateRJ(result, source, reason)


def accepted_contexts(rq: P.AssociateRQ, ac: P.AssociateAC) -> list[AcceptedContext]:
    """The contexts an A-ASSOCIATE-AC accepted, checked against what we proposed."""
    proposed = {context.id: context for context in rq.presentation_contexts}
    result: list[AcceptedContext] = []
    for answer in ac.presentation_contexts:
        context = proposed.get(answer.id)
        if context is None:
            raise ProtocolError(
                f"A-ASSOCIATE-AC answers presentation context {answer.id}, which was not proposed",
                P.REASON_INVALID_PARAMETER,
            )
        if answer.result != P.ContextResult.ACCEPTANCE:
            continue
        if answer.transfer_syntax not in context.transfer_syntaxes:
            raise ProtocolError(
                f"A-ASSOCIATE-AC accepted context {answer.id} with transfer syntax "
                f"{answer.transfer_syntax}, which was not proposed for it",
                P.REASON_INVALID_PARAMETER,
            )
        result.append(AcceptedContext(answer.id, context.abstract_syntax, answer.transfer_syntax))
    return result


def select_context(
    contexts: Iterable[AcceptedContext], abstract_syntax: str, transfer_syntaxes: Sequence[str] = ()
) -> AcceptedContext | None:
    """An accepted context for ``abstract_syntax``, preferring the given transfer syntaxes."""
    candidates = [c for c in contexts if c.abstract_syntax == abstract_syntax]
    for ts in transfer_syntaxes:
        for context in candidates:
            if context.transfer_syntax == ts:
                return context
    return candidates[0] if candidates else None


def scp_role_selections(sop_classes: Iterable[str]) -> list[P.RoleSelection]:
    """Role selection sub-items proposing that we, the requestor, act as SCP for ``sop_classes``.

    What a C-GET SCU proposes for the storage classes it is to receive (PS3.4 C.4.3.1.1):
    SCU role 0, SCP role 1, as DCMTK's getscu and pynetdicom do; one item per class.
    """
    return [P.RoleSelection(uid, False, True) for uid in dict.fromkeys(sop_classes)]


def accepted_scp_roles(rq: P.AssociateRQ, ac: P.AssociateAC) -> frozenset[str]:
    """SOP classes for which the acceptor agreed that we, the requestor, act as SCP.

    Only classes we proposed the SCP role for count: an acceptor's answer for anything
    else, or an SCP role it grants that we never asked for, is ignored. A class the
    acceptor left out of its answer keeps the default roles (we are SCU only, PS3.7 D.3.3.4).
    """
    proposed = {role.sop_class_uid for role in rq.user_information.role_selections if role.scp_role}
    return frozenset(
        role.sop_class_uid
        for role in ac.user_information.role_selections
        if role.scp_role and role.sop_class_uid in proposed
    )


def default_storage_policy(
    ae_title: str,
    sop_classes: Iterable[str],
    transfer_syntaxes: tuple[str, ...] = UNCOMPRESSED_TRANSFER_SYNTAXES,
    **options: object,
) -> AcceptorPolicy:
    """A policy accepting ``sop_classes`` with ``transfer_syntaxes``."""
    supported = dict.fromkeys(sop_classes, transfer_syntaxes)
    return AcceptorPolicy(ae_title=ae_title, supported=supported, **options)  # type: ignore[arg-type]


def build_request(
    called_ae: str,
    calling_ae: str,
    contexts: Iterable[tuple[str, Iterable[str]]],
    *,
    max_pdu_length: int = DEFAULT_MAX_PDU_LENGTH,
    async_ops_window: tuple[int, int] | None = None,
    role_selections: Iterable[P.RoleSelection] = (),
    user_identity: P.UserIdentityRQ | None = None,
) -> P.AssociateRQ:
    """An A-ASSOCIATE-RQ proposing ``(abstract syntax, transfer syntaxes)`` pairs in order.

    Invalid AE titles raise :class:`~aiodicom.errors.InvalidAETitleError` here,
    before any connection is opened.
    """
    presentation = [
        P.PresentationContextRQ(2 * index + 1, abstract, list(syntaxes))
        for index, (abstract, syntaxes) in enumerate(contexts)
    ]
    if not presentation:
        raise ValueError("an association needs at least one presentation context")
    if len(presentation) > 128:
        raise ValueError(f"{len(presentation)} presentation contexts proposed; at most 128 fit")
    return P.AssociateRQ(
        called_ae=normalize_ae_title(called_ae, "called AE title"),
        calling_ae=normalize_ae_title(calling_ae, "calling AE title"),
        presentation_contexts=presentation,
        user_information=P.UserInformation(
            max_pdu_length=max_pdu_length,
            implementation_class_uid=IMPLEMENTATION_CLASS_UID,
            implementation_version_name=IMPLEMENTATION_VERSION_NAME,
            async_ops_window=async_ops_window,
            role_selections=list(role_selections),
            user_identity_rq=user_identity,
        ),
    )
