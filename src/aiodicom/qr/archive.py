"""An archive folder served by Query/Retrieve: stores C-STOREs, answers C-FIND, C-MOVE and C-GET.

:class:`Archive` holds the folder and its :class:`~aiodicom.qr.index.Index` and gives a
:class:`~aiodicom.dimse.server.Server` its three handlers:

- :meth:`Archive.store`: the instance is saved as ``aiodicom receive`` saves it
  (``<Study>/<Series>/<SOP>.dcm``, sanitised, atomically; spooled data sets are renamed
  into place) and indexed before success is answered;
- :meth:`Archive.find`: the identifier is compiled (:mod:`aiodicom.qr.query`), the index
  searched in batches, each match answered with the request's keys;
- :meth:`Archive.retrieve`: the unique keys select the instances to send.

Limits keep a hostile query from costing without bound: at most ``max_matches`` C-FIND
answers (then 0xA700 with a comment), at most ``max_instances`` per retrieve (0xA701),
and a retrieve must name its level's unique key (0xA900 otherwise: an empty SOP Instance
UID at image level is not "send me everything").
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from aiodicom._log import get_logger
from aiodicom.codec.identifier import Identifier
from aiodicom.dimse import status as S
from aiodicom.dimse.services.models import UNIQUE_KEYS
from aiodicom.dimse.services.query import FindRequest, Query
from aiodicom.dimse.services.retrieve import (
    MoveDestination,
    Retrieve,
    RetrieveRequest,
    StoredInstance,
)
from aiodicom.dimse.store import DEFAULT_LAYOUT
from aiodicom.qr.index import SCANNED_TAGS, Index, ReconcileReport
from aiodicom.qr.matching import MatchingKeyError, matches
from aiodicom.qr.query import Query as CompiledQuery
from aiodicom.qr.query import answer, compile_query

if TYPE_CHECKING:
    from aiodicom.dimse.store import ReceivedInstance
    from aiodicom.transport.association import Timeouts

__all__ = ["Archive"]

_log = get_logger("aiodicom.qr")

#: Answer element list, as the C-FIND service encodes it.
_Answer = list[tuple[int, str, bytes]]


class Archive:
    """A folder of instances with its index; see the module's docstring.

    Use ``async with Archive(root) as archive`` (or :meth:`open`/:meth:`close`): opening
    brings the index in step with the folder.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        database: str | os.PathLike[str] | None = None,
        max_matches: int = 100_000,
        max_instances: int = 100_000,
    ) -> None:
        self.root = Path(root).resolve()
        self.database = database
        self.max_matches = max_matches
        self.max_instances = max_instances
        self._index: Index | None = None

    @property
    def index(self) -> Index:
        if self._index is None:
            raise RuntimeError("the archive is not open: use `async with Archive(...)` or open()")
        return self._index

    async def open(self) -> ReconcileReport:
        """Open the index and reconcile it with the folder (new files in, vanished ones out)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._index = Index(self.root, self.database)
        return await self._index.reconcile()

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None

    async def __aenter__(self) -> Archive:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    def services(
        self,
        *,
        ae_title: str,
        destinations: Mapping[str, MoveDestination] | None = None,
        timeouts: Timeouts | None = None,
    ) -> list[Query | Retrieve]:
        """The C-FIND and C-MOVE/C-GET services over this archive, for ``Server(services=...)``."""
        options = {} if timeouts is None else {"timeouts": timeouts}
        return [
            Query(self.find),
            Retrieve(self.retrieve, destinations=destinations, ae_title=ae_title, **options),  # type: ignore[arg-type]
        ]

    # --- storing ---------------------------------------------------------------------------

    async def store(self, instance: ReceivedInstance) -> int:
        """C-STORE handler: save under the archive, index, then answer success."""
        tags = instance.tags(SCANNED_TAGS)
        path = instance.save_under(self.root, DEFAULT_LAYOUT)
        stat = os.stat(path)
        tags.setdefault(0x00080018, instance.sop_instance_uid.encode())
        tags.setdefault(0x00080016, instance.sop_class_uid.encode())
        self.index.add(path, tags, instance.transfer_syntax, stat.st_size, stat.st_mtime_ns)
        return S.SUCCESS

    # --- querying ----------------------------------------------------------------------------

    async def find(self, request: FindRequest) -> AsyncIterator[tuple[int, _Answer | None]]:
        """C-FIND handler: one pending answer per match, then a failure status if a limit hit."""
        try:
            query = compile_query(request.identifier, request.model)
        except MatchingKeyError as exc:
            _log.info("find_refused", error=str(exc))
            yield S.Status(S.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, error_comment=str(exc)), None
            return
        sent = 0
        ours = request.association.called_ae.strip()
        pending = S.PENDING_WARNING if query.unsupported else S.PENDING
        async for row in self._matching_rows(query):
            if sent >= self.max_matches:
                comment = f"more than {self.max_matches} matches: narrow the query"
                yield S.Status(S.OUT_OF_RESOURCES, error_comment=comment), None
                return
            charset = None if all(value.isascii() for value in row[1].values()) else "ISO_IR 192"
            yield pending, answer(query, row[1], charset, ours)
            sent += 1

    async def _matching_rows(self, query: CompiledQuery) -> AsyncIterator[tuple[int, dict[str, str]]]:
        index = self.index
        stored = [(keyword, predicate) for keyword, predicate in query.predicates.items() if keyword not in query.computed]
        later = [(keyword, predicate) for keyword, predicate in query.predicates.items() if keyword in query.computed]
        async for row_id, row in index.search(query.level, query.exact):
            if not all(matches(predicate, row.get(keyword)) for keyword, predicate in stored):
                continue
            for keyword in query.computed:
                row[keyword] = index.computed(row_id, keyword)
            if all(matches(predicate, row.get(keyword)) for keyword, predicate in later):
                yield row_id, row

    # --- retrieving --------------------------------------------------------------------------

    async def retrieve(self, request: RetrieveRequest) -> Sequence[StoredInstance] | S.Status:
        """C-MOVE/C-GET handler: the instances under the entities the unique keys select."""
        try:
            query = compile_query(request.identifier, request.model, retrieve=True)
            _require_unique_key(query, request.identifier)
        except MatchingKeyError as exc:
            _log.info("retrieve_refused", error=str(exc))
            return S.Status(S.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, error_comment=str(exc))
        found: list[StoredInstance] = []
        async for row_id, _row in self._matching_rows(query):
            found.extend(self.index.instances(query.level, row_id))
            if len(found) > self.max_instances:
                comment = f"more than {self.max_instances} instances: retrieve less at once"
                return S.Status(S.OUT_OF_RESOURCES_MATCHES, error_comment=comment)
        missing = [item.path for item in found if not item.path.is_file()]
        if missing:  # removed behind our back: the index forgets them, the sub-operations fail
            _log.warning("archive_files_missing", count=len(missing))
            self.index.forget(missing)
        return found


def _require_unique_key(query: CompiledQuery, identifier: Identifier) -> None:
    """A retrieve names the entities it wants by the unique key of its level (PS3.4 C.4.2.2.1)."""
    keyword = UNIQUE_KEYS[query.level]
    if keyword not in query.predicates:
        raise MatchingKeyError(f"a {query.level.value} level retrieve needs a value for {keyword}")
