"""The documentation site builds with warnings as errors, as ``./dev docs`` and CI build it.

A page missing from ``nav``, a broken link or anchor, or a docstring that mkdocstrings
cannot render fails here, not on the day someone publishes the site.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_mkdocs_strict_build(tmp_path: Path) -> None:
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    # The reference really comes from the docstrings, roles and #: comments included.
    for anchor in (
        "aiodicom.dimse.server.Server",
        "aiodicom.dimse.client.connect",
        "aiodicom.dimse.store.ReceivedInstance.save",
        "aiodicom.transport.association.Timeouts.dimse",
    ):
        assert f'id="{anchor}"' in api, anchor
    assert ":meth:" not in api and ":class:" not in api
    assert (site / "guide" / "embedding" / "index.html").is_file()
