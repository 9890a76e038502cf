"""build_series from numpy and NIfTI: pixel encoding, file meta, UIDs, DCMTK parsing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt
import pydicom
import pytest
from pydicom.dataset import Dataset

from aiodicom.codec.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from aiodicom.errors import FactoryError, PixelEncodingError
from aiodicom.factory import Discard, build_series, encode_pixels, validate, write_series
from aiodicom.factory.blueprints import (
    CT_SERIES,
    MR_SERIES,
    PET_SERIES,
    SECONDARY_CAPTURE_SERIES,
)
from factory.conftest import DcmdumpCheck
from factory.helpers import OBLIQUE, make_affine

# pydicom warns about values that break their VR (a DS over 16 characters, ...).
pytestmark = pytest.mark.filterwarnings("error::UserWarning")


def decoded(datasets: list[Dataset]) -> npt.NDArray[np.float64]:
    """Voxel values as any reader computes them: stored * slope + intercept."""
    slices = []
    for ds in datasets:
        slope = float(ds.get("RescaleSlope", 1))
        intercept = float(ds.get("RescaleIntercept", 0))
        slices.append(ds.pixel_array.astype(np.float64) * slope + intercept)
    return np.stack(slices)


RNG = np.random.default_rng(7)
VOLUMES: dict[str, npt.NDArray[Any]] = {
    "int8": RNG.integers(-128, 128, (3, 4, 5)).astype(np.int8),
    "uint8": RNG.integers(0, 256, (3, 4, 5)).astype(np.uint8),
    "int16": RNG.integers(-32768, 32768, (3, 4, 5)).astype(np.int16),
    "uint16": RNG.integers(0, 65536, (3, 4, 5)).astype(np.uint16),
    "int32-small": RNG.integers(-3000, 3000, (3, 4, 5)).astype(np.int32),
    "int32-wide": RNG.integers(-(2**31), 2**31 - 1, (3, 4, 5)).astype(np.int32),
    "uint32-unsigned16": RNG.integers(0, 65536, (3, 4, 5)).astype(np.uint32),
    "float32": (RNG.standard_normal((3, 4, 5)) * 1e3).astype(np.float32),
    "float64-tiny": RNG.random((3, 4, 5)) * 1e-6 + 5e-7,
    "float64-integral": RNG.integers(-1000, 3000, (3, 4, 5)).astype(np.float64),
    "bool": RNG.random((3, 4, 5)) > 0.5,
}


@pytest.mark.parametrize("name", sorted(VOLUMES))
def test_values_survive_encoding_within_half_a_slope_step(name: str) -> None:
    volume = VOLUMES[name]
    datasets = build_series(volume, CT_SERIES, affine=make_affine())
    slope = float(datasets[0].RescaleSlope)
    values = decoded(datasets)
    original = volume.astype(np.float64)
    assert values.min() >= original.min() - slope  # nothing clipped at either end
    assert values.max() <= original.max() + slope
    np.testing.assert_allclose(values, original, rtol=0, atol=slope / 2 * (1 + 1e-9))
    for ds in datasets:
        assert validate(ds) == []


@pytest.mark.parametrize(
    "name",
    [
        "int8",
        "uint8",
        "int16",
        "uint16",
        "int32-small",
        "uint32-unsigned16",
        "float64-integral",
        "bool",
    ],
)
def test_integers_that_fit_are_stored_exactly(name: str) -> None:
    datasets = build_series(VOLUMES[name], CT_SERIES, affine=make_affine())
    assert datasets[0].RescaleSlope == 1 and datasets[0].RescaleIntercept == 0
    np.testing.assert_array_equal(decoded(datasets), VOLUMES[name].astype(np.float64))


def test_extreme_range_does_not_clip() -> None:
    volume = np.array([[[-1.7976e300, 0.0], [1.0, 1.7976e300]]])
    datasets = build_series(volume, SECONDARY_CAPTURE_SERIES, affine=make_affine())
    values = decoded(datasets)
    slope = float(datasets[0].RescaleSlope)
    np.testing.assert_allclose(values, volume, rtol=0, atol=slope / 2 * (1 + 1e-9))


def test_pet_keeps_intercept_zero_and_negative_values() -> None:
    volume = (RNG.standard_normal((3, 4, 5)) * 5000).astype(np.float32)
    datasets = build_series(volume, PET_SERIES, affine=make_affine())
    assert all(float(ds.RescaleIntercept) == 0 for ds in datasets)
    assert datasets[0].PixelRepresentation == 1
    slope = float(datasets[0].RescaleSlope)
    np.testing.assert_allclose(decoded(datasets), volume, rtol=0, atol=slope / 2 * 1.000001)
    assert [ds.ImageIndex for ds in datasets] == [1, 2, 3]
    assert all(ds.NumberOfSlices == 3 and validate(ds) == [] for ds in datasets)


def test_constant_fractional_volume() -> None:
    volume = np.full((2, 3, 3), 0.25)
    values = decoded(build_series(volume, CT_SERIES, affine=make_affine()))
    np.testing.assert_array_equal(values, volume)


def test_rgb_volume_is_stored_as_8_bit_rgb() -> None:
    volume = RNG.integers(0, 256, (2, 3, 5, 3)).astype(np.uint8)
    datasets = build_series(volume, SECONDARY_CAPTURE_SERIES, affine=make_affine())
    ds = datasets[0]
    assert (ds.PhotometricInterpretation, ds.SamplesPerPixel, ds.BitsAllocated) == ("RGB", 3, 8)
    assert ds.PlanarConfiguration == 0
    assert ds["PixelData"].VR == "OB"
    np.testing.assert_array_equal(np.stack([d.pixel_array for d in datasets]), volume)


@pytest.mark.parametrize(
    "volume, message",
    [
        (np.array([[[np.nan, 1.0]]]), "NaN"),
        (np.zeros((2, 2, 2), np.complex64), "complex"),
        (np.zeros((2, 2, 2, 2), np.uint8), "RGB"),
        (np.zeros((0, 2, 2), np.int16), "empty"),
        (np.zeros((2,), np.int16), "volume"),
    ],
)
def test_unencodable_volumes_are_refused(volume: npt.NDArray[np.generic], message: str) -> None:
    with pytest.raises(PixelEncodingError, match=message):
        build_series(volume, CT_SERIES, affine=make_affine())


def test_encoding_refuses_blueprint_that_drops_the_rescale() -> None:
    blueprint = CT_SERIES + Discard("RescaleSlope")
    with pytest.raises(FactoryError, match="Rescale"):
        build_series(VOLUMES["float32"], blueprint, affine=make_affine())
    # An exact volume has no rescale to lose.
    build_series(VOLUMES["int16"], blueprint, affine=make_affine())


def test_encode_pixels_chooses_the_smallest_faithful_storage() -> None:
    assert encode_pixels(VOLUMES["int8"]).dtype == np.int16
    assert encode_pixels(VOLUMES["uint32-unsigned16"]).dtype == np.uint16
    wide = encode_pixels(VOLUMES["int32-wide"])
    assert wide.rescaled and wide.dtype == np.uint16
    assert len(wide.slope) <= 16 and len(wide.intercept) <= 16


def test_every_series_gets_fresh_uids_and_part10_meta(parent: list[Dataset]) -> None:
    first = build_series(VOLUMES["int16"], CT_SERIES, parent, affine=make_affine())
    second = build_series(VOLUMES["int16"], CT_SERIES, parent, affine=make_affine())
    assert first[0].SeriesInstanceUID != second[0].SeriesInstanceUID
    assert first[0].SeriesInstanceUID != parent[0].SeriesInstanceUID
    uids = {ds.SOPInstanceUID for ds in first + second}
    assert len(uids) == 6 and all(uid.startswith("2.25.") for uid in uids)
    # Same patient, study and frame of reference as the parent.
    for keyword in ("PatientID", "PatientName", "StudyInstanceUID", "FrameOfReferenceUID"):
        assert first[0][keyword].value == parent[0][keyword].value
    meta = first[1].file_meta
    assert meta.MediaStorageSOPInstanceUID == first[1].SOPInstanceUID
    assert meta.MediaStorageSOPClassUID == first[1].SOPClassUID
    assert meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert meta.ImplementationVersionName == IMPLEMENTATION_VERSION_NAME


def test_derived_series_references_its_parent(parent: list[Dataset]) -> None:
    datasets = build_series(np.zeros((4, 6, 5), np.int16), CT_SERIES, parent, affine=make_affine())
    related = datasets[0].RelatedSeriesSequence[0]
    assert related.SeriesInstanceUID == parent[0].SeriesInstanceUID
    assert related.StudyInstanceUID == parent[0].StudyInstanceUID
    sources = [ds.SourceImageSequence[0].ReferencedSOPInstanceUID for ds in datasets]
    assert sources == [ds.SOPInstanceUID for ds in parent]
    assert datasets[0].SeriesNumber == 1003
    alone = build_series(np.zeros((1, 2, 2), np.int16), CT_SERIES, affine=make_affine())
    assert "SourceImageSequence" not in alone[0] and "RelatedSeriesSequence" not in alone[0]


def test_grinder_volume_and_single_slice_inputs() -> None:
    class Volume:  # the shape of aiodicom.grinders.numpy.Volume that we rely on
        def __init__(self, array: npt.NDArray[np.int16], affine: npt.NDArray[np.float64]):
            self.array = array
            self.affine = affine

    datasets = build_series(Volume(VOLUMES["int16"], OBLIQUE), CT_SERIES)
    assert len(datasets) == 3
    single = build_series(VOLUMES["int16"][0], CT_SERIES, affine=OBLIQUE)
    assert len(single) == 1 and single[0].Rows == 4 and single[0].Columns == 5


def test_nifti_input_uses_its_ras_affine() -> None:
    data = RNG.integers(0, 1000, (5, 4, 3)).astype(np.int16)  # (i, j, k)
    ras = np.diag([-0.5, 0.75, 2.0, 1.0])
    ras[:3, 3] = [10.0, -20.0, 30.0]
    datasets = build_series(nib.Nifti1Image(data, ras), MR_SERIES)
    assert len(datasets) == 3
    assert (datasets[0].Rows, datasets[0].Columns) == (4, 5)
    np.testing.assert_array_equal(datasets[1].pixel_array, data[:, :, 1].T)
    # RAS (10, -20, 30) is LPS (-10, 20, 30); the RAS x axis -0.5 is LPS +0.5.
    np.testing.assert_allclose([float(v) for v in datasets[0].ImagePositionPatient], [-10, 20, 30])
    np.testing.assert_allclose(
        [float(v) for v in datasets[0].ImageOrientationPatient], [1, 0, 0, 0, -1, 0]
    )
    with pytest.raises(FactoryError, match="own affine"):
        build_series(nib.Nifti1Image(data, ras), MR_SERIES, affine=ras)
    with pytest.raises(PixelEncodingError, match="3-D"):
        build_series(nib.Nifti1Image(np.zeros((2, 2, 2, 2), np.int16), ras), MR_SERIES)


def test_write_series_names_files_by_sop_instance_uid(tmp_path: Path) -> None:
    datasets = build_series(VOLUMES["float32"], CT_SERIES, affine=OBLIQUE)
    paths = write_series(datasets, tmp_path / "out")
    assert sorted(p.name for p in paths) == sorted(f"{d.SOPInstanceUID}.dcm" for d in datasets)
    assert not list((tmp_path / "out").glob("*.part"))
    again = pydicom.dcmread(paths[0])
    assert again.preamble is not None and again.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    np.testing.assert_array_equal(again.pixel_array, datasets[0].pixel_array)


@pytest.mark.dcmtk
@pytest.mark.parametrize("blueprint", [CT_SERIES, PET_SERIES, MR_SERIES, SECONDARY_CAPTURE_SERIES])
def test_dcmtk_parses_every_iod_without_warnings(
    blueprint: object, parent: list[Dataset], dcmdump_clean: DcmdumpCheck, tmp_path: Path
) -> None:
    volume = (RNG.standard_normal((4, 6, 5)) * 100).astype(np.float32)
    datasets = build_series(volume, blueprint, parent, affine=OBLIQUE)  # type: ignore[arg-type]
    assert all(validate(ds) == [] for ds in datasets)
    dcmdump_clean(datasets, tmp_path)


@pytest.mark.dcmtk
def test_dcmtk_parses_private_and_rgb(dcmdump_clean: DcmdumpCheck, tmp_path: Path) -> None:
    from aiodicom.factory import PrivateTag, Static

    blueprint = SECONDARY_CAPTURE_SERIES + Static(PrivateTag(0x0011, "AIODICOM", 1), "x", vr="LO")
    volume = RNG.integers(0, 256, (2, 3, 3, 3)).astype(np.uint8)  # odd pixel byte count
    dcmdump_clean(build_series(volume, blueprint, affine=make_affine()), tmp_path)


@pytest.mark.parametrize(
    "value", [-999.9999999999993, 1 / 3, -1.7976e300, 123456789012345.6, 7e-13, -0.0, 65535.0]
)
def test_ds_text_fits_16_characters_and_keeps_precision(value: float) -> None:
    from aiodicom.factory.elements import format_ds

    text = format_ds(value)
    assert len(text) <= 16
    assert float(text) == pytest.approx(value, rel=1e-13, abs=0)


def test_latin1_parent_names_survive_in_utf8(tmp_path: Path) -> None:
    from factory.helpers import ct_parent

    parent = ct_parent(n_slices=1)
    parent[0].SpecificCharacterSet = "ISO_IR 100"
    parent[0].PatientName = "Müller^Jürgen"
    (path,) = write_series(parent, tmp_path / "parent")
    reread = pydicom.dcmread(path)
    assert reread.PatientName == "Müller^Jürgen"
    derived = build_series(np.zeros((1, 6, 5), np.int16), CT_SERIES, [reread], affine=make_affine())
    (out,) = write_series(derived, tmp_path / "derived")
    again = pydicom.dcmread(out)
    assert again.SpecificCharacterSet == "ISO_IR 192"
    assert again.PatientName == "Müller^Jürgen"
    assert "Müller".encode() in out.read_bytes()
