"""``aiodicom generate``: write a synthetic study to feed ``store``, demos and benchmarks.

A fresh machine has no DICOM files; this gives the README's main job something to send.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from aiodicom.cli import number
from aiodicom.synthetic import TRANSFER_SYNTAXES, write_study

#: Counts and sizes of at least 1.
_positive_int = number(int, 1)


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``generate`` subcommand."""
    parser = subparsers.add_parser(
        "generate",
        help="write a synthetic CT study (Part 10 files)",
        description="Write a deterministic synthetic CT study as <n>.dcm files into OUT_DIR.",
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", type=Path, help="folder to write into")
    parser.add_argument(
        "--images", type=_positive_int, default=20, help="images per series (default 20)"
    )
    parser.add_argument("--series", type=_positive_int, default=1, help="series (default 1)")
    parser.add_argument("--rows", type=_positive_int, default=512, help="rows (default 512)")
    parser.add_argument("--columns", type=_positive_int, default=512, help="columns (default 512)")
    parser.add_argument(
        "--transfer-syntax",
        choices=sorted(TRANSFER_SYNTAXES),
        default="explicit",
        help="implicit/explicit VR little endian, explicit big endian, deflated (default explicit)",
    )
    parser.add_argument("--modality", choices=("CT", "MR"), default="CT", help="default CT")
    parser.add_argument("--patient-id", default="AIODEMO01", help="default AIODEMO01")
    parser.add_argument("--seed", type=int, default=0, help="pixel content seed (default 0)")
    parser.set_defaults(func=run)




def run(args: argparse.Namespace) -> int:
    """Generate the study and print one summary line."""
    started = time.perf_counter()
    paths = write_study(
        args.out_dir,
        patient_id=args.patient_id,
        series=args.series,
        images_per_series=args.images,
        rows=args.rows,
        columns=args.columns,
        modality=args.modality,
        transfer_syntax=TRANSFER_SYNTAXES[args.transfer_syntax],
        seed=args.seed,
    )
    size = sum(p.stat().st_size for p in paths)
    elapsed = time.perf_counter() - started
    print(
        f"wrote {len(paths)} files ({args.series} series, {args.rows}x{args.columns}, "
        f"{args.transfer_syntax}, {size / 1e6:.1f} MB) to {args.out_dir} in {elapsed:.1f} s"
    )
    return 0
