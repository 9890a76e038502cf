"""What a pipeline exports reaches a PACS: our RTSTRUCT and SEG sent to DCMTK's storescp.

The data sets are sent as built (in memory), explicit VR or, for a peer that accepts
only implicit VR, re-encoded on the way; the files the peer stored read back exactly.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import numpy as np
import pydicom
import pytest

from aiodicom import connect
from aiodicom.codec.uids import EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN
from aiodicom.factory.segmentation import build_rtstruct, build_seg
from aiodicom.grinders.segmentation import (
    RT_STRUCTURE_SET_STORAGE,
    SEGMENTATION_STORAGE,
    rtstruct_to_masks,
    seg_to_masks,
)
from peers import storescp
from segmentation.helpers import all_shapes

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.dcmtk
@pytest.mark.parametrize("peer_options", [(), ("+xi",)], ids=["explicit", "implicit-only"])
async def test_rtstruct_and_seg_stored_by_dcmtk_read_back_exactly(
    axial: list[Path], tmp_path: Path, peer_options: tuple[str, ...]
) -> None:
    shapes = all_shapes()
    exported = [build_rtstruct(shapes, axial), build_seg(shapes, axial)]
    syntaxes = [EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN]
    contexts = [(RT_STRUCTURE_SET_STORAGE, syntaxes), (SEGMENTATION_STORAGE, syntaxes)]
    out = tmp_path / "pacs"
    out.mkdir()
    with storescp(output_dir=out, args=peer_options) as peer:
        with anyio.fail_after(60):
            async with connect(
                "127.0.0.1", peer.port, called_ae="STORESCP", contexts=contexts
            ) as assoc:
                for dataset in exported:
                    (await assoc.store(dataset)).raise_for_status()
    stored = {pydicom.dcmread(p).SOPInstanceUID: p for p in out.iterdir()}
    assert len(stored) == 2, peer.output()
    expected_syntax = IMPLICIT_VR_LITTLE_ENDIAN if peer_options else EXPLICIT_VR_LITTLE_ENDIAN
    for dataset, reader in zip(exported, (rtstruct_to_masks, seg_to_masks), strict=True):
        path = stored[dataset.SOPInstanceUID]
        assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == expected_syntax
        for roi in reader(path, axial):
            assert np.array_equal(roi.mask, shapes[roi.name]), roi.name
