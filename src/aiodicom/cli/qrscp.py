"""``aiodicom qrscp``: a Query/Retrieve SCP over a folder it also stores into."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from aiodicom.cli import EXIT_INTERRUPTED
from aiodicom.cli.net import CliError, at_least_one, configure_cli_logging
from aiodicom.cli.receive import (
    Stopper,
    Tally,
    add_listen_options,
    add_running_options,
    prepare_output_dir,
    server_options,
    start_listening,
)

if TYPE_CHECKING:
    from aiodicom.dimse.services.retrieve import MoveDestination

#: ``NAME=AE@host:port`` or ``AE@host:port`` (NAME is then AE); IPv6 hosts in brackets.
_DESTINATION = re.compile(r"(?:(?P<name>[^=]+)=)?(?P<ae>[^@]+)@(?P<host>\[[^\]]+\]|[^:]+):(?P<port>\d+)")


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``qrscp`` subcommand."""
    qrscp = subparsers.add_parser(
        "qrscp",
        help="run a Query/Retrieve SCP (C-FIND, C-MOVE, C-GET) over a folder it stores into",
        description="Store incoming C-STOREs in DIR/<Study>/<Series>/<SOP>.dcm, index them (SQLite, "
        "in DIR/.aiodicom-index.sqlite, brought in step with the folder at start) and answer "
        "C-FIND, C-MOVE and C-GET (Patient and Study Root) over them. C-MOVE sends only to the "
        "--destination entries.",
    )
    add_listen_options(qrscp)
    qrscp.add_argument("--storage", required=True, type=Path, metavar="DIR", help="the archive folder")
    qrscp.add_argument("--destination", action="append", default=[], metavar="NAME=AE@HOST:PORT",
                       help="a C-MOVE destination: requests naming NAME go to AE at HOST:PORT "
                       "(NAME may be left out: AE@HOST:PORT); repeat for more")
    qrscp.add_argument("--max-associations", type=at_least_one, default=64, help="associations at once [%(default)s]")
    qrscp.add_argument("--max-matches", type=at_least_one, default=100_000, metavar="N",
                       help="C-FIND answers at most N matches, then fails with 0xA700 [%(default)s]")
    qrscp.add_argument("--max-instances", type=at_least_one, default=100_000, metavar="N",
                       help="a C-MOVE or C-GET sends at most N instances, else fails with 0xA701 [%(default)s]")
    add_running_options(qrscp)
    qrscp.set_defaults(func=_qrscp)


def parse_destinations(entries: list[str]) -> dict[str, MoveDestination]:
    """``--destination`` values as a table; a malformed one is a one-line error."""
    from aiodicom.codec.ae import normalize_ae_title
    from aiodicom.dimse.services.retrieve import MoveDestination
    from aiodicom.transport.address import check_port

    table: dict[str, MoveDestination] = {}
    for entry in entries:
        found = _DESTINATION.fullmatch(entry.strip())
        if found is None:
            raise CliError(f"--destination {entry!r}: expected NAME=AE@HOST:PORT or AE@HOST:PORT")
        ae = normalize_ae_title(found["ae"], "destination AE title")
        name = normalize_ae_title(found["name"] or ae, "destination name")
        port = check_port(int(found["port"]), listening=False)
        if name in table:
            raise CliError(f"--destination {name} is given twice")
        table[name] = MoveDestination(ae, found["host"].strip("[]"), port)
    return table


def _qrscp(args: argparse.Namespace) -> int:
    from aiodicom.codec.ae import normalize_ae_title
    from aiodicom.runner import run

    configure_cli_logging("info" if args.verbose else args.log_level, args.log_format)
    normalize_ae_title(args.aet, "--aet")
    destinations = parse_destinations(args.destination)
    storage = prepare_output_dir(args.storage)
    return run(_serve, args, storage, destinations)


async def _serve(args: argparse.Namespace, storage: Path, destinations: dict[str, MoveDestination]) -> int:
    from aiodicom.dimse.server import Server
    from aiodicom.qr.archive import Archive

    tally = Tally(sys.stdout, live=False)
    options = server_options(args, tally)
    timeouts = options["timeouts"]
    async with Archive(storage, max_matches=args.max_matches, max_instances=args.max_instances) as archive:
        print(f"aiodicom qrscp: {archive.index.count()} instances indexed in {storage}", flush=True)
        server = Server(
            on_store=tally.counting(archive.store),
            **options,
            spool_dir=storage / ".incoming",
            memory_threshold=0,
            services=archive.services(ae_title=args.aet, destinations=destinations, timeouts=timeouts),
        )
        stopper = Stopper(server.shutdown, args.grace, tally, command="qrscp")
        async with anyio.create_task_group() as watchers:
            watchers.start_soon(stopper.watch)
            try:
                async with anyio.create_task_group() as serving:
                    port = await start_listening(serving, server.serve, args.host, args.port)
                    names = ", ".join(f"{name}={d.ae_title}@{d.host}:{d.port}" for name, d in destinations.items())
                    print(f"aiodicom qrscp: listening on {args.host}:{port} as {args.aet}, serving {storage}; "
                          f"move destinations: {names or 'none'}", flush=True)
            finally:
                watchers.cancel_scope.cancel()
    return EXIT_INTERRUPTED if stopper.interrupted else 0
