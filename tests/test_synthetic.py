"""Synthetic studies: valid Part 10 files that pydicom and DCMTK read without complaint."""

from __future__ import annotations

import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest

from aiodicom.cli import main
from aiodicom.codec.uids import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLEMENTATION_CLASS_UID,
    IMPLICIT_VR_LITTLE_ENDIAN,
)
from aiodicom.errors import AiodicomError, SyntheticDataError
from aiodicom.synthetic import (
    CT_IMAGE_STORAGE,
    MR_IMAGE_STORAGE,
    MULTIFRAME_GRAYSCALE_WORD_SC_STORAGE,
    TRANSFER_SYNTAXES,
    make_dataset,
    pixel_array,
    write_large_multiframe,
    write_study,
)
from peers import dataset_bytes, dcmdump

# Not square, so a rows/columns mix-up shows.
ROWS, COLUMNS = 40, 56


@pytest.fixture(params=sorted(TRANSFER_SYNTAXES))
def transfer_syntax(request: pytest.FixtureRequest) -> str:
    return TRANSFER_SYNTAXES[str(request.param)]


def test_study_reads_back_with_the_generated_pixels(tmp_path: Path, transfer_syntax: str) -> None:
    paths = write_study(
        tmp_path,
        series=2,
        images_per_series=3,
        rows=ROWS,
        columns=COLUMNS,
        transfer_syntax=transfer_syntax,
        seed=7,
    )
    assert [p.name for p in paths] == [f"{n}.dcm" for n in range(1, 7)]
    for n, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == transfer_syntax
        assert ds.file_meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.SOPClassUID == CT_IMAGE_STORAGE
        series, index = divmod(n, 3)
        expected = pixel_array(ROWS, COLUMNS, index=index, slices=3, seed=7 + series)
        assert ds.pixel_array.shape == (ROWS, COLUMNS)
        assert np.array_equal(ds.pixel_array, expected)


@pytest.mark.dcmtk
def test_dcmdump_reads_every_transfer_syntax_without_warnings(
    tmp_path: Path, transfer_syntax: str
) -> None:
    (path,) = write_study(
        tmp_path, images_per_series=1, rows=ROWS, columns=COLUMNS, transfer_syntax=transfer_syntax
    )
    result = dcmdump(path, "-M")
    assert result.returncode == 0
    assert result.stderr == ""
    assert "(7fe0,0010) OW" in result.stdout


def test_big_endian_pixel_bytes_are_swapped(tmp_path: Path) -> None:
    (path,) = write_study(
        tmp_path,
        images_per_series=1,
        rows=ROWS,
        columns=COLUMNS,
        transfer_syntax=EXPLICIT_VR_BIG_ENDIAN,
    )
    stored = pixel_array(ROWS, COLUMNS)
    raw = dataset_bytes(path)
    assert raw.endswith(stored.astype(">u2").tobytes())
    assert not raw.endswith(stored.astype("<u2").tobytes())


def test_deflated_data_set_is_raw_deflate(tmp_path: Path) -> None:
    (path,) = write_study(
        tmp_path,
        images_per_series=1,
        rows=ROWS,
        columns=COLUMNS,
        transfer_syntax=DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    )
    inflated = zlib.decompress(dataset_bytes(path), -zlib.MAX_WBITS)
    assert inflated.endswith(pixel_array(ROWS, COLUMNS).astype("<u2").tobytes())


def test_geometry_steps_along_the_slice_normal(tmp_path: Path) -> None:
    paths = write_study(tmp_path, series=2, images_per_series=4, rows=ROWS, columns=COLUMNS)
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    assert len({h.StudyInstanceUID for h in headers}) == 1
    assert len({h.FrameOfReferenceUID for h in headers}) == 1
    assert len({h.SOPInstanceUID for h in headers}) == 8
    for series_number in (1, 2):
        stack = [h for h in headers if h.SeriesNumber == series_number]
        assert len({h.SeriesInstanceUID for h in stack}) == 1
        assert [h.InstanceNumber for h in stack] == [1, 2, 3, 4]
        orientation = np.array(stack[0].ImageOrientationPatient, dtype=float)
        normal = np.cross(orientation[:3], orientation[3:])
        positions = np.array([h.ImagePositionPatient for h in stack], dtype=float)
        steps = np.diff(positions, axis=0)
        thickness = float(stack[0].SliceThickness)
        assert np.allclose(steps, thickness * normal)
        for h, position in zip(stack, positions, strict=True):
            assert float(h.SliceLocation) == pytest.approx(float(position @ normal))
            assert [float(v) for v in h.PixelSpacing] == [0.7, 0.7]
    series_uids = {h.SeriesInstanceUID for h in headers}
    assert len(series_uids) == 2


def test_ct_values_rescale_to_plausible_hounsfield_units() -> None:
    ds = make_dataset(rows=128, columns=128)
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert ds.BitsAllocated == 16 and ds.BitsStored == 12
    assert int(ds.pixel_array.max()) < 2**12
    assert abs(float(np.median(hu[:4, :4])) + 1000) < 50  # air in the corner
    assert abs(float(np.median(hu[60:68, 60:68])) - 40) < 50  # soft tissue in the body


def test_pixels_depend_only_on_the_seed_and_slices_differ() -> None:
    a = make_dataset(rows=ROWS, columns=COLUMNS, seed=1, index=0, slices=3)
    b = make_dataset(rows=ROWS, columns=COLUMNS, seed=1, index=0, slices=3)
    c = make_dataset(rows=ROWS, columns=COLUMNS, seed=2, index=0, slices=3)
    d = make_dataset(rows=ROWS, columns=COLUMNS, seed=1, index=1, slices=3)
    assert a.PixelData == b.PixelData
    assert a.PixelData != c.PixelData
    assert a.PixelData != d.PixelData
    assert a.SOPInstanceUID != b.SOPInstanceUID


def test_anatomy_stays_put_and_the_organ_changes_along_the_stack() -> None:
    """Slices of one stack must form a plausible volume: the body outline is the same in
    every slice, only noise and the organ's cross section change."""
    slices = [pixel_array(64, 64, index=i, slices=50) for i in (0, 10, 25, 49)]
    body = [s > 500 for s in slices]  # above -524 HU
    for mask in body[1:]:
        assert np.array_equal(mask, body[0])
    assert 0.3 < float(body[0].mean()) < 0.6
    # The organ (+60) is absent at both ends and widest in the middle.
    organ = [int(((s.astype(int) - slices[0]) > 45).sum()) for s in slices]
    assert organ[0] == 0 and organ[3] < organ[1] < organ[2]


def test_make_dataset_uses_the_uids_it_is_given() -> None:
    ds = make_dataset(
        rows=8,
        columns=8,
        study_uid="1.2.3",
        series_uid="1.2.3.4",
        frame_of_reference_uid="1.2.3.5",
        sop_instance_uid="1.2.3.4.5",
        transfer_syntax=IMPLICIT_VR_LITTLE_ENDIAN,
    )
    assert (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID) == (
        "1.2.3",
        "1.2.3.4",
        "1.2.3.5",
    )
    assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID == "1.2.3.4.5"


def test_mr_modality_gives_mr_image_storage(tmp_path: Path) -> None:
    (path,) = write_study(tmp_path, images_per_series=1, rows=8, columns=8, modality="mr")
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == MR_IMAGE_STORAGE
    assert ds.Modality == "MR"
    assert "RescaleIntercept" not in ds


@pytest.mark.parametrize(
    "kwargs",
    [
        {"modality": "XA"},
        {"transfer_syntax": "1.2.840.10008.1.2.4.70"},
        {"rows": 0},
        {"index": 3, "slices": 3},
    ],
)
def test_bad_parameters_raise_our_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(SyntheticDataError) as info:
        make_dataset(**kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, AiodicomError)


def test_write_study_refuses_an_empty_study(tmp_path: Path) -> None:
    with pytest.raises(SyntheticDataError):
        write_study(tmp_path, images_per_series=0)


@pytest.mark.parametrize(
    "transfer_syntax",
    [EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_BIG_ENDIAN],
)
def test_large_multiframe_reads_back(tmp_path: Path, transfer_syntax: str) -> None:
    size = 1_000_000
    path = write_large_multiframe(
        tmp_path / "mf.dcm", size_bytes=size, rows=64, columns=96, transfer_syntax=transfer_syntax
    )
    frame_bytes = 64 * 96 * 2
    frames = -(-size // frame_bytes)
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == MULTIFRAME_GRAYSCALE_WORD_SC_STORAGE
    assert ds.file_meta.TransferSyntaxUID == transfer_syntax
    assert int(ds.NumberOfFrames) == frames
    assert len(ds.PixelData) == frames * frame_bytes >= size
    pixels = ds.pixel_array
    assert pixels.shape == (frames, 64, 96)
    assert not np.array_equal(pixels[0], pixels[1])
    assert path.stat().st_size - frames * frame_bytes < 2048  # the rest is the header


@pytest.mark.dcmtk
def test_large_multiframe_passes_dcmdump(tmp_path: Path) -> None:
    path = write_large_multiframe(tmp_path / "mf.dcm", size_bytes=300_000, rows=64, columns=64)
    result = dcmdump(path, "-M")
    assert result.returncode == 0
    assert result.stderr == ""


def test_large_multiframe_is_streamed_not_held_in_memory(tmp_path: Path) -> None:
    size = 64 << 20
    # Build (and cache) the phantom first: only what grows with the size counts.
    write_large_multiframe(tmp_path / "warm.dcm", size_bytes=1, rows=512, columns=512)
    tracemalloc.start()
    try:
        write_large_multiframe(tmp_path / "mf.dcm", size_bytes=size, rows=512, columns=512)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (tmp_path / "mf.dcm").stat().st_size > size
    assert peak < size // 8  # a fixed few MiB, however large the instance


def test_cli_generate_writes_the_study_and_one_summary_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli"
    code = main(
        [
            "generate", str(out), "--images", "3", "--series", "2", "--rows", "16",
            "--columns", "24", "--transfer-syntax", "big", "--patient-id", "CLI01", "--seed", "5",
        ]
    )  # fmt: skip
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("wrote 6 files")
    paths = sorted(out.iterdir(), key=lambda p: int(p.stem))
    assert [p.name for p in paths] == [f"{n}.dcm" for n in range(1, 7)]
    last = pydicom.dcmread(paths[-1])
    assert last.PatientID == "CLI01"
    assert last.file_meta.TransferSyntaxUID == EXPLICIT_VR_BIG_ENDIAN
    assert (last.Rows, last.Columns, last.SeriesNumber) == (16, 24, 2)
    assert np.array_equal(last.pixel_array, pixel_array(16, 24, index=2, slices=3, seed=6))


def test_cli_generate_rejects_zero_images(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as info:
        main(["generate", str(tmp_path), "--images", "0"])
    assert info.value.code == 2
    assert not any(tmp_path.iterdir())
