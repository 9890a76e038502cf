"""A DicomNode-style receiver for bench_pipeline.py: pynetdicom, decode and keep every data set.

    python benchmarks/_pynetdicom_node.py PORT OUT_DIR

DicomNode (the library aiodicom's pipelines replace) receives with pynetdicom's threaded
server and keeps each decoded data set in memory, per patient, until the patient is
processed. This does that and nothing more: the handler decodes the data set
(``event.dataset``), attaches its file meta and appends it to its patient's list under
one lock (DicomNode holds a global lock around its storage). On SIGTERM it writes
``OUT_DIR/kept.json`` (instances kept per patient) for the benchmark's check and exits.

pynetdicom is a test peer, installed apart from the environment (``.venv/peers``); the
benchmark runs this with that folder on ``PYTHONPATH``, as the tests do.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections import defaultdict
from pathlib import Path
from types import FrameType

from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

kept: dict[str, list[Dataset]] = defaultdict(list)
lock = threading.Lock()


def on_store(event: evt.Event) -> int:
    dataset = event.dataset  # decodes the whole data set, as DicomNode does
    dataset.file_meta = event.file_meta
    with lock:
        kept[str(dataset.PatientID)].append(dataset)
    return 0x0000


def main() -> int:
    port, out = int(sys.argv[1]), Path(sys.argv[2])
    ae = AE(ae_title="AIODICOM")
    ae.maximum_associations = 64
    ae.supported_contexts = AllStoragePresentationContexts
    ae.add_supported_context(Verification)
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    stopped = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopped.set()

    signal.signal(signal.SIGTERM, stop)
    while not stopped.wait(0.2):  # a timeout, so that the signal handler gets to run
        pass
    server.shutdown()
    with lock:
        counts = {patient: len(datasets) for patient, datasets in kept.items()}
    (out / "kept.json").write_text(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
