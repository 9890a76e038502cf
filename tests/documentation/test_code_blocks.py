"""Every code block in README.md and docs/ runs as written (the convention: blocks.py).

One test per document: its blocks run in order in a fresh folder, shell blocks through
the real ``aiodicom`` command, Python blocks as scripts, against the receivers the
document itself starts (``aiodicom receive`` on a documentation port).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .blocks import NOT_RUN, RUNNABLE, DocumentRun, _output_matches, commands, extract_blocks

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
RUN_DOCUMENTS = [d for d in DOCUMENTS if any(b.language in RUNNABLE for b in extract_blocks(d))]

MARKER_OPTIONS = {"background", "port", "file"}


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("document", DOCUMENTS, ids=_name)
def test_every_block_declares_whether_it_runs(document: Path) -> None:
    for block in extract_blocks(document):
        assert block.language in RUNNABLE + NOT_RUN, (
            f"{block.where}: code block language {block.language!r}; use one of "
            f"{', '.join(RUNNABLE)} (run by the tests) or text (not run), see docs/contributing.md"
        )
        unknown = set(block.options) - MARKER_OPTIONS
        assert not unknown, f"{block.where}: unknown docs-test option(s) {sorted(unknown)}"
        if "file" in block.options:
            assert block.language == "python" and block.options["file"].endswith(".py"), (
                f"{block.where}: file=NAME.py applies to Python blocks"
            )
        if "background" in block.options:
            assert block.language == "python" and block.options.get("port"), (
                f"{block.where}: background applies to Python blocks and needs port=N"
            )


@pytest.mark.timeout(600)
@pytest.mark.parametrize("document", RUN_DOCUMENTS, ids=_name)
def test_document_blocks_run(document: Path, tmp_path: Path) -> None:
    blocks = [b for b in extract_blocks(document) if b.language in RUNNABLE]
    workdir = tmp_path / "work"
    workdir.mkdir()
    run = DocumentRun(workdir)
    try:
        for block in blocks:
            run.run(block)
    finally:
        run.close()
    check = AFTERWARDS.get(_name(document))
    if check is not None:
        check(workdir)


def _count(folder: Path) -> int:
    return len(list(folder.rglob("*.dcm")))


def _readme_moved_the_study(workdir: Path) -> None:
    """The tour does what it says: the generated study reaches both receivers it starts."""
    sent = _count(workdir / "study")
    assert sent > 0
    assert _count(workdir / "received") == sent  # `aiodicom store` to `aiodicom receive`
    assert _count(workdir / "archive") == sent  # the API tour's own Server
    assert _count(workdir / "results") == 1  # the pipeline sample's SEG


def _embedding_received(workdir: Path) -> None:
    """Both embedded servers got the study: the asyncio service and the Starlette app."""
    sent = _count(workdir / "study")
    assert sent > 0
    assert _count(workdir / "archive") == sent
    assert _count(workdir / "web-archive") == sent


def _pipeline_exported(workdir: Path) -> None:
    """The guide's node (``aiodicom serve mynode:MyNode``) wrote its SEG to both exporters."""
    assert _count(workdir / "study") == 20
    assert _count(workdir / "results" / "PAT1") == 1  # FileExport
    assert _count(workdir / "archive") == 1  # DicomExport to the page's `aiodicom receive`


#: Checks that a document's blocks had their effect, beyond exiting with 0.
AFTERWARDS = {
    "README.md": _readme_moved_the_study,
    "docs/guide/embedding.md": _embedding_received,
    "docs/guide/pipelines.md": _pipeline_exported,
}


# --- the runner itself ------------------------------------------------------------------


def test_extract_blocks_reads_fences_languages_markers_and_indents(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# t\n\n```python\nprint(1)\n```\n\n<!-- docs-test: background port=11113 -->\n"
        "```python\nimport time\n```\n\n1. item\n\n    ```sh\n    echo a \\\n      b\n    # note\n    ```\n\n"
        "~~~text\n```\n~~~\n\n```\nbare\n```\n"
    )
    blocks = extract_blocks(page)
    assert [(b.language, b.line) for b in blocks] == [
        ("python", 3),
        ("python", 8),
        ("sh", 14),
        ("text", 20),
        ("", 24),
    ]
    assert blocks[0].code == "print(1)\n"
    assert blocks[1].options == {"background": "", "port": "11113"}
    assert list(commands(blocks[2].code)) == ["echo a    b"]
    assert blocks[3].code == "```\n"


def test_output_matching_uses_ellipsis_as_wildcard() -> None:
    actual = ["noise", "C-ECHO 127.0.0.1:4242 (MYAE): 0x0000 (Success) in 1.3 ms"]
    assert _output_matches(["C-ECHO ...: 0x0000 (Success) in ... ms"], actual)
    assert not _output_matches(["C-ECHO ...: 0xA700 ..."], actual)
    assert not _output_matches(["missing line"], actual)


def test_a_failing_block_fails_the_run(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("```sh\naiodicom echo 127.0.0.1 11112 --aec NOBODY\n```\n")
    (tmp_path / "work").mkdir()
    run = DocumentRun(tmp_path / "work")
    try:
        with pytest.raises(AssertionError, match="exit code 1"):
            run.run(extract_blocks(page)[0])
    finally:
        run.close()


def test_a_file_block_is_saved_as_a_module_and_serve_runs_in_the_background(tmp_path: Path) -> None:
    """``file=NAME.py`` saves without running; ``aiodicom serve`` keeps running until the end."""
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- docs-test: file=node.py -->\n```python\nimport aiodicom\n\n\n"
        "class CT(aiodicom.Input):\n    pass\n\n\nclass Node(aiodicom.Pipeline):\n"
        "    inputs = {'ct': CT}\n\n\nif __name__ == '__main__':\n    raise SystemExit(3)  # run: fails\n```\n\n```sh\naiodicom serve node:Node --port 11113\n"
        "aiodicom echo 127.0.0.1 11113 --aec AIODICOM\n```\n"
    )
    (tmp_path / "work").mkdir()
    run = DocumentRun(tmp_path / "work")
    try:
        for block in extract_blocks(page):
            run.run(block)
        assert (tmp_path / "work" / "node.py").read_text().startswith("import aiodicom")
        assert len(run.background) == 1
    finally:
        run.close()
