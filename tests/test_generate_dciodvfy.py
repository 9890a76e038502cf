"""``aiodicom generate`` writes data dicom3tools' ``dciodvfy`` accepts (issue 8, item 7).

dciodvfy checks an instance against its IOD (types 1/2/1C/2C, defined terms). Any
"Error" or "Warning" line fails the test. It is a Debian package (dicom3tools),
installed by ./dev with DCMTK; without it the test is skipped (``dicom3tools`` marker),
unless AIODICOM_REQUIRE_DCMTK=1 (CI, ./dev test), where it fails.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from aiodicom.synthetic import write_large_multiframe
from peers import dciodvfy, run_dcmtk

pytestmark = pytest.mark.dicom3tools


def assert_valid(path: Path) -> None:
    problems = dciodvfy(path)
    assert not problems, f"{path}:\n" + "\n".join(problems)


@pytest.mark.parametrize("modality", ["CT", "MR"])
@pytest.mark.parametrize(
    "syntax", ["implicit", "explicit", "big", pytest.param("deflated", marks=pytest.mark.dcmtk)]
)
def test_generated_series_pass_dciodvfy(tmp_path: Path, modality: str, syntax: str) -> None:
    out = tmp_path / "study"
    result = subprocess.run(
        [sys.executable, "-m", "aiodicom", "generate", str(out), "--images", "2", "--series", "2",
         "--rows", "16", "--columns", "16", "--modality", modality, "--transfer-syntax", syntax],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    files = sorted(out.rglob("*.dcm"))
    assert len(files) == 4
    for path in files:
        if syntax == "deflated":  # dicom3tools does not inflate: DCMTK converts first, losslessly
            inflated = path.with_suffix(".explicit")
            run_dcmtk(["dcmconv", "+te", str(path), str(inflated)], check=True)
            path = inflated
        assert_valid(path)


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"])
def test_generated_multiframe_passes_dciodvfy(tmp_path: Path, syntax: str) -> None:
    path = write_large_multiframe(tmp_path / "mf.dcm", size_bytes=16 * 16 * 2 * 3, rows=16, columns=16,
                                  transfer_syntax=syntax)
    assert_valid(path)
