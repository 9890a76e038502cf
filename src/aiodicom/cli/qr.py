"""``aiodicom find``, ``get`` and ``move``: query and retrieve, shaped like DCMTK's findscu/getscu/movescu.

Keys are ``-k Keyword=Value`` (or ``-k gggg,eeee=Value``); a key without a value asks for
that attribute back. ``-k QueryRetrieveLevel=SERIES`` sets the level (default: the top
level of the model, STUDY for Study Root ``-S``, PATIENT for Patient Root ``-P``).
``get`` and ``move --to-self`` write what arrives as ``receive`` does
(``DIR/<Study>/<Series>/<SOP>.dcm``) and print the final sub-operation counts; the exit
code is non-zero when any sub-operation failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiodicom.cli.net import (
    CliError,
    add_ae_options,
    add_timeout_options,
    add_tls_client_options,
    check_ae_options,
    client_ssl,
    client_timeouts,
    configure_logging,
    listen_port,
    port_number,
)

if TYPE_CHECKING:
    import pydicom

    from aiodicom.dimse.retrieve import RetrieveResult

#: ``{keyword: value or None}``, in the order given.
Keys = dict[str, str | None]


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``find``, ``get`` and ``move`` subcommands."""
    find = _common(subparsers, "find", "C-FIND: query a DICOM node")
    find.add_argument("--json", action="store_true", help="one JSON object per match, keyed by keyword")
    find.set_defaults(func=_find)

    get = _common(subparsers, "get", "C-GET: retrieve instances on the same association")
    get.add_argument("--output-dir", required=True, type=Path, help="where to write the files")
    get.add_argument("--storage-class", action="append", default=[], metavar="UID",
                     help="a storage SOP class to receive, proposed first (repeatable); the common ones, "
                     "then as many others as fit in 128 contexts, follow")
    get.set_defaults(func=_get)

    move = _common(subparsers, "move", "C-MOVE: have a DICOM node send instances to an AE title")
    where = move.add_mutually_exclusive_group(required=True)
    where.add_argument("--dest", metavar="AE", help="the move destination (an AE title the peer knows)")
    where.add_argument("--to-self", action="store_true",
                       help="receive them here: listen on --port as --aet (the peer must know it as a destination)")
    move.add_argument("--port", dest="listen_port", type=listen_port, default=None, metavar="P",
                      help="with --to-self: the port to listen on")
    move.add_argument("--listen-host", default="127.0.0.1",
                      help="with --to-self: the address to listen on; 0.0.0.0 for every interface [%(default)s]")
    move.add_argument("--output-dir", type=Path, help="with --to-self: where to write the files")
    move.set_defaults(func=_move)


def _common(subparsers: argparse._SubParsersAction[Any], name: str, help_text: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(name, help=help_text, description=help_text)
    parser.add_argument("host")
    parser.add_argument("port", type=port_number)
    add_ae_options(parser)
    model = parser.add_mutually_exclusive_group()
    model.add_argument("-P", "--patient", dest="model", action="store_const", const="patient",
                       help="Patient Root information model")
    model.add_argument("-S", "--study", dest="model", action="store_const", const="study",
                       help="Study Root information model (default)")
    parser.set_defaults(model="study")
    parser.add_argument("-k", "--key", action="append", default=[], metavar="KEY[=VALUE]",
                        help="a query key: Keyword or gggg,eeee, with =Value to match (repeatable)")
    add_timeout_options(parser)
    add_tls_client_options(parser)
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def parse_keys(keys: Iterable[str]) -> Keys:
    """``-k`` options as ``{keyword: value}``: ``None`` asks for the attribute back.

    The models' keys are known without pydicom (a retrieve never imports it); other
    keywords and tags are looked up in pydicom's dictionary.
    """
    from aiodicom.dimse.services.models import QUERY_KEYS, QUERY_KEYWORDS

    parsed: Keys = {}
    for key in keys:
        name, has_value, value = key.partition("=")
        name = name.strip().strip("()")
        keyword = _keyword_of_tag(name, QUERY_KEYWORDS) if "," in name else name
        if keyword not in QUERY_KEYS and not _in_dictionary(keyword):
            raise CliError(f"-k {key}: unknown DICOM keyword or tag {name!r}")
        parsed[keyword] = value if has_value else None
    return parsed


def _keyword_of_tag(name: str, known: dict[int, str]) -> str:
    try:
        group, element = (int(part, 16) for part in name.split(","))
    except ValueError:
        raise CliError(f"-k {name}: not a tag (gggg,eeee)") from None
    tag = (group << 16) | element
    if tag in known:
        return known[tag]
    from pydicom.datadict import keyword_for_tag

    return str(keyword_for_tag(tag) or "")


def _in_dictionary(keyword: str) -> bool:
    from pydicom.datadict import tag_for_keyword

    return bool(keyword) and tag_for_keyword(keyword) is not None


def _connect(args: argparse.Namespace, operations: tuple[str, ...], **options: Any) -> Any:
    from aiodicom.dimse.client import COMMON_STORAGE_SOP_CLASSES, connect, query_retrieve_contexts

    storage = [*getattr(args, "storage_class", ()), *COMMON_STORAGE_SOP_CLASSES]
    return connect(
        args.host, args.port, called_ae=args.aec, calling_ae=args.aet,
        contexts=query_retrieve_contexts([args.model], operations=operations, storage_classes=storage, fill=True),
        ssl=client_ssl(args), timeouts=client_timeouts(args), **options,
    )  # fmt: skip


def _prepare(args: argparse.Namespace) -> Keys:
    check_ae_options(args)
    configure_logging(args.verbose, client=True)
    return parse_keys(args.key)


# --- find ---------------------------------------------------------------------------------


def _find(args: argparse.Namespace) -> int:
    from aiodicom.runner import run

    keys = _prepare(args)

    async def main() -> int:
        count = 0
        async with _connect(args, ("find",)) as assoc:
            async for match in assoc.find(keys, model=args.model):
                count += 1
                line = json.dumps(to_json(match)) if args.json else _text_line(count, match)
                print(line, flush=True)
        if not args.json:
            print(f"aiodicom find: {count} match{'es' if count != 1 else ''}", file=sys.stderr)
        return 0

    return run(main)


def to_json(dataset: pydicom.Dataset) -> dict[str, Any]:
    """A match as ``{keyword: value}``: strings, numbers, lists for multiple values, sequences nested."""
    out: dict[str, Any] = {}
    for element in dataset:
        keyword = element.keyword or f"{element.tag.group:04X}{element.tag.element:04X}"
        out[keyword] = _json_value(element.VR, element.value)
    return out


def _json_value(vr: str, value: Any) -> Any:
    if vr == "SQ":
        return [to_json(item) for item in value]
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [_json_value(vr, item) for item in value]
    if isinstance(value, (int, float)) or value is None:
        return value
    return str(value)


def _text_line(number: int, dataset: pydicom.Dataset) -> str:
    fields = (f"{key}={value}" for key, value in to_json(dataset).items())
    return f"{number}: " + "  ".join(fields)


# --- get and move -------------------------------------------------------------------------


def _get(args: argparse.Namespace) -> int:
    from aiodicom.cli.receive import FileWriter, prepare_output_dir
    from aiodicom.runner import run

    keys = _prepare(args)
    output_dir = prepare_output_dir(args.output_dir)
    writer = FileWriter(output_dir)

    async def main() -> int:
        async with _connect(args, ("get",), spool_dir=output_dir / ".incoming", memory_threshold=0) as assoc:
            retrieval = assoc.get(keys, model=args.model)
            return await _write_all(retrieval, writer, "C-GET", output_dir, lambda: retrieval.result)

    return run(main)


def _move(args: argparse.Namespace) -> int:
    from aiodicom.runner import run

    keys = _prepare(args)
    if not args.to_self:
        if args.listen_port is not None or args.output_dir is not None:
            raise CliError("--port and --output-dir go with --to-self (--dest names another AE)")

        async def move_elsewhere() -> int:
            async with _connect(args, ("move",)) as assoc:
                result = await _reporting_failure(
                    "C-MOVE", assoc.move(keys, destination_ae=args.dest, model=args.model)
                )
            return _report("C-MOVE", result, f"sent to {args.dest}")

        return run(move_elsewhere)
    if args.listen_port is None or args.output_dir is None:
        raise CliError("--to-self needs --port P and --output-dir DIR")
    return run(_move_to_self, args, keys)


async def _move_to_self(args: argparse.Namespace, keys: Keys) -> int:
    import anyio

    from aiodicom.cli.receive import FileWriter, prepare_output_dir
    from aiodicom.dimse.retrieve import MoveInbox
    from aiodicom.dimse.server import Server

    output_dir = prepare_output_dir(args.output_dir)
    inbox = MoveInbox(args.aet)
    server = Server(args.aet, args.listen_host, args.listen_port, on_store=inbox.on_store,
                    spool_dir=output_dir / ".incoming", memory_threshold=0)  # fmt: skip
    async with anyio.create_task_group() as group:
        try:
            await group.start(server.serve)
        except OSError as exc:
            raise CliError(f"cannot listen on {args.listen_host}:{args.listen_port}: {exc.strerror or exc}") from None
        try:
            async with _connect(args, ("move",)) as assoc:
                retrieval = assoc.move_to_self(keys, inbox=inbox, model=args.model)
                code = await _write_all(retrieval, FileWriter(output_dir), "C-MOVE", output_dir,
                                        lambda: retrieval.result)  # fmt: skip
        finally:
            server.shutdown(0)
    return code


async def _write_all(
    instances: Any, writer: Any, operation: str, output_dir: Path, result: Callable[[], RetrieveResult | None]
) -> int:
    """Write each instance as it arrives (as ``receive`` does); report the final counts."""

    async def write() -> None:
        async for instance in instances:
            try:
                await writer(instance)
            finally:
                instance.close()

    await _reporting_failure(operation, write())
    final = result()
    assert final is not None
    return _report(operation, final, f"wrote {writer.count} files to {output_dir}")


async def _reporting_failure(operation: str, awaitable: Any) -> Any:
    """Await; a failure status prints its counts before the one-line error."""
    from aiodicom.dimse.retrieve import RetrieveFailed

    try:
        return await awaitable
    except RetrieveFailed as exc:
        _print_counts(operation, exc.result)
        raise


def _report(operation: str, result: RetrieveResult, done: str) -> int:
    _print_counts(operation, result)
    print(f"aiodicom {operation[2:].lower()}: {done}", flush=True)
    return 0 if result.failed == 0 and (result.status.is_success or result.status.is_warning) else 1


def _print_counts(operation: str, result: RetrieveResult) -> None:
    print(f"{operation}: {result}", flush=True)
    for uid in _limited(result.failed_sop_instance_uids, 20):
        print(f"  failed: {uid}", file=sys.stderr)


def _limited(items: Iterable[str], limit: int) -> Iterator[str]:
    for index, item in enumerate(items):
        if index == limit:
            yield "..."
            return
        yield item
