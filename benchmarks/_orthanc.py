"""Start Orthanc as a benchmark receiver: ``python _orthanc.py PORT OUT``.

Writes its own configuration next to ``OUT`` (DICOM on 127.0.0.1:PORT, no HTTP server,
no plugins, files in ``OUT``, its index beside it) and becomes Orthanc (exec), so the
harness's SIGTERM, wait4 and RSS accounting reach Orthanc itself. Never the system
service: nothing here reads or writes /etc/orthanc or /var/lib/orthanc.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import ORTHANC  # noqa: E402


def main() -> None:
    port, out = int(sys.argv[1]), Path(sys.argv[2]).resolve()
    if ORTHANC is None:
        sys.exit("Orthanc is not installed (apt-get install -y -qq orthanc)")
    index = out.with_name(out.name + ".orthanc-index")
    index.mkdir(exist_ok=True)
    config = out.with_name(out.name + ".orthanc.json")
    config.write_text(json.dumps({
        "Name": "bench", "StorageDirectory": str(out), "IndexDirectory": str(index),
        "Plugins": [], "HttpServerEnabled": False, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "DicomServerEnabled": True, "DicomAet": "AIODICOM",
        "DicomPort": port, "DicomCheckCalledAet": False, "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowEcho": True, "DicomCheckModalityHost": False, "StorageCompression": False,
        "SaveJobs": False, "ConcurrentJobs": 1,
    }))  # fmt: skip
    log = out.with_name(out.name + ".orthanc.log")
    os.execv(ORTHANC, [ORTHANC, f"--logfile={log}", str(config)])


if __name__ == "__main__":
    main()
