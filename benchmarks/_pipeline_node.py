"""The pipelines bench_pipeline.py measures, served as ``aiodicom serve`` would.

    python benchmarks/_pipeline_node.py CLASS PORT DATA_DIRECTORY [MORE SERVE OPTIONS]

runs ``aiodicom serve _pipeline_node:CLASS --port PORT --data-directory DATA_DIRECTORY``
(SIGTERM drains; e.g. ``--workers 2`` after the three arguments). Every ``process`` call appends one line to
``DATA_DIRECTORY/processed.log``: the wall-clock time it started, the patient and the
instance count, which is how the benchmark checks "every patient processed once" and
measures the delay from the sender's release to ``process``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

import aiodicom
from aiodicom.grinders.numpy import Volume, numpy_grinder

#: CPU seconds the heavy node's offloaded function burns per patient.
HEAVY_SECONDS = float(os.environ.get("BENCH_HEAVY_SECONDS", "2"))
PROCESSED_LOG = "processed.log"
FINISHED_LOG = "finished.log"


class CT(aiodicom.Input):
    required_values = {"Modality": "CT"}


class NumpyCT(CT):
    grinder = numpy_grinder  # ground in a worker process (the pipeline offloads it)


def note(pipeline: aiodicom.Pipeline, container: aiodicom.InputContainer, name: str = PROCESSED_LOG) -> None:
    """One line per process() call, written at once (O_APPEND: lines never interleave)."""
    now = time.time()
    line = f"{now:.6f} {container.patient_id} {len(container.paths['ct'])}\n"
    assert pipeline.data_directory is not None
    with open(Path(pipeline.data_directory) / name, "a") as log:
        log.write(line)


class Trivial(aiodicom.Pipeline):
    """Validates each patient on release and notes it: the cost of the pipeline itself."""

    ae_title = "AIODICOM"
    inputs = {"ct": CT}
    max_concurrent_processes = 4

    async def process(self, container: aiodicom.InputContainer) -> None:
        note(self, container)


def burn(volume: npt.NDArray[np.floating], seconds: float) -> float:
    """Numpy work for ``seconds`` of CPU (FFTs of the volume): the 'model' (in a worker)."""
    deadline = time.process_time() + seconds
    total = 0.0
    while time.process_time() < deadline:
        total += float(np.abs(np.fft.rfftn(volume)).mean())
    return total


class Heavy(Trivial):
    """Four patients at once, each burning HEAVY_SECONDS of numpy in a worker process."""

    inputs = {"ct": NumpyCT}

    async def process(self, container: aiodicom.InputContainer) -> None:
        note(self, container)
        volume = container["ct"]
        assert isinstance(volume, Volume)
        await aiodicom.offload(burn, volume.array, HEAVY_SECONDS)
        note(self, container, FINISHED_LOG)


def main() -> int:
    from aiodicom.cli import main as cli

    name, port, data = sys.argv[1:4]
    # receiving workers (--workers N) import this module too: from this folder
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))
    # As the program (``aiodicom serve`` from a shell), not called from Python: the CLI then
    # owns the process and tunes it as it does for users (its garbage collector settings).
    sys.argv = [sys.argv[0], "serve", f"_pipeline_node:{name}", "--port", port, "--data-directory", data,
                "--log-level", "warning", "--grace", "60", *sys.argv[4:]]  # fmt: skip
    return cli()


if __name__ == "__main__":  # offload's workers import this file: start nothing then
    sys.exit(main())
