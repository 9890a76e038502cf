"""Display colours between RT Structure Sets (sRGB) and SEGs (scaled CIELab)."""

from __future__ import annotations

import itertools

from aiodicom.data.colour import dicom_lab_to_rgb, rgb_to_dicom_lab


def _close(found: list[int], expected: list[int]) -> bool:
    return all(abs(f - e) <= 8 for f, e in zip(found, expected, strict=True))  # 8 of 65535


def test_known_colours() -> None:
    assert _close(rgb_to_dicom_lab((255, 255, 255)), [65535, 32896, 32896])  # L 100, a = b = 0
    assert _close(rgb_to_dicom_lab((0, 0, 0)), [0, 32896, 32896])
    red = rgb_to_dicom_lab((255, 0, 0))
    assert red[1] > 50000 and red[2] > 40000  # strongly +a (red), +b (yellowish)


def test_every_colour_survives_the_round_trip() -> None:
    for rgb in itertools.product(range(0, 256, 15), repeat=3):
        assert dicom_lab_to_rgb(rgb_to_dicom_lab(rgb)) == rgb
