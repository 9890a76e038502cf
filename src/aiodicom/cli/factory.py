"""``aiodicom anonymize`` and ``aiodicom from-nifti``: writing new DICOM files."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from aiodicom.errors import FactoryError


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``anonymize`` and ``from-nifti``."""
    anonymize = subparsers.add_parser(
        "anonymize",
        help="de-identify a file or a folder (PS3.15 basic profile)",
        description="De-identify DICOM files with the PS3.15 Basic Application Level "
        "Confidentiality Profile. Files are written as OUT/<new SOPInstanceUID>.dcm "
        "(or to OUT itself when IN is one file and OUT is not a folder), so no "
        "original file name, which may identify the patient, survives.",
    )
    anonymize.add_argument("input", type=Path, metavar="IN", help="a DICOM file or a folder")
    anonymize.add_argument("output", type=Path, metavar="OUT", help="output file or folder")
    anonymize.add_argument("--retain-uids", action="store_true", help="keep the original UIDs")
    anonymize.add_argument(
        "--retain-dates", action="store_true", help="keep dates and times (full dates option)"
    )
    anonymize.add_argument(
        "--mapping",
        type=Path,
        help="identity mapping JSON to reuse and update (keeps pseudonyms and UIDs "
        "consistent across runs; it re-identifies, keep it safe)",
    )
    anonymize.set_defaults(func=_anonymize)

    from_nifti = subparsers.add_parser(
        "from-nifti",
        help="a NIfTI image as a new DICOM series beside a parent series",
        description="Write the NIfTI image's voxels and geometry as a new series in the "
        "patient and study of the parent series (CT, PET and MR parents give the same "
        "IOD, other modalities secondary capture).",
    )
    from_nifti.add_argument("input", type=Path, metavar="IN.nii.gz")
    from_nifti.add_argument(
        "--like", type=Path, required=True, metavar="SERIES_DIR", help="the parent series"
    )
    from_nifti.add_argument("output", type=Path, metavar="OUT_DIR")
    from_nifti.add_argument("--description", help="SeriesDescription of the new series")
    from_nifti.set_defaults(func=_from_nifti)


def _dicom_files(root: Path, *, pixels: bool = True) -> Iterator[tuple[Path, Dataset]]:
    """Every readable DICOM file under ``root``; others are reported and skipped."""
    paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for path in paths:
        try:
            yield path, pydicom.dcmread(path, stop_before_pixels=not pixels)
        except (InvalidDicomError, EOFError, ValueError) as exc:
            print(f"skipped {path}: not DICOM ({exc})", file=sys.stderr)


def _anonymize(args: argparse.Namespace) -> int:
    from aiodicom.data.anonymize import IdentityMapping, deidentify
    from aiodicom.errors import DeidentificationError

    if not args.input.exists():
        raise FileNotFoundError(f"no such file or folder: {args.input}")
    mapping = (
        IdentityMapping.load(args.mapping)
        if args.mapping is not None and args.mapping.exists()
        else IdentityMapping()
    )
    single = args.input.is_file() and not args.output.is_dir()
    written = refused = 0
    for path, dataset in _dicom_files(args.input):
        try:
            clean = deidentify(
                dataset, mapping, retain_uids=args.retain_uids, retain_dates=args.retain_dates
            )
        except DeidentificationError as exc:
            print(f"refused {path}: {exc}", file=sys.stderr)
            refused += 1
            continue
        if single:
            target = args.output
            target.parent.mkdir(parents=True, exist_ok=True)
        else:
            args.output.mkdir(parents=True, exist_ok=True)
            target = args.output / f"{clean.SOPInstanceUID}.dcm"
        clean.save_as(target, enforce_file_format=True)
        written += 1
    if args.mapping is not None:
        mapping.save(args.mapping)
    print(f"{written} file(s) de-identified, {refused} refused")
    return 1 if refused or not written else 0


def _from_nifti(args: argparse.Namespace) -> int:
    from aiodicom.factory import Static, build_series, write_series
    from aiodicom.factory.blueprints import for_modality

    if not args.like.is_dir():
        raise FactoryError(f"--like must be a folder holding the parent series: {args.like}")
    parent = [ds for _, ds in _dicom_files(args.like, pixels=False)]
    if not parent:
        raise FactoryError(f"no DICOM files in {args.like}")
    series_uids = {ds.get("SeriesInstanceUID") for ds in parent}
    if len(series_uids) != 1:
        raise FactoryError(f"{args.like} holds {len(series_uids)} series, expected one")
    try:
        image = nib.load(args.input)
    except (OSError, nib.filebasedimages.ImageFileError) as exc:
        raise FactoryError(f"cannot read {args.input} as NIfTI: {exc}") from exc
    blueprint = for_modality(parent[0].get("Modality"))
    if args.description:
        blueprint = blueprint + Static("SeriesDescription", args.description)
    datasets = build_series(image, blueprint, parent)
    write_series(datasets, args.output)
    print(f"{len(datasets)} instance(s) written to {args.output}")
    return 0
