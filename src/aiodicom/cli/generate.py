"""Placeholder: subcommands are registered here by the data-conversion work."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: "argparse._SubParsersAction[Any]") -> None:
    """Add this module's subcommands (none yet)."""
