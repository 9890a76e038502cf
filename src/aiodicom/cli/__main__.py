"""``python -m aiodicom.cli``: the command line.

Guarded, because worker processes (``aiodicom.offload``, anyio's process pool) load the
parent's ``__main__`` module under another name: the command must not run again there.
"""

import sys

from aiodicom.cli import main

if __name__ == "__main__":
    sys.exit(main())
