"""A PET+CT pipeline: two inputs per patient, a SEG of the hot spots sent on by C-STORE.

Each patient needs a CT series and a PET series (two inputs: a patient is processed
once both validate, after the association that completed them is released). The PET
uptake above ``hot_fraction`` of its maximum, inside the body as the CT sees it, becomes
a DICOM Segmentation on the PET series, sent with C-STORE to ``destination`` (retried
with backoff when the destination is down, dead-lettered after the last try).

    cd examples && aiodicom serve pet_ct_pipeline:PETCT --port 11112 --data-directory data

(``destination`` is ``ARCHIVE@127.0.0.1:11113``: change the class attribute, or make a
subclass, for yours; in code, ``PETCT(destination="PACS@10.0.0.5:104")``). CT and PET must be on the same grid (a PET/CT scanner's
attenuation-correction CT usually is not: resample it first, e.g. with the NIfTI grinder).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

import aiodicom
from aiodicom.factory.blueprints import PET_IMAGE_STORAGE
from aiodicom.factory.segmentation import Segment, build_seg
from aiodicom.grinders.numpy import Volume, numpy_grinder

#: Images each series needs before the patient is processed.
MIN_IMAGES = 10


class Series(aiodicom.Input):
    """One image series of a patient, as a volume; complete at MIN_IMAGES images."""

    required_tags = ["SOPInstanceUID", "PixelData"]
    enforce_single_series = True
    grinder = numpy_grinder

    def validate(self) -> bool:
        return len(self) >= MIN_IMAGES


class CT(Series):
    required_values = {"Modality": "CT"}


class PET(Series):
    required_values = {"Modality": "PT", "SOPClassUID": PET_IMAGE_STORAGE}


def hot_spots(pet: npt.NDArray[np.floating], ct: npt.NDArray[np.floating], fraction: float) -> npt.NDArray[np.bool_]:
    """PET voxels above ``fraction`` of the maximum uptake, where the CT shows body (> -300 HU)."""
    if pet.shape != ct.shape:
        raise ValueError(f"PET {pet.shape} and CT {ct.shape} are not on one grid: resample first")
    return (pet > fraction * float(pet.max())) & (ct > -300)


def segment(pet: Volume, ct: Volume, fraction: float) -> Dataset:
    """The SEG on the PET series (CPU work: run in a worker process by ``process``)."""
    mask = hot_spots(pet.array, ct.array, fraction)
    return build_seg({"hot": mask}, pet, segments=[Segment("hot", algorithm_name=f"PET > {fraction:.0%} of max")])


class PETCT(aiodicom.Pipeline):
    """CT + PET in, a SEG of PET hot spots out to ``destination`` by C-STORE."""

    ae_title = "PETCT"
    inputs = {"ct": CT, "pet": PET}
    #: Where the SEGs go (``CALLED_AE@host:port``, or a (host, port, called AE) tuple).
    destination: str = "ARCHIVE@127.0.0.1:11113"
    hot_fraction: float = 0.4
    max_concurrent_processes = 2

    async def process(self, container: aiodicom.InputContainer) -> aiodicom.DicomExport:
        pet, ct = container["pet"], container["ct"]
        assert isinstance(pet, Volume) and isinstance(ct, Volume)
        seg = await aiodicom.offload(segment, pet, ct, self.hot_fraction)
        return aiodicom.DicomExport(self.destination, [seg])
