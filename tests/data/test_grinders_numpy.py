"""The numpy grinder: values, dtypes, ordering, multi-frame, RGB, codecs, errors."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)

from aiodicom import synthetic
from aiodicom.data import LazyDataset
from aiodicom.errors import (
    GeometryError,
    InconsistentSeriesError,
    PixelDecodeError,
)
from aiodicom.grinders.numpy import Volume, numpy_grinder
from tests.data import synth

OBLIQUE = synth.rotation(0.2, -0.5, 0.9)


def _ct(
    n: int = 6, rows: int = 10, columns: int = 7, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    stored = synth.ramp((n, rows, columns), np.uint16, 0, 4095, seed)
    affine = synth.make_affine((2.5, 0.7, 0.8), (-90.0, -100.0, 20.0), OBLIQUE)
    return stored, affine


@pytest.mark.parametrize(
    "transfer_syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian]
)
def test_ct_from_files_in_any_order(tmp_path: Path, transfer_syntax: str) -> None:
    stored, affine = _ct()
    datasets = synth.make_series(stored, affine, slopes=1, intercepts=-1024, bits_stored=12)
    paths = synth.write(datasets, tmp_path, transfer_syntax=transfer_syntax)
    random.Random(3).shuffle(paths)
    volume = numpy_grinder(paths)
    assert volume.array.dtype == np.int16  # 12-bit stored - 1024 fits int16 exactly
    np.testing.assert_array_equal(volume.array, stored.astype(np.int32) - 1024)
    np.testing.assert_allclose(volume.affine, affine, atol=1e-4)
    assert volume.spacing == pytest.approx((2.5, 0.7, 0.8), abs=1e-6)
    assert volume.geometry_known
    assert [d.SOPInstanceUID for d in volume.datasets] == [d.SOPInstanceUID for d in datasets]
    # Headers only: the pixel bytes went straight into the volume.
    assert all("PixelData" not in d for d in volume.datasets)


@pytest.mark.parametrize(
    "transfer_syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian]
)
def test_datasets_lazy_datasets_and_paths_agree(tmp_path: Path, transfer_syntax: str) -> None:
    stored, affine = _ct(4)
    datasets = synth.make_series(stored, affine, slopes=1, intercepts=-1024, bits_stored=12)
    paths = synth.write(datasets, tmp_path, transfer_syntax=transfer_syntax)
    from_paths = numpy_grinder(paths)
    from_read = numpy_grinder([pydicom.dcmread(p) for p in paths])
    lazies = [LazyDataset(p) for p in paths]
    from_lazy = numpy_grinder(lazies[::-1])
    from_memory = numpy_grinder(datasets[::-1])
    for other in (from_read, from_lazy, from_memory):
        np.testing.assert_array_equal(other.array, from_paths.array)
        np.testing.assert_allclose(other.affine, from_paths.affine)
        assert other.array.dtype == from_paths.array.dtype
    assert all(lazy.is_loaded for lazy in lazies)


def test_matches_pydicom_on_the_project_synthetic_study(tmp_path: Path) -> None:
    for name, ts in synthetic.TRANSFER_SYNTAXES.items():  # includes deflated
        paths = synthetic.write_study(
            tmp_path / name, images_per_series=4, rows=16, columns=12, transfer_syntax=ts
        )
        volume = numpy_grinder(paths)
        full = sorted(
            (pydicom.dcmread(p) for p in paths), key=lambda d: float(d.ImagePositionPatient[2])
        )
        expected = np.stack(
            [d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in full]
        )
        np.testing.assert_array_equal(volume.array, expected, err_msg=name)


def test_pet_per_slice_slopes_give_float32(tmp_path: Path) -> None:
    stored = synth.ramp((5, 6, 6), np.int16, -20, 32767, seed=2)
    slopes = [0.123456, 0.5, 1.75, 2.0e-3, 3.3]
    affine = synth.make_affine((3.27, 4.0, 4.0))
    paths = synth.write(
        synth.make_series(stored, affine, modality="PT", slopes=slopes, intercepts=0.5), tmp_path
    )
    volume = numpy_grinder(paths)
    assert volume.array.dtype == np.float32
    expected = stored * np.array(slopes)[:, None, None] + 0.5
    np.testing.assert_allclose(volume.array, expected, rtol=1e-6)


def test_mr_without_rescale_keeps_stored_values(tmp_path: Path) -> None:
    stored = synth.ramp((3, 5, 4), np.uint16, 0, 65535, seed=4)
    paths = synth.write(synth.make_series(stored, modality="MR", optional=False), tmp_path)
    volume = numpy_grinder(paths)
    assert volume.array.dtype == np.uint16
    np.testing.assert_array_equal(volume.array, stored)


@pytest.mark.parametrize(
    ("dtype", "bits", "lo", "hi", "slope", "intercept", "expected"),
    [
        (np.uint8, 8, 0, 255, None, None, np.uint8),
        (np.int8, 8, -128, 127, None, None, np.int8),
        (np.int16, 16, -32768, 32767, None, None, np.int16),
        (np.int16, 16, -32768, 32767, 1, 1000, np.int32),  # shifted past int16
        (np.uint16, 12, 0, 4095, 2, 0, np.uint16),
        (np.uint16, 12, 0, 4095, -1, 0, np.int16),  # negative slope
        (np.int16, 16, -32768, 32767, 1, 32768, np.uint16),  # shifted to non-negative
        (np.uint32, 32, 0, 2**32 - 1, 1, -1, np.int64),
        (np.uint8, 8, 0, 255, 1, -300, np.int16),
    ],
)
def test_smallest_exact_dtype(
    tmp_path: Path, dtype, bits, lo, hi, slope, intercept, expected
) -> None:  # type: ignore[no-untyped-def]
    stored = synth.ramp((3, 4, 5), dtype, lo, hi, seed=5)
    paths = synth.write(
        synth.make_series(stored, slopes=slope, intercepts=intercept, bits_stored=bits), tmp_path
    )
    volume = numpy_grinder(paths)
    assert volume.array.dtype == expected
    exact = stored.astype(np.int64) * (slope or 1) + (intercept or 0)
    np.testing.assert_array_equal(volume.array.astype(np.int64), exact)


@pytest.mark.parametrize("shared", [True, False], ids=["shared-groups", "per-frame-groups"])
def test_enhanced_multiframe_sorted_with_per_frame_rescale(tmp_path: Path, shared: bool) -> None:
    stored = synth.ramp((5, 6, 4), np.uint16, 0, 4095, seed=6)
    affine = synth.make_affine((1.25, 0.5, 0.5), rot=OBLIQUE)
    intercepts = [-1024, -1000, -1024, -900, -1024]
    ds = synth.make_multiframe(
        stored,
        affine,
        intercepts=intercepts,
        shared_orientation=shared,
        frame_order=[3, 1, 4, 0, 2],
        bits_stored=12,
    )
    expected = stored.astype(np.int32) + np.array(intercepts)[:, None, None]
    for source in (ds, synth.write([ds], tmp_path)[0]):
        volume = numpy_grinder([source])
        assert volume.array.dtype == np.int16
        np.testing.assert_array_equal(volume.array, expected)
        np.testing.assert_allclose(volume.affine, affine, atol=1e-4)
        assert len(volume.datasets) == 1


@pytest.mark.parametrize("planar", [False, True])
def test_rgb(tmp_path: Path, planar: bool) -> None:
    rgb = synth.ramp((3, 5, 4, 3), np.uint8, 0, 255, seed=7)
    datasets = synth.make_rgb_series(rgb, planar=planar)
    for source in (datasets, synth.write(datasets, tmp_path)):
        volume = numpy_grinder(source[::-1])
        assert volume.array.shape == (3, 5, 4, 3)
        assert volume.array.dtype == np.uint8
        np.testing.assert_array_equal(volume.array, rgb)


def test_rle_compressed_decodes_through_pydicom(tmp_path: Path) -> None:
    stored, affine = _ct(3)
    datasets = synth.make_series(stored, affine, slopes=1, intercepts=-1024, bits_stored=12)
    for ds in datasets:
        ds.compress(RLELossless)
    paths = synth.write(datasets, tmp_path)
    assert pydicom.dcmread(paths[0]).file_meta.TransferSyntaxUID == RLELossless
    volume = numpy_grinder(paths)
    np.testing.assert_array_equal(volume.array, stored.astype(np.int32) - 1024)


@pytest.mark.dcmtk
@pytest.mark.dcmtk("dcmcjpeg")
def test_jpeg_needs_the_codecs_extra_or_decodes_exactly(tmp_path: Path) -> None:
    stored, affine = _ct(2)
    plain = synth.write(synth.make_series(stored, affine, bits_stored=12), tmp_path / "plain")
    jpeg = []
    for path in plain:
        out = tmp_path / f"j{path.name}"
        subprocess.run(["dcmcjpeg", "+e1", str(path), str(out)], check=True, capture_output=True)
        jpeg.append(out)
    try:
        import pylibjpeg  # noqa: F401
    except ImportError:
        with pytest.raises(PixelDecodeError, match=r"aiodicom\[codecs\]"):
            numpy_grinder(jpeg)
    else:  # lossless JPEG: the codecs must give back the exact values
        np.testing.assert_array_equal(numpy_grinder(jpeg).array, stored)


def test_series_without_geometry_uses_instance_numbers(tmp_path: Path) -> None:
    stored = synth.ramp((4, 3, 3), np.uint8, 0, 255, seed=8)
    datasets = synth.make_series(
        stored, geometry=False, optional=False, instance_numbers=[2, 4, 1, 3]
    )
    volume = numpy_grinder(datasets)
    assert not volume.geometry_known
    np.testing.assert_array_equal(volume.array, stored[[2, 0, 3, 1]])
    np.testing.assert_array_equal(volume.affine, np.eye(4))


def test_volume_is_what_part_b_can_construct() -> None:
    volume = Volume(np.zeros((1, 2, 2), np.int16), np.eye(4), (1.0, 1.0, 1.0), [])
    assert volume.geometry_known


def _mutated(mutate) -> list:  # type: ignore[no-untyped-def]
    stored, affine = _ct(4)
    datasets = synth.make_series(stored, affine)
    mutate(datasets)
    return datasets


@pytest.mark.parametrize(
    ("mutate", "error", "message"),
    [
        (
            lambda d: setattr(d[1], "SeriesInstanceUID", "1.2.3"),
            InconsistentSeriesError,
            "SeriesInstanceUID",
        ),
        (lambda d: setattr(d[2], "BitsAllocated", 8), InconsistentSeriesError, "BitsAllocated"),
        (
            lambda d: setattr(d[2], "PixelRepresentation", 1),
            InconsistentSeriesError,
            "PixelRepresentation",
        ),
        (lambda d: delattr(d[3], "ImagePositionPatient"), GeometryError, "some instances"),
        (lambda d: d.pop(1), GeometryError, "uneven slice spacing"),
        (lambda d: setattr(d[0], "PixelData", d[0].PixelData[:-2]), PixelDecodeError, "bytes"),
        (lambda d: d.clear(), InconsistentSeriesError, "no instances"),
        (
            lambda d: [setattr(x, "BitsAllocated", 12) for x in d],
            PixelDecodeError,
            "cannot decode pixel data",
        ),
    ],
    ids=["series", "bits", "sign", "geometry", "gap", "truncated", "empty", "bits12"],
)
def test_inconsistent_series_are_rejected(mutate, error, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=message):
        numpy_grinder(_mutated(mutate))


def test_truncated_file_is_rejected(tmp_path: Path) -> None:
    stored, affine = _ct(2)
    paths = synth.write(synth.make_series(stored, affine), tmp_path)
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[:-10])
    with pytest.raises(PixelDecodeError):
        numpy_grinder(paths)


def test_rejects_things_that_are_not_instances() -> None:
    with pytest.raises(TypeError):
        numpy_grinder([42])  # type: ignore[list-item]


def test_native_ybr_full_comes_back_as_rgb(tmp_path: Path) -> None:
    from pydicom.pixels import convert_color_space

    rgb = synth.ramp((2, 4, 6, 3), np.uint8, 0, 255, seed=12)
    datasets = synth.make_rgb_series(rgb)
    for ds, frame in zip(datasets, rgb, strict=True):
        ds.PhotometricInterpretation = "YBR_FULL"
        ds.PixelData = convert_color_space(frame, "RGB", "YBR_FULL").tobytes()
    volume = numpy_grinder(synth.write(datasets, tmp_path))
    assert volume.array.dtype == np.uint8
    # YBR is lossy by rounding only: within a couple of levels.
    assert np.abs(volume.array.astype(int) - rgb).max() <= 3


def test_float_pixel_data_is_refused_clearly(tmp_path: Path) -> None:
    ds = synth.make_series(np.zeros((1, 2, 2), np.uint16))[0]
    del ds.PixelData
    ds.BitsAllocated = 32
    ds.FloatPixelData = np.zeros((2, 2), np.float32).tobytes()
    for source in ([ds], synth.write([ds], tmp_path)):
        with pytest.raises(PixelDecodeError, match="float pixel data"):
            numpy_grinder(source)


@pytest.mark.parametrize(
    "transfer_syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian]
)
def test_fast_attribute_reads_match_pydicom(tmp_path: Path, transfer_syntax: str) -> None:
    # The grinder decodes a few raw elements itself for speed; it must agree with pydicom.
    from aiodicom.data import _values
    from aiodicom.data.lazy import read_header

    stored = synth.ramp((2, 3, 4), np.uint32, 0, 2**32 - 1)
    datasets = synth.make_series(
        stored, synth.make_affine(rot=OBLIQUE), slopes=0.25, intercepts=-3, bits_stored=32
    )
    datasets[0].SpacingBetweenSlices = ""  # empty: absent for us, "" for pydicom
    datasets[0].RescaleSlope = "1\\\\2"  # malformed DS: pydicom decides
    path = synth.write(datasets, tmp_path, transfer_syntax=transfer_syntax)[0]
    attrs = [a for a in vars(_values).values() if isinstance(a, _values.Attr)]
    assert len(attrs) >= 15
    for attr in attrs:
        header, _ = read_header(path)
        ours = _values.value(header, attr)
        reference, _ = read_header(path)
        theirs = reference.get(attr.keyword)
        if theirs in (None, ""):
            assert ours is None, attr.keyword
        elif attr.keyword == "RescaleSlope":  # malformed: pydicom's own value
            assert list(ours) == list(theirs) == ["1", "", "2"]
        elif attr.vr in ("DS", "IS") and not isinstance(ours, (int, float)):
            assert [float(x) for x in ours] == [float(x) for x in theirs], attr.keyword
        else:
            assert ours == theirs, attr.keyword


def test_malformed_rescale_is_refused_not_guessed() -> None:
    datasets = synth.make_series(np.zeros((2, 2, 2), np.uint16), slopes=1, intercepts=0)
    datasets[1].RescaleSlope = "1\\2"
    with pytest.raises(InconsistentSeriesError, match="RescaleSlope is not a number"):
        numpy_grinder(datasets)


def test_benchmark_script_runs_and_checks_values() -> None:
    # No speed asserted: this only keeps benchmarks/bench_numpy_grinder.py working.
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_numpy_grinder.py"
    result = subprocess.run(
        [sys.executable, str(script), "--slices", "3", "--size", "16", "--repeat", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "voxel values agree" in result.stdout
    assert "int16 volume (3, 16, 16)" in result.stdout


def _classic_multiframe(stored: np.ndarray, affine: np.ndarray, spacing: bool) -> object:
    """A multi-frame image without functional groups (NM / legacy style)."""
    first = synth.make_series(stored[:1], affine)[0]
    first.NumberOfFrames = stored.shape[0]
    if spacing:
        first.SpacingBetweenSlices = f"{np.linalg.norm(affine[:3, 2]):.10g}"
    first.PixelData = stored.tobytes()
    return first


def test_classic_multiframe_follows_spacing_between_slices() -> None:
    stored = synth.ramp((4, 3, 5), np.uint16, 0, 4095, seed=13)
    affine = synth.make_affine((3.5, 1.0, 2.0), rot=OBLIQUE)
    volume = numpy_grinder([_classic_multiframe(stored, affine, spacing=True)])
    assert volume.geometry_known
    np.testing.assert_allclose(volume.affine, affine, atol=1e-4)
    np.testing.assert_array_equal(volume.array, stored)


def test_classic_multiframe_without_spacing_has_nominal_geometry() -> None:
    stored = synth.ramp((4, 3, 5), np.uint16, 0, 4095, seed=14)
    volume = numpy_grinder([_classic_multiframe(stored, synth.make_affine(), spacing=False)])
    assert not volume.geometry_known
    np.testing.assert_array_equal(volume.array, stored)  # stored frame order


@pytest.mark.parametrize(
    "transfer_syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian]
)
def test_project_multiframe_secondary_capture(tmp_path: Path, transfer_syntax: str) -> None:
    path = synthetic.write_large_multiframe(
        tmp_path / "mf.dcm",
        size_bytes=3 * 16 * 8 * 2,
        rows=16,
        columns=8,
        transfer_syntax=transfer_syntax,
    )
    volume = numpy_grinder([path])
    assert volume.array.shape == (3, 16, 8)
    assert not volume.geometry_known
    np.testing.assert_array_equal(volume.array, pydicom.dcmread(path).pixel_array)


def test_one_bit_masks_are_unpacked() -> None:
    from pydicom.pixels import pack_bits

    mask = synth.ramp((3, 4, 8), np.uint8, 0, 1, seed=15)
    datasets = synth.make_series(mask)
    for ds, frame in zip(datasets, mask, strict=True):
        ds.BitsAllocated = ds.BitsStored = 1
        ds.HighBit = 0
        ds.PixelData = pack_bits(frame)
    volume = numpy_grinder(datasets[::-1])
    assert volume.array.dtype == np.uint8
    np.testing.assert_array_equal(volume.array, mask)


_STORED = {
    np.uint8: (0, 255),
    np.int8: (-128, 127),
    np.uint16: (0, 65535),
    np.int16: (-32768, 32767),
}


@settings(max_examples=40, deadline=None)
@given(
    dtype=st.sampled_from(sorted(_STORED, key=str)),
    slope=st.sampled_from([None, 1, 2, -1, 3]),
    intercept=st.integers(-70000, 70000),
    shape=st.tuples(st.integers(1, 4), st.integers(1, 5), st.integers(1, 5)),
    seed=st.integers(0, 2**16),
)
def test_any_integer_rescale_is_exact_in_the_smallest_dtype(  # type: ignore[no-untyped-def]
    dtype, slope, intercept, shape, seed
) -> None:
    lo, hi = _STORED[dtype]
    stored = synth.ramp(shape, dtype, lo, hi, seed)
    datasets = synth.make_series(stored, slopes=slope, intercepts=intercept if slope else None)
    random.Random(seed).shuffle(datasets)
    volume = numpy_grinder(datasets)
    expected = stored.astype(np.int64) * (slope or 1) + (intercept if slope else 0)
    np.testing.assert_array_equal(volume.array.astype(np.int64), expected)
    # Smallest: the declared range does not fit the next smaller type of that kind.
    ends = [v * (slope or 1) + (intercept if slope else 0) for v in (lo, hi)]
    out = volume.array.dtype
    assert np.iinfo(out).min <= min(ends) and max(ends) <= np.iinfo(out).max
    if out.itemsize > 1:
        smaller = np.dtype(f"{out.kind}{out.itemsize // 2}")
        info = np.iinfo(smaller)
        assert min(ends) < info.min or max(ends) > info.max
    if out.kind == "i":  # signed only when something is negative
        assert min(ends) < 0


@pytest.mark.dcmtk
@pytest.mark.dcmtk("dcmconv")
@pytest.mark.parametrize(
    "tool",
    [["dcmconv", "+ti"], ["dcmconv", "+te"], ["dcmconv", "+tb"], ["dcmconv", "+td"], ["dcmcrle"]],
    ids=["implicit", "explicit", "big-endian", "deflated", "rle"],
)
def test_files_written_by_dcmtk(tmp_path: Path, tool: list[str]) -> None:
    # An independent writer: our byte-level pixel location must hold for its files too.
    stored = synth.ramp((3, 7, 5), np.int16, -2000, 2000, seed=16)
    affine = synth.make_affine((1.5, 0.9, 0.6), rot=OBLIQUE)
    paths = synth.write(synth.make_series(stored, affine, slopes=2, intercepts=7), tmp_path / "in")
    converted = []
    for path in paths:
        out = tmp_path / f"dcmtk-{path.name}"
        subprocess.run([*tool, str(path), str(out)], check=True, capture_output=True)
        converted.append(out)
    volume = numpy_grinder(converted[::-1])
    np.testing.assert_array_equal(volume.array, stored.astype(np.int32) * 2 + 7)
    np.testing.assert_allclose(volume.affine, affine, atol=1e-4)
