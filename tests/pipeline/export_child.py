"""A process that exports through a durable outbox, for the kill -9 tests.

``python export_child.py OUTBOX PORT FOLDER submit UIDS.json``: generates six small
instances (their UIDs go to UIDS.json), submits them as batch ``b`` to a DicomExport
(``DEST`` on 127.0.0.1:PORT) and a FileExport (FOLDER), and waits for the outcome.
``... resume``: only starts the outbox on the same folder and waits for batch ``b``.
Either way it prints the outcome as JSON on its last line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio

from aiodicom.pipeline.export import DicomExport, FileExport
from aiodicom.pipeline.outbox import Outbox
from aiodicom.synthetic import make_dataset


async def main(outbox_dir: str, port: int, folder: str, mode: str, uids_file: str | None) -> None:
    outbox = Outbox(Path(outbox_dir), attempts=50, backoff=0.05, max_backoff=0.2)
    async with anyio.create_task_group() as group:
        await group.start(outbox.run)
        if mode == "submit":
            assert uids_file is not None
            datasets = [make_dataset(rows=16, columns=16, index=n, slices=6) for n in range(6)]
            Path(uids_file).write_text(json.dumps([str(ds.SOPInstanceUID) for ds in datasets]))
            await outbox.submit("b", [DicomExport(("127.0.0.1", port, "DEST"), datasets),
                                      FileExport(folder, datasets)])
            print("submitted", flush=True)
        outcome = await outbox.wait("b")
        print(json.dumps(outcome.to_json()), flush=True)
        group.cancel_scope.cancel()


if __name__ == "__main__":
    args = sys.argv[1:]
    anyio.run(main, args[0], int(args[1]), args[2], args[3], args[4] if len(args) > 4 else None)
