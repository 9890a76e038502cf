"""Display colours: sRGB (RT ROI Display Color) <-> DICOM CIELab (SEG segments).

An RT Structure Set gives each ROI an sRGB triple; a SEG recommends a CIELab colour
(D65 white), each component scaled to 0..65535 (PS3.3 C.10.7.1.1). Converting both
ways keeps a ROI's colour when a structure set becomes a SEG and back (to within one
step of 255).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["dicom_lab_to_rgb", "rgb_to_dicom_lab"]

_WHITE = (0.95047, 1.0, 1.08883)  # D65
_TO_XYZ = ((0.4124, 0.3576, 0.1805), (0.2126, 0.7152, 0.0722), (0.0193, 0.1192, 0.9505))
_TO_RGB = ((3.2406, -1.5372, -0.4986), (-0.9689, 1.8758, 0.0415), (0.0557, -0.2040, 1.0570))
_DELTA = 6.0 / 29.0


def _product(matrix: Sequence[Sequence[float]], vector: Sequence[float]) -> list[float]:
    return [sum(m * v for m, v in zip(row, vector, strict=True)) for row in matrix]


def _f(t: float) -> float:
    return t ** (1 / 3) if t > _DELTA**3 else t / (3 * _DELTA**2) + 4 / 29


def _f_inverse(t: float) -> float:
    return t**3 if t > _DELTA else 3 * _DELTA**2 * (t - 4 / 29)


def _linear(c: int) -> float:
    s = c / 255.0
    return s / 12.92 if s <= 0.04045 else ((s + 0.055) / 1.055) ** 2.4


def _gamma(c: float) -> int:
    c = min(max(c, 0.0), 1.0)
    s = 12.92 * c if c <= 0.0031308 else 1.055 * c ** (1 / 2.4) - 0.055
    return int(round(s * 255))


def rgb_to_dicom_lab(rgb: Sequence[int]) -> list[int]:
    """sRGB 0..255 as a RecommendedDisplayCIELabValue."""
    x, y, z = (
        v / w for v, w in zip(_product(_TO_XYZ, [_linear(c) for c in rgb]), _WHITE, strict=True)
    )
    lightness = 116 * _f(y) - 16
    a = 500 * (_f(x) - _f(y))
    b = 200 * (_f(y) - _f(z))
    return [
        int(round(min(max(lightness, 0.0), 100.0) * 65535 / 100)),
        int(round((min(max(a, -128.0), 127.0) + 128) * 65535 / 255)),
        int(round((min(max(b, -128.0), 127.0) + 128) * 65535 / 255)),
    ]


def dicom_lab_to_rgb(lab: Sequence[int]) -> tuple[int, int, int]:
    """A RecommendedDisplayCIELabValue as sRGB 0..255 (clipped to the sRGB gamut)."""
    lightness = lab[0] * 100.0 / 65535.0
    a = lab[1] * 255.0 / 65535.0 - 128.0
    b = lab[2] * 255.0 / 65535.0 - 128.0
    fy = (lightness + 16.0) / 116.0
    xyz = [
        w * _f_inverse(t) for w, t in zip(_WHITE, (fy + a / 500.0, fy, fy - b / 200.0), strict=True)
    ]
    r, g, bl = (_gamma(c) for c in _product(_TO_RGB, xyz))
    return (r, g, bl)
