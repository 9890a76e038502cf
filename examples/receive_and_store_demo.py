"""Receive a study over DICOM and write it to files, with the command-line tools only.

``./dev demo`` runs the pipeline example (``ct_threshold_pipeline.py``) now; this one
shows the plain receiver: ``python examples/receive_and_store_demo.py``. It generates a synthetic CT study, starts
``aiodicom receive`` as its own process on a free port, sends the study with
``aiodicom store`` (real DICOM networking over 127.0.0.1), checks that every
instance arrived intact, and stops the receiver with SIGTERM (graceful).

Options: ``--images N`` (default 40), ``--output DIR`` (default ./demo-output).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--output", type=Path, default=Path("demo-output"))
    args = parser.parse_args()

    from aiodicom.codec.part10 import read_file_meta
    from aiodicom.synthetic import write_study

    aiodicom = [sys.executable, "-m", "aiodicom"]
    shutil.rmtree(args.output, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="aiodicom-demo-") as workdir:
        study_dir = Path(workdir) / "study"
        sources = write_study(study_dir, images_per_series=args.images, series=2)
        print(f"generated {len(sources)} CT images in 2 series ({sum(p.stat().st_size for p in sources) >> 20} MiB)")

        port = free_port()
        receiver = subprocess.Popen(
            [*aiodicom, "receive", "--port", str(port), "--aet", "DEMO", "--output-dir", str(args.output)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert receiver.stdout is not None
            ready = receiver.stdout.readline().strip()
            print(ready)
            started = time.perf_counter()
            subprocess.run(
                [*aiodicom, "store", "127.0.0.1", str(port), str(study_dir), "--aec", "DEMO", "--no-progress"],
                check=True,
            )
            elapsed = time.perf_counter() - started
        finally:
            receiver.send_signal(signal.SIGINT if os.name == "nt" else signal.SIGTERM)
            out, _ = receiver.communicate(timeout=30)
        print(out.strip())

        received = sorted(args.output.rglob("*.dcm"))
        by_uid = {read_file_meta(p).sop_instance_uid: p for p in received}
        intact = 0
        for source in sources:
            meta = read_file_meta(source)
            target = by_uid.get(meta.sop_instance_uid)
            if target is None:
                continue
            target_meta = read_file_meta(target)
            if (
                source.read_bytes()[meta.dataset_offset :]
                == target.read_bytes()[target_meta.dataset_offset :]
            ):
                intact += 1
    print(
        f"{intact}/{len(sources)} instances received byte-identical in {elapsed:.2f} s, "
        f"written under {args.output}/<StudyUID>/<SeriesUID>/<SOPInstanceUID>.dcm"
    )
    return 0 if intact == len(sources) and receiver.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
