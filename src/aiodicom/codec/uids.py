"""UIDs aiodicom needs by name: transfer syntaxes, SOP classes, our own root.

The tables below were generated from pydicom's UID dictionary (pydicom 3.0,
DICOM 2024c) plus the storage classes pynetdicom 3.0 knows beyond it, and are
written out literally so that importing them costs nothing and does not
depend on the installed pydicom.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

# Our implementation identity. "2.25." UIDs are derived from a UUID (PS3.5 B.2)
# and need no registered root; this one is fixed for aiodicom.
UID_ROOT = "2.25."
IMPLEMENTATION_CLASS_UID = "2.25.176478331178914385496393620547474938716"
IMPLEMENTATION_VERSION_NAME = "AIODICOM_010"

APPLICATION_CONTEXT_NAME = "1.2.840.10008.3.1.1.1"

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"

#: Uncompressed transfer syntaxes in the order an SCP prefers them.
UNCOMPRESSED_TRANSFER_SYNTAXES: tuple[str, ...] = (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
)

VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"


def new_uid() -> str:
    """Return a fresh globally unique UID under the 2.25 (UUID) root."""
    import uuid  # here, not at the top: it imports platform, a cost every command paid

    return UID_ROOT + str(uuid.uuid4().int)


def is_compressed(transfer_syntax: str) -> bool:
    """True for encapsulated (compressed pixel data) transfer syntaxes.

    Deflate compresses the whole data set but is not encapsulated, so it counts
    as uncompressed here: its pixel data are native once inflated.
    """
    return transfer_syntax not in UNCOMPRESSED_TRANSFER_SYNTAXES and (
        transfer_syntax != DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
    )


#: Transfer syntaxes whose whole data set is deflated (not only the pixel data).
DEFLATED_DATA_SET_SYNTAXES: Final[frozenset[str]] = frozenset(
    {
        DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
        "1.2.840.10008.1.2.4.95",  # JPIP Referenced Deflate
        "1.2.840.10008.1.2.4.205",  # JPIP HTJ2K Referenced Deflate
    }
)

#: Compressed transfer syntaxes that are lossless: a file in one of them may be
#: decompressed for a peer that accepted no compressed context, and stays the same
#: instance (same SOP Instance UID), as DCMTK's ``dcmsend`` does.
LOSSLESS_COMPRESSED_TRANSFER_SYNTAXES: Final[frozenset[str]] = frozenset(
    {
        "1.2.840.10008.1.2.4.57",  # JPEG Lossless (Process 14)
        "1.2.840.10008.1.2.4.70",  # JPEG Lossless, first-order prediction
        "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
        "1.2.840.10008.1.2.4.90",  # JPEG 2000 (Lossless Only)
        "1.2.840.10008.1.2.4.201",  # HTJ2K (Lossless Only)
        "1.2.840.10008.1.2.4.202",  # HTJ2K with RPCL (Lossless Only)
        "1.2.840.10008.1.2.5",  # RLE Lossless
    }
)

#: Every transfer syntax in the standard, UID -> name (retired ones marked).
KNOWN_TRANSFER_SYNTAXES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "1.2.840.10008.1.2": "Implicit VR Little Endian",
        "1.2.840.10008.1.2.1": "Explicit VR Little Endian",
        "1.2.840.10008.1.2.1.98": "Encapsulated Uncompressed Explicit VR Little Endian",
        "1.2.840.10008.1.2.1.99": "Deflated Explicit VR Little Endian",
        "1.2.840.10008.1.2.2": "Explicit VR Big Endian",  # retired
        "1.2.840.10008.1.2.4.50": "JPEG Baseline (Process 1)",
        "1.2.840.10008.1.2.4.51": "JPEG Extended (Process 2 and 4)",
        "1.2.840.10008.1.2.4.52": "JPEG Extended (Process 3 and 5)",  # retired
        "1.2.840.10008.1.2.4.53": "JPEG Spectral Selection, Non-Hierarchical (Process 6 and 8)",  # retired
        "1.2.840.10008.1.2.4.54": "JPEG Spectral Selection, Non-Hierarchical (Process 7 and 9)",  # retired
        "1.2.840.10008.1.2.4.55": "JPEG Full Progression, Non-Hierarchical (Process 10 and 12)",  # retired
        "1.2.840.10008.1.2.4.56": "JPEG Full Progression, Non-Hierarchical (Process 11 and 13)",  # retired
        "1.2.840.10008.1.2.4.57": "JPEG Lossless, Non-Hierarchical (Process 14)",
        "1.2.840.10008.1.2.4.58": "JPEG Lossless, Non-Hierarchical (Process 15)",  # retired
        "1.2.840.10008.1.2.4.59": "JPEG Extended, Hierarchical (Process 16 and 18)",  # retired
        "1.2.840.10008.1.2.4.60": "JPEG Extended, Hierarchical (Process 17 and 19)",  # retired
        "1.2.840.10008.1.2.4.61": "JPEG Spectral Selection, Hierarchical (Process 20 and 22)",  # retired
        "1.2.840.10008.1.2.4.62": "JPEG Spectral Selection, Hierarchical (Process 21 and 23)",  # retired
        "1.2.840.10008.1.2.4.63": "JPEG Full Progression, Hierarchical (Process 24 and 26)",  # retired
        "1.2.840.10008.1.2.4.64": "JPEG Full Progression, Hierarchical (Process 25 and 27)",  # retired
        "1.2.840.10008.1.2.4.65": "JPEG Lossless, Hierarchical (Process 28)",  # retired
        "1.2.840.10008.1.2.4.66": "JPEG Lossless, Hierarchical (Process 29)",  # retired
        "1.2.840.10008.1.2.4.70": "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1])",
        "1.2.840.10008.1.2.4.80": "JPEG-LS Lossless Image Compression",
        "1.2.840.10008.1.2.4.81": "JPEG-LS Lossy (Near-Lossless) Image Compression",
        "1.2.840.10008.1.2.4.90": "JPEG 2000 Image Compression (Lossless Only)",
        "1.2.840.10008.1.2.4.91": "JPEG 2000 Image Compression",
        "1.2.840.10008.1.2.4.92": "JPEG 2000 Part 2 Multi-component Image Compression (Lossless Only)",
        "1.2.840.10008.1.2.4.93": "JPEG 2000 Part 2 Multi-component Image Compression",
        "1.2.840.10008.1.2.4.94": "JPIP Referenced",
        "1.2.840.10008.1.2.4.95": "JPIP Referenced Deflate",
        "1.2.840.10008.1.2.4.100": "MPEG2 Main Profile / Main Level",
        "1.2.840.10008.1.2.4.100.1": "Fragmentable MPEG2 Main Profile / Main Level",
        "1.2.840.10008.1.2.4.101": "MPEG2 Main Profile / High Level",
        "1.2.840.10008.1.2.4.101.1": "Fragmentable MPEG2 Main Profile / High Level",
        "1.2.840.10008.1.2.4.102": "MPEG-4 AVC/H.264 High Profile / Level 4.1",
        "1.2.840.10008.1.2.4.102.1": "Fragmentable MPEG-4 AVC/H.264 High Profile / Level 4.1",
        "1.2.840.10008.1.2.4.103": "MPEG-4 AVC/H.264 BD-compatible High Profile / Level 4.1",
        "1.2.840.10008.1.2.4.103.1": "Fragmentable MPEG-4 AVC/H.264 BD-compatible High Profile / Level 4.1",
        "1.2.840.10008.1.2.4.104": "MPEG-4 AVC/H.264 High Profile / Level 4.2 For 2D Video",
        "1.2.840.10008.1.2.4.104.1": "Fragmentable MPEG-4 AVC/H.264 High Profile / Level 4.2 For 2D Video",
        "1.2.840.10008.1.2.4.105": "MPEG-4 AVC/H.264 High Profile / Level 4.2 For 3D Video",
        "1.2.840.10008.1.2.4.105.1": "Fragmentable MPEG-4 AVC/H.264 High Profile / Level 4.2 For 3D Video",
        "1.2.840.10008.1.2.4.106": "MPEG-4 AVC/H.264 Stereo High Profile / Level 4.2",
        "1.2.840.10008.1.2.4.106.1": "Fragmentable MPEG-4 AVC/H.264 Stereo High Profile / Level 4.2",
        "1.2.840.10008.1.2.4.107": "HEVC/H.265 Main Profile / Level 5.1",
        "1.2.840.10008.1.2.4.108": "HEVC/H.265 Main 10 Profile / Level 5.1",
        "1.2.840.10008.1.2.4.110": "JPEG XL Lossless",
        "1.2.840.10008.1.2.4.111": "JPEG XL JPEG Recompression",
        "1.2.840.10008.1.2.4.112": "JPEG XL",
        "1.2.840.10008.1.2.4.201": "High-Throughput JPEG 2000 Image Compression (Lossless Only)",
        "1.2.840.10008.1.2.4.202": "High-Throughput JPEG 2000 with RPCL Options Image Compression (Lossless Only)",
        "1.2.840.10008.1.2.4.203": "High-Throughput JPEG 2000 Image Compression",
        "1.2.840.10008.1.2.4.204": "JPIP HTJ2K Referenced",
        "1.2.840.10008.1.2.4.205": "JPIP HTJ2K Referenced Deflate",
        "1.2.840.10008.1.2.5": "RLE Lossless",
        "1.2.840.10008.1.2.6.1": "RFC 2557 MIME encapsulation",  # retired
        "1.2.840.10008.1.2.6.2": "XML Encoding",  # retired
        "1.2.840.10008.1.2.7.1": "SMPTE ST 2110-20 Uncompressed Progressive Active Video",
        "1.2.840.10008.1.2.7.2": "SMPTE ST 2110-20 Uncompressed Interlaced Active Video",
        "1.2.840.10008.1.2.7.3": "SMPTE ST 2110-30 PCM Digital Audio",
        "1.2.840.10008.1.2.8.1": "Deflated Image Frame Compression",
        "1.2.840.10008.1.20": "Papyrus 3 Implicit VR Little Endian",  # retired
    }
)

# Every Storage SOP class (current and retired), UID -> name. Excludes Media
# Storage Directory (never sent over C-STORE) and Storage Commitment (N-ACTION).
_STORAGE: Final[dict[str, str]] = {
    "1.2.840.10008.5.1.1.27": "Stored Print Storage SOP Class",  # retired
    "1.2.840.10008.5.1.1.29": "Hardcopy Grayscale Image Storage SOP Class",  # retired
    "1.2.840.10008.5.1.1.30": "Hardcopy Color Image Storage SOP Class",  # retired
    "1.2.840.10008.5.1.4.1.1.1": "Computed Radiography Image Storage",
    "1.2.840.10008.5.1.4.1.1.1.1": "Digital X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "Digital X-Ray Image Storage - For Processing",
    "1.2.840.10008.5.1.4.1.1.1.2": "Digital Mammography X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.2.1": "Digital Mammography X-Ray Image Storage - For Processing",
    "1.2.840.10008.5.1.4.1.1.1.3": "Digital Intra-Oral X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.3.1": "Digital Intra-Oral X-Ray Image Storage - For Processing",
    "1.2.840.10008.5.1.4.1.1.2": "CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.2": "Legacy Converted Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.3": "Ultrasound Multi-frame Image Storage",  # retired
    "1.2.840.10008.5.1.4.1.1.3.1": "Ultrasound Multi-frame Image Storage",
    "1.2.840.10008.5.1.4.1.1.4": "MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.2": "MR Spectroscopy Storage",
    "1.2.840.10008.5.1.4.1.1.4.3": "Enhanced MR Color Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.4": "Legacy Converted Enhanced MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.5": "Nuclear Medicine Image Storage",  # retired
    "1.2.840.10008.5.1.4.1.1.6": "Ultrasound Image Storage",  # retired
    "1.2.840.10008.5.1.4.1.1.6.1": "Ultrasound Image Storage",
    "1.2.840.10008.5.1.4.1.1.6.2": "Enhanced US Volume Storage",
    "1.2.840.10008.5.1.4.1.1.6.3": "Photoacoustic Image Storage",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.1": "Multi-frame Single Bit Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.2": "Multi-frame Grayscale Byte Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.3": "Multi-frame Grayscale Word Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.4": "Multi-frame True Color Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.8": "Standalone Overlay Storage",  # retired
    "1.2.840.10008.5.1.4.1.1.9": "Standalone Curve Storage",  # retired
    "1.2.840.10008.5.1.4.1.1.9.1": "Waveform Storage - Trial",  # retired
    "1.2.840.10008.5.1.4.1.1.9.1.1": "12-lead ECG Waveform Storage",
    "1.2.840.10008.5.1.4.1.1.9.1.2": "General ECG Waveform Storage",
    "1.2.840.10008.5.1.4.1.1.9.1.3": "Ambulatory ECG Waveform Storage",
    "1.2.840.10008.5.1.4.1.1.9.1.4": "General 32-bit ECG Waveform Storage",
    "1.2.840.10008.5.1.4.1.1.9.2.1": "Hemodynamic Waveform Storage",
    "1.2.840.10008.5.1.4.1.1.9.3.1": "Cardiac Electrophysiology Waveform Storage",
    "1.2.840.10008.5.1.4.1.1.9.4.1": "Basic Voice Audio Waveform Storage",
    "1.2.840.10008.5.1.4.1.1.9.4.2": "General Audio Waveform Storage",
    "1.2.840.10008.5.1.4.1.1.9.5.1": "Arterial Pulse Waveform Storage",
    "1.2.840.10008.5.1.4.1.1.9.6.1": "Respiratory Waveform Storage",
    "1.2.840.10008.5.1.4.1.1.9.6.2": "Multi-channel Respiratory Waveform Storage",
    "1.2.840.10008.5.1.4.1.1.9.7.1": "Routine Scalp Electroencephalogram Waveform Storage",
    "1.2.840.10008.5.1.4.1.1.9.7.2": "Electromyogram Waveform Storage",
    "1.2.840.10008.5.1.4.1.1.9.7.3": "Electrooculogram Waveform Storage",
    "1.2.840.10008.5.1.4.1.1.9.7.4": "Sleep Electroencephalogram Waveform Storage",
    "1.2.840.10008.5.1.4.1.1.9.8.1": "Body Position Waveform Storage",
    "1.2.840.10008.5.1.4.1.1.9.100.1": "Waveform Presentation State Storage",
    "1.2.840.10008.5.1.4.1.1.9.100.2": "Waveform Acquisition Presentation State Storage",
    "1.2.840.10008.5.1.4.1.1.10": "Standalone Modality LUT Storage",  # retired
    "1.2.840.10008.5.1.4.1.1.11": "Standalone VOI LUT Storage",  # retired
    "1.2.840.10008.5.1.4.1.1.11.1": "Grayscale Softcopy Presentation State Storage",
    "1.2.840.10008.5.1.4.1.1.11.2": "Color Softcopy Presentation State Storage",
    "1.2.840.10008.5.1.4.1.1.11.3": "Pseudo-Color Softcopy Presentation State Storage",
    "1.2.840.10008.5.1.4.1.1.11.4": "Blending Softcopy Presentation State Storage",
    "1.2.840.10008.5.1.4.1.1.11.5": "XA/XRF Grayscale Softcopy Presentation State Storage",
    "1.2.840.10008.5.1.4.1.1.11.6": "Grayscale Planar MPR Volumetric Presentation State Storage",
    "1.2.840.10008.5.1.4.1.1.11.7": "Compositing Planar MPR Volumetric Presentation State Storage",
    "1.2.840.10008.5.1.4.1.1.11.8": "Advanced Blending Presentation State Storage",
    "1.2.840.10008.5.1.4.1.1.11.9": "Volume Rendering Volumetric Presentation State Storage",
    "1.2.840.10008.5.1.4.1.1.11.10": "Segmented Volume Rendering Volumetric Presentation State Storage",
    "1.2.840.10008.5.1.4.1.1.11.11": "Multiple Volume Rendering Volumetric Presentation State Storage",
    "1.2.840.10008.5.1.4.1.1.11.12": "Variable Modality LUT Softcopy Presentation State Storage",
    "1.2.840.10008.5.1.4.1.1.12.1": "X-Ray Angiographic Image Storage",
    "1.2.840.10008.5.1.4.1.1.12.1.1": "Enhanced XA Image Storage",
    "1.2.840.10008.5.1.4.1.1.12.2": "X-Ray Radiofluoroscopic Image Storage",
    "1.2.840.10008.5.1.4.1.1.12.2.1": "Enhanced XRF Image Storage",
    "1.2.840.10008.5.1.4.1.1.12.3": "X-Ray Angiographic Bi-Plane Image Storage",  # retired
    "1.2.840.10008.5.1.4.1.1.13.1.1": "X-Ray 3D Angiographic Image Storage",
    "1.2.840.10008.5.1.4.1.1.13.1.2": "X-Ray 3D Craniofacial Image Storage",
    "1.2.840.10008.5.1.4.1.1.13.1.3": "Breast Tomosynthesis Image Storage",
    "1.2.840.10008.5.1.4.1.1.13.1.4": "Breast Projection X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.13.1.5": "Breast Projection X-Ray Image Storage - For Processing",
    "1.2.840.10008.5.1.4.1.1.14.1": "Intravascular Optical Coherence Tomography Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.14.2": "Intravascular Optical Coherence Tomography Image Storage - For Processing",
    "1.2.840.10008.5.1.4.1.1.20": "Nuclear Medicine Image Storage",
    "1.2.840.10008.5.1.4.1.1.30": "Parametric Map Storage",
    "1.2.840.10008.5.1.4.1.1.66": "Raw Data Storage",
    "1.2.840.10008.5.1.4.1.1.66.1": "Spatial Registration Storage",
    "1.2.840.10008.5.1.4.1.1.66.2": "Spatial Fiducials Storage",
    "1.2.840.10008.5.1.4.1.1.66.3": "Deformable Spatial Registration Storage",
    "1.2.840.10008.5.1.4.1.1.66.4": "Segmentation Storage",
    "1.2.840.10008.5.1.4.1.1.66.5": "Surface Segmentation Storage",
    "1.2.840.10008.5.1.4.1.1.66.6": "Tractography Results Storage",
    "1.2.840.10008.5.1.4.1.1.66.7": "Label Map Segmentation Storage",
    "1.2.840.10008.5.1.4.1.1.66.8": "Height Map Segmentation Storage",
    "1.2.840.10008.5.1.4.1.1.67": "Real World Value Mapping Storage",
    "1.2.840.10008.5.1.4.1.1.68.1": "Surface Scan Mesh Storage",
    "1.2.840.10008.5.1.4.1.1.68.2": "Surface Scan Point Cloud Storage",
    "1.2.840.10008.5.1.4.1.1.77.1": "VL Image Storage - Trial",  # retired
    "1.2.840.10008.5.1.4.1.1.77.1.1": "VL Endoscopic Image Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.1.1": "Video Endoscopic Image Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.2": "VL Microscopic Image Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.2.1": "Video Microscopic Image Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.3": "VL Slide-Coordinates Microscopic Image Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.4": "VL Photographic Image Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.4.1": "Video Photographic Image Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.5.1": "Ophthalmic Photography 8 Bit Image Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.5.2": "Ophthalmic Photography 16 Bit Image Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.5.3": "Stereometric Relationship Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.5.4": "Ophthalmic Tomography Image Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.5.5": "Wide Field Ophthalmic Photography Stereographic Projection Image Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.5.6": "Wide Field Ophthalmic Photography 3D Coordinates Image Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.5.7": "Ophthalmic Optical Coherence Tomography En Face Image Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.5.8": "Ophthalmic Optical Coherence Tomography B-scan Volume Analysis Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.6": "VL Whole Slide Microscopy Image Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.7": "Dermoscopic Photography Image Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.8": "Confocal Microscopy Image Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.9": "Confocal Microscopy Tiled Pyramidal Image Storage",
    "1.2.840.10008.5.1.4.1.1.77.2": "VL Multi-frame Image Storage - Trial",  # retired
    "1.2.840.10008.5.1.4.1.1.78.1": "Lensometry Measurements Storage",
    "1.2.840.10008.5.1.4.1.1.78.2": "Autorefraction Measurements Storage",
    "1.2.840.10008.5.1.4.1.1.78.3": "Keratometry Measurements Storage",
    "1.2.840.10008.5.1.4.1.1.78.4": "Subjective Refraction Measurements Storage",
    "1.2.840.10008.5.1.4.1.1.78.5": "Visual Acuity Measurements Storage",
    "1.2.840.10008.5.1.4.1.1.78.6": "Spectacle Prescription Report Storage",
    "1.2.840.10008.5.1.4.1.1.78.7": "Ophthalmic Axial Measurements Storage",
    "1.2.840.10008.5.1.4.1.1.78.8": "Intraocular Lens Calculations Storage",
    "1.2.840.10008.5.1.4.1.1.79.1": "Macular Grid Thickness and Volume Report Storage",
    "1.2.840.10008.5.1.4.1.1.80.1": "Ophthalmic Visual Field Static Perimetry Measurements Storage",
    "1.2.840.10008.5.1.4.1.1.81.1": "Ophthalmic Thickness Map Storage",
    "1.2.840.10008.5.1.4.1.1.82.1": "Corneal Topography Map Storage",
    "1.2.840.10008.5.1.4.1.1.88.1": "Text SR Storage - Trial",  # retired
    "1.2.840.10008.5.1.4.1.1.88.2": "Audio SR Storage - Trial",  # retired
    "1.2.840.10008.5.1.4.1.1.88.3": "Detail SR Storage - Trial",  # retired
    "1.2.840.10008.5.1.4.1.1.88.4": "Comprehensive SR Storage - Trial",  # retired
    "1.2.840.10008.5.1.4.1.1.88.11": "Basic Text SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.22": "Enhanced SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.33": "Comprehensive SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.34": "Comprehensive 3D SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.35": "Extensible SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.40": "Procedure Log Storage",
    "1.2.840.10008.5.1.4.1.1.88.50": "Mammography CAD SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.59": "Key Object Selection Document Storage",
    "1.2.840.10008.5.1.4.1.1.88.65": "Chest CAD SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.67": "X-Ray Radiation Dose SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.68": "Radiopharmaceutical Radiation Dose SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.69": "Colon CAD SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.70": "Implantation Plan SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.71": "Acquisition Context SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.72": "Simplified Adult Echo SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.73": "Patient Radiation Dose SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.74": "Planned Imaging Agent Administration SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.75": "Performed Imaging Agent Administration SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.76": "Enhanced X-Ray Radiation Dose SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.77": "Waveform Annotation SR Storage",
    "1.2.840.10008.5.1.4.1.1.90.1": "Content Assessment Results Storage",
    "1.2.840.10008.5.1.4.1.1.91.1": "Microscopy Bulk Simple Annotations Storage",
    "1.2.840.10008.5.1.4.1.1.104.1": "Encapsulated PDF Storage",
    "1.2.840.10008.5.1.4.1.1.104.2": "Encapsulated CDA Storage",
    "1.2.840.10008.5.1.4.1.1.104.3": "Encapsulated STL Storage",
    "1.2.840.10008.5.1.4.1.1.104.4": "Encapsulated OBJ Storage",
    "1.2.840.10008.5.1.4.1.1.104.5": "Encapsulated MTL Storage",
    "1.2.840.10008.5.1.4.1.1.128": "Positron Emission Tomography Image Storage",
    "1.2.840.10008.5.1.4.1.1.128.1": "Legacy Converted Enhanced PET Image Storage",
    "1.2.840.10008.5.1.4.1.1.129": "Standalone PET Curve Storage",  # retired
    "1.2.840.10008.5.1.4.1.1.130": "Enhanced PET Image Storage",
    "1.2.840.10008.5.1.4.1.1.131": "Basic Structured Display Storage",
    "1.2.840.10008.5.1.4.1.1.200.1": "CT Defined Procedure Protocol Storage",
    "1.2.840.10008.5.1.4.1.1.200.2": "CT Performed Procedure Protocol Storage",
    "1.2.840.10008.5.1.4.1.1.200.3": "Protocol Approval Storage",
    "1.2.840.10008.5.1.4.1.1.200.7": "XA Defined Procedure Protocol Storage",
    "1.2.840.10008.5.1.4.1.1.200.8": "XA Performed Procedure Protocol Storage",
    "1.2.840.10008.5.1.4.1.1.201.1": "Inventory Storage",
    "1.2.840.10008.5.1.4.1.1.481.1": "RT Image Storage",
    "1.2.840.10008.5.1.4.1.1.481.2": "RT Dose Storage",
    "1.2.840.10008.5.1.4.1.1.481.3": "RT Structure Set Storage",
    "1.2.840.10008.5.1.4.1.1.481.4": "RT Beams Treatment Record Storage",
    "1.2.840.10008.5.1.4.1.1.481.5": "RT Plan Storage",
    "1.2.840.10008.5.1.4.1.1.481.6": "RT Brachy Treatment Record Storage",
    "1.2.840.10008.5.1.4.1.1.481.7": "RT Treatment Summary Record Storage",
    "1.2.840.10008.5.1.4.1.1.481.8": "RT Ion Plan Storage",
    "1.2.840.10008.5.1.4.1.1.481.9": "RT Ion Beams Treatment Record Storage",
    "1.2.840.10008.5.1.4.1.1.481.10": "RT Physician Intent Storage",
    "1.2.840.10008.5.1.4.1.1.481.11": "RT Segment Annotation Storage",
    "1.2.840.10008.5.1.4.1.1.481.12": "RT Radiation Set Storage",
    "1.2.840.10008.5.1.4.1.1.481.13": "C-Arm Photon-Electron Radiation Storage",
    "1.2.840.10008.5.1.4.1.1.481.14": "Tomotherapeutic Radiation Storage",
    "1.2.840.10008.5.1.4.1.1.481.15": "Robotic-Arm Radiation Storage",
    "1.2.840.10008.5.1.4.1.1.481.16": "RT Radiation Record Set Storage",
    "1.2.840.10008.5.1.4.1.1.481.17": "RT Radiation Salvage Record Storage",
    "1.2.840.10008.5.1.4.1.1.481.18": "Tomotherapeutic Radiation Record Storage",
    "1.2.840.10008.5.1.4.1.1.481.19": "C-Arm Photon-Electron Radiation Record Storage",
    "1.2.840.10008.5.1.4.1.1.481.20": "Robotic Radiation Record Storage",
    "1.2.840.10008.5.1.4.1.1.481.21": "RT Radiation Set Delivery Instruction Storage",
    "1.2.840.10008.5.1.4.1.1.481.22": "RT Treatment Preparation Storage",
    "1.2.840.10008.5.1.4.1.1.481.23": "Enhanced RT Image Storage",
    "1.2.840.10008.5.1.4.1.1.481.24": "Enhanced Continuous RT Image Storage",
    "1.2.840.10008.5.1.4.1.1.481.25": "RT Patient Position Acquisition Instruction Storage",
    "1.2.840.10008.5.1.4.1.1.501.1": "DICOS CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.501.2.1": "DICOS Digital X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.501.2.2": "DICOS Digital X-Ray Image Storage - For Processing",
    "1.2.840.10008.5.1.4.1.1.501.3": "DICOS Threat Detection Report Storage",
    "1.2.840.10008.5.1.4.1.1.501.4": "DICOS 2D AIT Storage",
    "1.2.840.10008.5.1.4.1.1.501.5": "DICOS 3D AIT Storage",
    "1.2.840.10008.5.1.4.1.1.501.6": "DICOS Quadrupole Resonance (QR) Storage",
    "1.2.840.10008.5.1.4.1.1.601.1": "Eddy Current Image Storage",
    "1.2.840.10008.5.1.4.1.1.601.2": "Eddy Current Multi-frame Image Storage",
    "1.2.840.10008.5.1.4.34.1": "RT Beams Delivery Instruction Storage - Trial",  # retired
    "1.2.840.10008.5.1.4.34.7": "RT Beams Delivery Instruction Storage",
    "1.2.840.10008.5.1.4.34.10": "RT Brachy Application Setup Delivery Instruction Storage",
    "1.2.840.10008.5.1.4.38.1": "Hanging Protocol Storage",
    "1.2.840.10008.5.1.4.39.1": "Color Palette Storage",
    "1.2.840.10008.5.1.4.43.1": "Generic Implant Template Storage",
    "1.2.840.10008.5.1.4.44.1": "Implant Assembly Template Storage",
    "1.2.840.10008.5.1.4.45.1": "Implant Template Group Storage",
}

#: Every Storage SOP class, in UID order: what an SCP accepts by default.
STORAGE_SOP_CLASSES: Final[tuple[str, ...]] = tuple(_STORAGE)

PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
PATIENT_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.1.2"
PATIENT_ROOT_GET = "1.2.840.10008.5.1.4.1.2.1.3"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
PATIENT_STUDY_ONLY_FIND = "1.2.840.10008.5.1.4.1.2.3.1"  # retired
PATIENT_STUDY_ONLY_MOVE = "1.2.840.10008.5.1.4.1.2.3.2"  # retired
PATIENT_STUDY_ONLY_GET = "1.2.840.10008.5.1.4.1.2.3.3"  # retired
COMPOSITE_INSTANCE_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.4.2"
COMPOSITE_INSTANCE_ROOT_GET = "1.2.840.10008.5.1.4.1.2.4.3"
COMPOSITE_INSTANCE_WITHOUT_BULK_DATA_GET = "1.2.840.10008.5.1.4.1.2.5.3"

_QUERY_RETRIEVE: Final[dict[str, str]] = {
    PATIENT_ROOT_FIND: "Patient Root Query/Retrieve Information Model - FIND",
    PATIENT_ROOT_MOVE: "Patient Root Query/Retrieve Information Model - MOVE",
    PATIENT_ROOT_GET: "Patient Root Query/Retrieve Information Model - GET",
    STUDY_ROOT_FIND: "Study Root Query/Retrieve Information Model - FIND",
    STUDY_ROOT_MOVE: "Study Root Query/Retrieve Information Model - MOVE",
    STUDY_ROOT_GET: "Study Root Query/Retrieve Information Model - GET",
    PATIENT_STUDY_ONLY_FIND: "Patient/Study Only Query/Retrieve Information Model - FIND",
    PATIENT_STUDY_ONLY_MOVE: "Patient/Study Only Query/Retrieve Information Model - MOVE",
    PATIENT_STUDY_ONLY_GET: "Patient/Study Only Query/Retrieve Information Model - GET",
    COMPOSITE_INSTANCE_ROOT_MOVE: "Composite Instance Root Retrieve - MOVE",
    COMPOSITE_INSTANCE_ROOT_GET: "Composite Instance Root Retrieve - GET",
    COMPOSITE_INSTANCE_WITHOUT_BULK_DATA_GET: "Composite Instance Retrieve Without Bulk Data - GET",
}

#: The image Query/Retrieve information models (FIND, MOVE and GET).
QUERY_RETRIEVE_SOP_CLASSES: Final[tuple[str, ...]] = tuple(_QUERY_RETRIEVE)

_SOP_CLASS_NAMES: Final[dict[str, str]] = {
    VERIFICATION_SOP_CLASS: "Verification SOP Class",
    **_STORAGE,
    **_QUERY_RETRIEVE,
}


def transfer_syntax_name(uid: str) -> str:
    """The standard name of a transfer syntax, or the UID itself if unknown.

    Never raises: it is meant for log lines and error messages about what a
    peer proposed, which may be anything.
    """
    return KNOWN_TRANSFER_SYNTAXES.get(uid, uid)


def sop_class_name(uid: str) -> str:
    """The standard name of a SOP class, or the UID itself if unknown.

    Falls back to pydicom's dictionary (imported only then) for the SOP
    classes aiodicom has no table for, such as the normalized services.
    """
    name = _SOP_CLASS_NAMES.get(uid)
    if name is not None:
        return name
    from pydicom.uid import UID

    known = UID(uid)
    return known.name if known.type == "SOP Class" else uid
