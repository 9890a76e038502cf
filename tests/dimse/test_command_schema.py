"""The command set schema: one table per message, read by both the encoder and the decoder.

Every message type is checked with every optional field present and with every one
absent, and every required field is checked missing, so a row added to the schema
(or a field added to a class without its row) is covered without a new test.
"""

from __future__ import annotations

import struct

import pytest

from aiodicom.dimse.command import (
    RESPONSE_TYPES,
    SCHEMA,
    CommandField,
    FieldSpec,
    FrozenRecordError,
    Message,
    decode_command,
    encode_command,
    message_fields,
    replace,
)
from aiodicom.dimse.status import Status
from aiodicom.errors import MalformedCommandError

TYPES = sorted(SCHEMA, key=lambda t: SCHEMA[t].command_field)


def _value(field: FieldSpec, index: int) -> object:
    """A valid, distinct value for ``field`` (its VR decides the kind)."""
    if field.name == "status":
        return Status(0xB000)
    return {
        "US": 100 + index,
        "UI": f"1.2.826.0.1.3680043.8.498.{index + 1}",
        "AE": f"AE_{index}",
        "LO": f"comment {index}",
        "AT": (0x00100020, 0x00080018 + index),
    }[field.vr]


def _full(message_type: type) -> Message:
    spec = SCHEMA[message_type]
    message: Message = message_type(*(_value(f, i) for i, f in enumerate(spec.fields)))
    return message


def _minimal(message_type: type) -> Message:
    spec = SCHEMA[message_type]
    # An absent optional field is "" for a UID and None for the rest.
    message: Message = message_type(
        *(
            _value(f, i) if f.required else "" if f.vr == "UI" else None
            for i, f in enumerate(spec.fields)
        )
    )
    return message


def _elements(command: bytes) -> list[int]:
    out, pos = [], 0
    while pos < len(command):
        _, elem, length = struct.unpack_from("<HHI", command, pos)
        out.append(elem)
        pos += 8 + length
    return out


def _without(command: bytes, drop: int) -> bytes:
    """``command`` without element ``drop`` (and without the group length)."""
    out, pos = [], 0
    while pos < len(command):
        _, elem, length = struct.unpack_from("<HHI", command, pos)
        if elem not in (drop, 0x0000):
            out.append(command[pos : pos + 8 + length])
        pos += 8 + length
    return b"".join(out)


def test_every_command_field_has_a_schema() -> None:
    assert {spec.command_field for spec in SCHEMA.values()} == set(CommandField)
    assert len({spec.label for spec in SCHEMA.values()}) == len(SCHEMA)


@pytest.mark.parametrize("message_type", TYPES, ids=lambda t: t.__name__)
def test_schema_describes_every_field_of_its_class(message_type: type) -> None:
    """No field of a message class is left out of (or invented by) its schema, in order."""
    spec = SCHEMA[message_type]
    assert tuple(f.name for f in spec.fields) == message_fields(message_type)
    assert len({f.elem for f in spec.fields}) == len(spec.fields)


@pytest.mark.parametrize("has_dataset", [False, True])
@pytest.mark.parametrize("message_type", TYPES, ids=lambda t: t.__name__)
def test_every_optional_field_round_trips(message_type: type, has_dataset: bool) -> None:
    spec = SCHEMA[message_type]
    msg = _full(message_type)
    command = encode_command(msg, has_dataset=has_dataset)
    elems = _elements(command)
    assert elems == sorted(elems), "PS3.5 7.1: ascending tag order"
    assert set(elems) == {0x0000, 0x0100, 0x0800} | {f.elem for f in spec.fields}
    decoded, flag = decode_command(command)
    assert decoded == msg and flag is has_dataset
    assert type(decoded) is message_type


@pytest.mark.parametrize("message_type", TYPES, ids=lambda t: t.__name__)
def test_absent_optional_fields_are_not_sent(message_type: type) -> None:
    spec = SCHEMA[message_type]
    msg = _minimal(message_type)
    command = encode_command(msg, has_dataset=False)
    sent = set(_elements(command))
    for field in spec.fields:
        assert (field.elem in sent) is field.required, field
    assert decode_command(command) == (msg, False)


@pytest.mark.parametrize(
    ("message_type", "field"),
    [(t, f) for t in TYPES for f in SCHEMA[t].fields if f.required],
    ids=lambda v: v.__name__ if isinstance(v, type) else v.name,
)
def test_a_missing_required_field_is_named(message_type: type, field: FieldSpec) -> None:
    command = _without(encode_command(_full(message_type), has_dataset=False), field.elem)
    with pytest.raises(MalformedCommandError, match=rf"lacks \(0000,{field.elem:04X}\)"):
        decode_command(command)


def test_response_types_are_the_messages_with_a_status() -> None:
    with_status = {t for t in SCHEMA if "status" in message_fields(t)}
    assert set(RESPONSE_TYPES) == with_status


@pytest.mark.parametrize("message_type", TYPES, ids=lambda t: t.__name__)
def test_messages_are_values(message_type: type) -> None:
    """Equality, hash, repr and immutability, as the frozen dataclasses they replace."""
    msg, same, other = _full(message_type), _full(message_type), _minimal(message_type)
    assert msg == same and hash(msg) == hash(same)
    assert (msg != other) is (message_fields(message_type) != tuple(
        f.name for f in SCHEMA[message_type].fields if f.required
    ))
    first = message_fields(message_type)[0]
    assert f"{first}=" in repr(msg) and repr(msg).startswith(message_type.__name__ + "(")
    with pytest.raises(FrozenRecordError):
        setattr(msg, first, 1)
    changed = replace(msg, **{first: 9})
    assert getattr(changed, first) == 9 and getattr(msg, first) != 9
    with pytest.raises(TypeError):
        replace(msg, no_such_field=1)
    with pytest.raises(TypeError):
        message_type()


def test_status_is_always_a_status() -> None:
    """An int given as status becomes a Status, as before (constructor and replace)."""
    for message_type in RESPONSE_TYPES:
        msg = message_type(1, 0xA700)
        assert type(msg.status) is Status and msg.status == 0xA700
        assert type(replace(msg, status=0).status) is Status
