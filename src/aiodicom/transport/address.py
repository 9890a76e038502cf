"""Where we listen or connect: checks made before any socket exists, and socket errors
said plainly.

The socket layer would take 70000 modulo 65536 (port 4464) without a word, so
a typo would listen or connect somewhere nobody meant.
"""

from __future__ import annotations

import os
import socket
import sys

from aiodicom.errors import AssociationError, InvalidPortError


def check_port(port: int, *, listening: bool) -> int:
    """``port`` if it is a TCP port (0, "any free one", only when ``listening``)."""
    low = 0 if listening else 1
    if isinstance(port, bool) or not isinstance(port, int) or not low <= port <= 65535:
        raise InvalidPortError(f"port {port!r} is outside {low}-65535")
    return port


def describe_os_error(exc: OSError) -> str:
    """The reason alone ("Connection refused"), the same whichever event loop raised it.

    asyncio says "Connect call failed ('127.0.0.1', 104)" and uvloop "error while
    attempting to bind on address ...": the errno says it plainly.
    """
    # Name resolution and TLS errors number their own codes: their text is the reason.
    # ssl only when something imported it: without it no error can be a TLS error, and
    # a command without TLS options does not pay for its import.
    ssl = sys.modules.get("ssl")
    own_codes = socket.gaierror if ssl is None else (socket.gaierror, ssl.SSLError)
    if isinstance(exc, own_codes) or not exc.errno or exc.errno < 0:
        return exc.strerror or str(exc)
    return os.strerror(exc.errno)


def connect_failed(host: str, port: int, exc: OSError) -> AssociationError:
    """The error a requestor raises when the connection cannot be made, whichever driver."""
    return AssociationError(f"cannot connect to {host}:{port}: {describe_os_error(exc)}")
