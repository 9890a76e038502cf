"""The PS3.8 section 9.2 state machine, as tables you can read against the standard.

``TRANSITIONS`` is table 9-10 transcribed: for each event, the action taken in
each state where the event is defined. ``ACTIONS`` gives each action's
description (table 9-6 to 9-9) and its next state. The machine that executes
them lives in :mod:`aiodicom.ul.machine`; this module is only data.
"""

from __future__ import annotations

from enum import Enum


class State(Enum):
    STA1 = "Sta1"  # Idle
    STA2 = "Sta2"  # Transport connection open (awaiting A-ASSOCIATE-RQ PDU)
    STA3 = "Sta3"  # Awaiting local A-ASSOCIATE response primitive
    STA4 = "Sta4"  # Awaiting transport connection opening to complete
    STA5 = "Sta5"  # Awaiting A-ASSOCIATE-AC or A-ASSOCIATE-RJ PDU
    STA6 = "Sta6"  # Association established and ready for data transfer
    STA7 = "Sta7"  # Awaiting A-RELEASE-RP PDU
    STA8 = "Sta8"  # Awaiting local A-RELEASE response primitive
    STA9 = "Sta9"  # Release collision requestor side; awaiting A-RELEASE response
    STA10 = "Sta10"  # Release collision acceptor side; awaiting A-RELEASE-RP PDU
    STA11 = "Sta11"  # Release collision requestor side; awaiting A-RELEASE-RP PDU
    STA12 = "Sta12"  # Release collision acceptor side; awaiting A-RELEASE response primitive
    STA13 = "Sta13"  # Awaiting transport connection close indication


class Event(Enum):
    EVT1 = "Evt1"  # A-ASSOCIATE request (local user)
    EVT2 = "Evt2"  # Transport connect confirmation (local transport service)
    EVT3 = "Evt3"  # A-ASSOCIATE-AC PDU received
    EVT4 = "Evt4"  # A-ASSOCIATE-RJ PDU received
    EVT5 = "Evt5"  # Transport connection indication
    EVT6 = "Evt6"  # A-ASSOCIATE-RQ PDU received
    EVT7 = "Evt7"  # A-ASSOCIATE response primitive (accept)
    EVT8 = "Evt8"  # A-ASSOCIATE response primitive (reject)
    EVT9 = "Evt9"  # P-DATA request primitive
    EVT10 = "Evt10"  # P-DATA-TF PDU received
    EVT11 = "Evt11"  # A-RELEASE request primitive
    EVT12 = "Evt12"  # A-RELEASE-RQ PDU received
    EVT13 = "Evt13"  # A-RELEASE-RP PDU received
    EVT14 = "Evt14"  # A-RELEASE response primitive
    EVT15 = "Evt15"  # A-ABORT request primitive
    EVT16 = "Evt16"  # A-ABORT PDU received
    EVT17 = "Evt17"  # Transport connection closed indication
    EVT18 = "Evt18"  # ARTIM timer expired
    EVT19 = "Evt19"  # Unrecognized or invalid PDU received


S = State
_ALL_ESTABLISHED = (S.STA6, S.STA7, S.STA8, S.STA9, S.STA10, S.STA11, S.STA12)
_AFTER_ESTABLISHED = (S.STA8, S.STA9, S.STA10, S.STA11, S.STA12)


def _row(**cells: str) -> dict[State, str]:
    return {State(name.capitalize()): action for name, action in cells.items()}


def _fill(states: tuple[State, ...], action: str) -> dict[State, str]:
    return dict.fromkeys(states, action)


#: PS3.8 table 9-10: event -> {state: action}. Cells absent here are not
#: defined by the standard: a local primitive there is a programming error, a
#: received PDU there cannot happen (no transport connection).
TRANSITIONS: dict[Event, dict[State, str]] = {
    Event.EVT1: _row(sta1="AE-1"),
    Event.EVT2: _row(sta4="AE-2"),
    Event.EVT3: {**_row(sta2="AA-1", sta3="AA-8", sta5="AE-3", sta13="AA-6"), **_fill(_ALL_ESTABLISHED, "AA-8")},
    Event.EVT4: {**_row(sta2="AA-1", sta3="AA-8", sta5="AE-4", sta13="AA-6"), **_fill(_ALL_ESTABLISHED, "AA-8")},
    Event.EVT5: _row(sta1="AE-5"),
    Event.EVT6: {**_row(sta2="AE-6", sta3="AA-8", sta5="AA-8", sta13="AA-7"), **_fill(_ALL_ESTABLISHED, "AA-8")},
    Event.EVT7: _row(sta3="AE-7"),
    Event.EVT8: _row(sta3="AE-8"),
    Event.EVT9: _row(sta6="DT-1", sta8="AR-7"),
    Event.EVT10: {
        **_row(sta2="AA-1", sta3="AA-8", sta5="AA-8", sta6="DT-2", sta7="AR-6", sta13="AA-6"),
        **_fill(_AFTER_ESTABLISHED, "AA-8"),
    },
    Event.EVT11: _row(sta6="AR-1"),
    Event.EVT12: {
        **_row(sta2="AA-1", sta3="AA-8", sta5="AA-8", sta6="AR-2", sta7="AR-8", sta13="AA-6"),
        **_fill(_AFTER_ESTABLISHED, "AA-8"),
    },
    Event.EVT13: {
        **_fill(_ALL_ESTABLISHED, "AA-8"),
        **_row(sta2="AA-1", sta3="AA-8", sta5="AA-8", sta7="AR-3", sta10="AR-10", sta11="AR-3", sta13="AA-6"),
    },
    Event.EVT14: _row(sta8="AR-4", sta9="AR-9", sta12="AR-4"),
    Event.EVT15: {**_row(sta3="AA-1", sta4="AA-2", sta5="AA-1"), **_fill(_ALL_ESTABLISHED, "AA-1")},
    Event.EVT16: {**_row(sta2="AA-2", sta3="AA-3", sta5="AA-3", sta13="AA-2"), **_fill(_ALL_ESTABLISHED, "AA-3")},
    Event.EVT17: {
        **_row(sta2="AA-5", sta3="AA-4", sta4="AA-4", sta5="AA-4", sta13="AR-5"),
        **_fill(_ALL_ESTABLISHED, "AA-4"),
    },
    Event.EVT18: _row(sta2="AA-2", sta13="AA-2"),
    Event.EVT19: {**_row(sta2="AA-1", sta3="AA-8", sta5="AA-8", sta13="AA-7"), **_fill(_ALL_ESTABLISHED, "AA-8")},
}


#: PS3.8 tables 9-6 to 9-9: action -> (what it does, next state). ``None``
#: means the next state depends on a condition spelled out in the text.
ACTIONS: dict[str, tuple[str, State | None]] = {
    "AE-1": ("Issue TRANSPORT CONNECT request primitive to local transport service", S.STA4),
    "AE-2": ("Send A-ASSOCIATE-RQ PDU", S.STA5),
    "AE-3": ("Issue A-ASSOCIATE confirmation (accept) primitive", S.STA6),
    "AE-4": ("Issue A-ASSOCIATE confirmation (reject) primitive and close transport connection", S.STA1),
    "AE-5": ("Issue transport connection response primitive; start ARTIM timer", S.STA2),
    "AE-6": (
        "Stop ARTIM timer and if A-ASSOCIATE-RQ acceptable by service-provider: issue A-ASSOCIATE "
        "indication primitive (Sta3); otherwise issue A-ASSOCIATE-RJ PDU and start ARTIM timer (Sta13)",
        None,
    ),
    "AE-7": ("Send A-ASSOCIATE-AC PDU", S.STA6),
    "AE-8": ("Send A-ASSOCIATE-RJ PDU and start ARTIM timer", S.STA13),
    "DT-1": ("Send P-DATA-TF PDU", S.STA6),
    "DT-2": ("Send P-DATA indication primitive", S.STA6),
    "AR-1": ("Send A-RELEASE-RQ PDU", S.STA7),
    "AR-2": ("Issue A-RELEASE indication primitive", S.STA8),
    "AR-3": ("Issue A-RELEASE confirmation primitive, and close transport connection", S.STA1),
    "AR-4": ("Issue A-RELEASE-RP PDU and start ARTIM timer", S.STA13),
    "AR-5": ("Stop ARTIM timer", S.STA1),
    "AR-6": ("Issue P-DATA indication", S.STA7),
    "AR-7": ("Issue P-DATA-TF PDU", S.STA8),
    "AR-8": (
        "Issue A-RELEASE indication (release collision): association-requestor goes to Sta9, "
        "acceptor to Sta10",
        None,
    ),
    "AR-9": ("Send A-RELEASE-RP PDU", S.STA11),
    "AR-10": ("Issue A-RELEASE confirmation primitive", S.STA12),
    "AA-1": ("Send A-ABORT PDU (service-user source) and start (or restart) ARTIM timer", S.STA13),
    "AA-2": ("Stop ARTIM timer if running. Close transport connection", S.STA1),
    "AA-3": ("Issue A-ABORT (or A-P-ABORT) indication and close transport connection", S.STA1),
    "AA-4": ("Issue A-P-ABORT indication primitive", S.STA1),
    "AA-5": ("Stop ARTIM timer", S.STA1),
    "AA-6": ("Ignore PDU", S.STA13),
    "AA-7": ("Send A-ABORT PDU", S.STA13),
    "AA-8": (
        "Send A-ABORT PDU (service-provider source), issue an A-P-ABORT indication, and start ARTIM timer",
        S.STA13,
    ),
}


def action_for(event: Event, state: State) -> str | None:
    """The action table 9-10 prescribes, or None where the standard defines none."""
    return TRANSITIONS[event].get(state)
