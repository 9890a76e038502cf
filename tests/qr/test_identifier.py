"""Query identifiers: the byte-level encoder agrees with pydicom, and falls back to it when it must."""

from __future__ import annotations

import sys

import pytest
from pydicom import Dataset

from aiodicom.codec.uids import EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN
from aiodicom.dimse import command as C
from aiodicom.dimse import status as S
from aiodicom.dimse.association import Response
from aiodicom.dimse.retrieve import (
    InvalidQueryError,
    _plain_identifier,
    encode_dataset_identifier,
    encode_query,
    identifier_dataset,
    retrieve_result,
)
from aiodicom.dimse.services.models import QueryLevel

QUERIES = [
    {"PatientID": "P1", "StudyInstanceUID": None, "PatientName": "DOE^J*"},
    {"StudyDate": "20200101-20201231", "ModalitiesInStudy": "CT\\MR", "AccessionNumber": ""},
    {"QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": "1.2.3", "SeriesInstanceUID": "1.2.3.4",
     "SOPInstanceUID": "1.2.3.4.555", "InstanceNumber": None},
]  # fmt: skip


@pytest.mark.parametrize("transfer_syntax", [EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN])
@pytest.mark.parametrize("query", QUERIES)
def test_the_plain_encoder_writes_what_pydicom_writes(query: dict[str, str | None], transfer_syntax: str) -> None:
    level = QueryLevel(str(query.get("QueryRetrieveLevel") or "STUDY"))
    plain = _plain_identifier(query, level, transfer_syntax)
    assert plain is not None
    assert plain == encode_dataset_identifier(identifier_dataset(query, level), transfer_syntax)


@pytest.mark.parametrize(
    "query",
    [{"PatientName": "Müller^Jörg"}, {"PatientComments": "x"}, {"InstanceNumber": 5}],
    ids=["non-ascii", "not-a-model-key", "a-number"],
)
def test_what_the_plain_encoder_cannot_write_goes_through_pydicom(query: dict[str, object]) -> None:
    assert _plain_identifier(query, QueryLevel.STUDY, EXPLICIT_VR_LITTLE_ENDIAN) is None
    assert encode_query(query, QueryLevel.STUDY, EXPLICIT_VR_LITTLE_ENDIAN)  # pydicom encodes it


def test_a_dataset_goes_through_pydicom_and_a_conflicting_level_is_refused() -> None:
    dataset = Dataset()
    dataset.PatientID = "P1"
    assert _plain_identifier(dataset, QueryLevel.STUDY, EXPLICIT_VR_LITTLE_ENDIAN) is None
    with pytest.raises(InvalidQueryError, match="QueryRetrieveLevel=SERIES"):
        encode_query({"QueryRetrieveLevel": "SERIES"}, QueryLevel.STUDY, EXPLICIT_VR_LITTLE_ENDIAN)


def test_the_failed_sop_instance_uid_list_is_read() -> None:
    listed = Dataset()
    listed.FailedSOPInstanceUIDList = ["1.2.3", "1.2.44"]
    data = encode_dataset_identifier(listed, EXPLICIT_VR_LITTLE_ENDIAN)
    response = Response(C.CMoveRSP(1, S.SUB_OPERATIONS_COMPLETE_WITH_FAILURES, "", None, 3, 2, 0), data)
    result = retrieve_result(response, EXPLICIT_VR_LITTLE_ENDIAN)
    assert result.failed_sop_instance_uids == ("1.2.3", "1.2.44")
    assert (result.completed, result.failed, result.remaining) == (3, 2, None)
    garbage = Response(response.command, b"\x08\x00\x58\x00UI\xff\xff")
    assert retrieve_result(garbage, EXPLICIT_VR_LITTLE_ENDIAN).failed_sop_instance_uids == ()


def test_a_retrieve_from_the_command_line_does_not_import_pydicom() -> None:
    import subprocess

    code = (
        "import sys\n"
        "from aiodicom.cli.qr import parse_keys\n"
        "from aiodicom.dimse.retrieve import encode_query\n"
        "from aiodicom.dimse.services.models import QueryLevel\n"
        "keys = parse_keys(['QueryRetrieveLevel=SERIES', 'StudyInstanceUID=1.2', '0020,000E'])\n"
        "encode_query(keys, QueryLevel.SERIES, '1.2.840.10008.1.2.1')\n"
        "assert 'pydicom' not in sys.modules, 'pydicom was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("transfer_syntax", [EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN])
@pytest.mark.parametrize("query", QUERIES)
def test_one_codec_serves_both_roles(query: dict[str, str | None], transfer_syntax: str) -> None:
    """The SCU's query is what the SCP's decoder reads back; the SCP's answer is what the SCU reads."""
    from aiodicom.codec.identifier import decode_identifier, encode_identifier, read_identifier
    from aiodicom.dimse.services.models import QUERY_KEYS

    level = QueryLevel(str(query.get("QueryRetrieveLevel") or "STUDY"))
    decoded = decode_identifier(encode_query(query, level, transfer_syntax), transfer_syntax)
    expected = {keyword: value or "" for keyword, value in query.items()} | {"QueryRetrieveLevel": level.value}
    assert {tag: (vr, raw.rstrip(b" \0").decode()) for tag, (vr, raw) in decoded.items()} == {
        QUERY_KEYS[keyword][0]: (QUERY_KEYS[keyword][1], value) for keyword, value in expected.items()
    }
    answer = read_identifier(encode_identifier(decoded, transfer_syntax), transfer_syntax)
    read = {e.keyword: [str(v) for v in (e.value if e.VM > 1 else [e.value or ""])] for e in answer}
    assert read == {keyword: value.split("\\") for keyword, value in expected.items()}


def test_a_value_too_long_for_its_vr_is_a_clear_error() -> None:
    with pytest.raises(InvalidQueryError, match="too long"):
        encode_query({"PatientID": "P" * 70000}, QueryLevel.STUDY, EXPLICIT_VR_LITTLE_ENDIAN)
