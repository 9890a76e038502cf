"""HistoricInput: a pipeline input that fetches a patient's prior studies from an archive.

When a patient's first instance is kept, the input opens an association to its
``archive``, lets :meth:`HistoricInput.select_priors` pick the studies to fetch
(default: C-FIND at STUDY level for the patient, every study but the incoming one), and
retrieves them by C-GET (``method = "get"``) or by C-MOVE to the pipeline itself
(``method = "move"``; the archive must know the pipeline's AE title as a destination).
Either way each prior is stored like any received C-STORE (same storage, same quota,
same folder) and routed to this input alone (:meth:`Input.claims`), not to the inputs of
the incoming data, even when their ``required_values`` would take it.

The input validates once the retrieval has ended. Every network wait is bounded: the
association's :class:`~aiodicom.Timeouts` and, over the whole selection and retrieval,
``retrieval_timeout``. A refused connection, a failed or timed-out query or retrieve, or
sub-operations that failed end in the ``failed`` state for that patient: the error is
logged (``priors_failed``, patient hashed), counted (``status().counts["fetch_failed"]``)
and listed in ``status().last_errors``; then ``on_failure`` decides:

- ``"quarantine"`` (default): at validation the patient's data (current and whatever
  priors arrived) go to the quarantine folder with a record saying why;
- ``"validate"``: the patient is processed with whatever priors arrived (maybe none);
  ``container.datasets[name]`` shows which.

The pipeline keeps serving other patients meanwhile. The retrieval's state (the studies
being fetched, how it ended) is kept beside the patient's files
(``historic-<class>.json``), so after a restart the fetched priors still belong to this
input; a retrieval the restart interrupted counts as failed (it is not started again).
HistoricInput cannot be one side of ``InputA | InputB``.
"""

from __future__ import annotations

import json
import time
import weakref
from collections.abc import Sequence
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

import anyio

from aiodicom._log import get_logger
from aiodicom.dimse.client import (
    COMMON_STORAGE_SOP_CLASSES,
    ClientAssociation,
    connect,
    query_retrieve_contexts,
)
from aiodicom.errors import AiodicomError, ConfigurationError
from aiodicom.pipeline.export import Address, AddressLike
from aiodicom.pipeline.inputs import Input, InputFailed, StoredInstance
from aiodicom.pipeline.storage import patient_hash
from aiodicom.transport.association import Timeouts

if TYPE_CHECKING:
    from aiodicom.pipeline.pipeline import Pipeline

__all__ = ["HistoricInput", "PriorQuery", "PriorsFailed"]

_log = get_logger("aiodicom.pipeline.historic")

STUDY_INSTANCE_UID = 0x0020000D

#: Retrievals running at once, per pipeline and HistoricInput class (see ``max_concurrent``).
_SLOTS: weakref.WeakKeyDictionary[Pipeline, dict[type[HistoricInput], anyio.Semaphore]] = weakref.WeakKeyDictionary()

#: Where a patient's retrieval stands.
State = Literal["idle", "retrieving", "done", "failed"]


class PriorsFailed(AiodicomError):
    """The priors of a patient could not be fetched (why is in the message)."""


@dataclass(frozen=True)
class PriorQuery:
    """What :meth:`HistoricInput.select_priors` gets to decide which studies to fetch."""

    #: The value of the pipeline's ``patient_identifier_tag``.
    patient_id: str
    #: The patient's first instance (its routing values: ``instance.value(tag)``).
    instance: StoredInstance
    #: An open association to the archive (``find``, ``move``, ``get``).
    association: ClientAssociation

    @property
    def study_instance_uid(self) -> str:
        """The incoming study's UID (empty if unknown)."""
        return str(self.instance.value(STUDY_INSTANCE_UID) or "")


class HistoricInput(Input):
    """An input holding a patient's prior studies, fetched when the patient's first instance arrives.

    Set ``archive`` (``"AE@host:port"``, an :class:`~aiodicom.pipeline.export.Address` or a
    tuple) and, if needed, override :meth:`select_priors`. See the module docstring.
    """

    #: The archive to query and retrieve from; its called AE, host and port.
    archive: ClassVar[AddressLike | None] = None
    #: "get": C-GET on the query's association; "move": C-MOVE to the pipeline's own AE.
    method: ClassVar[Literal["get", "move"]] = "get"
    #: The Query/Retrieve information model: "study" (Study Root) or "patient" (Patient Root).
    model: ClassVar[str] = "study"
    #: What a failed retrieval does to the patient: "quarantine" or "validate" (without priors).
    on_failure: ClassVar[Literal["quarantine", "validate"]] = "quarantine"
    #: Seconds the selection and retrieval of one patient's priors may take in all (the
    #: wait for a slot under ``max_concurrent`` does not count).
    retrieval_timeout: ClassVar[float] = 300.0
    #: Patients whose priors are fetched at once (each holds one association to the archive).
    max_concurrent: ClassVar[int] = 4
    #: Waits of the association to the archive (connect, negotiation, each response).
    timeouts: ClassVar[Timeouts] = Timeouts(connect=10.0, acse=10.0, dimse=60.0, network_idle=120.0)
    #: Storage SOP classes proposed to receive a C-GET's instances in.
    storage_classes: ClassVar[Sequence[str]] = COMMON_STORAGE_SOP_CLASSES

    may_claim = True

    def __init__(self) -> None:
        super().__init__()
        self.state: State = "idle"
        #: Why the retrieval failed (None unless ``state == "failed"``).
        self.error: str | None = None
        #: Study Instance UIDs being fetched (their instances are this input's).
        self.studies: frozenset[str] = frozenset()
        #: A release found the retrieval running: validate again when it ends.
        self._deferred = False

    # --- configuration -------------------------------------------------------------------

    @classmethod
    def value_tags(cls) -> frozenset[int]:
        return super().value_tags() | {STUDY_INSTANCE_UID}

    @classmethod
    def check(cls) -> None:
        super().check()
        if cls.archive is None:
            raise ConfigurationError(f"{cls.__name__}.archive is not set: name the archive to fetch priors from")
        Address.parse(cls.archive)
        if cls.method not in ("get", "move"):
            raise ConfigurationError(f"{cls.__name__}.method must be 'get' or 'move', not {cls.method!r}")
        if cls.on_failure not in ("quarantine", "validate"):
            raise ConfigurationError(f"{cls.__name__}.on_failure must be 'quarantine' or 'validate'")
        if cls.max_concurrent < 1:
            raise ConfigurationError(f"{cls.__name__}.max_concurrent must be at least 1")

    # --- routing -------------------------------------------------------------------------

    def claims(self, instance: StoredInstance) -> bool:
        return str(instance.value(STUDY_INSTANCE_UID) or "") in self.studies

    def accepts(self, instance: StoredInstance) -> bool:
        return self.claims(instance) and super().accepts(instance)

    @property
    def busy(self) -> bool:
        return self.state == "retrieving"

    # --- restart -------------------------------------------------------------------------

    @classmethod
    def state_file(cls) -> str:
        """The file in the patient's folder that keeps this input's retrieval state."""
        return f"historic-{cls.__name__}.json"

    def restore(self, folder: Path) -> None:
        """Read back which studies were being fetched, so that their files come back to this
        input; a retrieval a restart interrupted counts as failed (``on_failure`` applies)."""
        try:
            record = json.loads((folder / type(self).state_file()).read_text())
        except (OSError, ValueError):
            record = {}
        studies, state = record.get("studies"), record.get("state")
        self.studies = frozenset(str(uid) for uid in studies) if isinstance(studies, list) else frozenset()
        if state in ("done", "failed"):
            self.state, self.error = state, record.get("error") if state == "failed" else None
        else:
            self.state, self.error = "failed", "the retrieval was interrupted by a restart"
            _log.warning("priors_interrupted", input=type(self).__name__, on_failure=type(self).on_failure)

    async def _save_state(self, pipeline: Pipeline, patient_id: str) -> None:
        record: dict[str, object] = {"state": self.state, "studies": sorted(self.studies), "error": self.error}
        try:
            await pipeline.save_input_state(patient_id, type(self).state_file(), record)
        except OSError as exc:  # the retrieval goes on; only a restart would miss it
            _log.warning("priors_state_not_saved", patient=patient_hash(patient_id), error=exc.strerror or repr(exc))

    # --- what users override -------------------------------------------------------------

    async def select_priors(self, query: PriorQuery) -> Sequence[str]:
        """The Study Instance UIDs to fetch; override to choose (by date, modality...).

        Default: every study of the patient the archive knows (C-FIND at STUDY level on
        PatientID) except the incoming one.
        """
        keys = {"QueryRetrieveLevel": "STUDY", "PatientID": query.patient_id, "StudyInstanceUID": ""}
        found: dict[str, None] = {}
        async with aclosing(query.association.find(keys, model=type(self).model, level="STUDY")) as matches:
            async for match in matches:
                uid = str(match.get("StudyInstanceUID", "") or "")
                if uid and uid != query.study_instance_uid:
                    found[uid] = None
        return list(found)

    def validate(self) -> bool:
        """Ready once the retrieval has ended (see ``on_failure`` for a failed one)."""
        if self.state == "retrieving":
            self._deferred = True
            return False
        if self.state == "failed" and type(self).on_failure == "quarantine":
            raise InputFailed(f"prior studies not fetched: {self.error}")
        return True

    # --- the retrieval -------------------------------------------------------------------

    def first_instance(self, pipeline: Pipeline, patient_id: str, instance: StoredInstance) -> None:
        if self.state != "idle":
            return
        self.state = "retrieving"
        pipeline.start_task(lambda: self._fetch(pipeline, patient_id, instance))

    async def _fetch(self, pipeline: Pipeline, patient_id: str, instance: StoredInstance) -> None:
        cls = type(self)
        log = _log.bind(patient=patient_hash(patient_id), input=cls.__name__, method=cls.method)
        started = time.monotonic()
        holder: list[int] = []  # the C-GET association's id, once it delivered
        slots = _SLOTS.setdefault(pipeline, {}).setdefault(cls, anyio.Semaphore(cls.max_concurrent))
        try:
            async with slots:
                with anyio.fail_after(cls.retrieval_timeout):
                    count = await self._retrieve(pipeline, patient_id, instance, holder)
        except Exception as exc:  # noqa: BLE001 - the network or the user's select_priors: fail this patient only
            self.state, self.error = "failed", _describe(exc, cls.retrieval_timeout)
            log.error("priors_failed", error=self.error, on_failure=cls.on_failure, studies=len(self.studies))
            pipeline.fetch_failed(patient_id, f"{cls.__name__}: {self.error}")
        else:
            self.state = "done"
            log.info("priors_retrieved", studies=len(self.studies), instances=count,
                     seconds=round(time.monotonic() - started, 3))  # fmt: skip
        finally:
            if self.state == "retrieving":  # cancelled: the pipeline is stopping
                self.state, self.error = "failed", "the pipeline stopped during the retrieval"
        with anyio.CancelScope(shield=True):
            await self._save_state(pipeline, patient_id)
            await pipeline.fetch_ended(patient_id, association_id=holder[0] if holder else None, validate=self._deferred)

    async def _retrieve(self, pipeline: Pipeline, patient_id: str, instance: StoredInstance, holder: list[int]) -> int:
        """Select, then fetch each study; the number of instances fetched."""
        cls = type(self)
        address = Address.parse(cls.archive)  # type: ignore[arg-type]
        operations = ("find", cls.method)
        contexts = query_retrieve_contexts((cls.model,), operations=operations, storage_classes=cls.storage_classes)
        async with connect(address.host, address.port, called_ae=address.called_ae, calling_ae=pipeline.ae_title,
                           contexts=contexts, timeouts=cls.timeouts) as association:  # fmt: skip
            studies = list(await self.select_priors(PriorQuery(patient_id, instance, association)))
            self.studies = frozenset(studies)
            await self._save_state(pipeline, patient_id)
            count = 0
            for uid in studies:
                keys = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": uid}
                if cls.method == "move":
                    count += await self._move(association, keys, pipeline.ae_title)
                else:
                    count += await self._get(association, keys, pipeline, holder)
            return count

    async def _move(self, association: ClientAssociation, keys: dict[str, str], destination: str) -> int:
        result = await association.move(keys, destination_ae=destination, model=type(self).model, level="STUDY")
        if result.failed:
            raise PriorsFailed(f"C-MOVE: {result}")
        return result.completed + result.warning

    async def _get(self, association: ClientAssociation, keys: dict[str, str], pipeline: Pipeline, holder: list[int]) -> int:
        count, refused = 0, 0
        retrieval = association.get(keys, model=type(self).model, level="STUDY")
        async for received in retrieval:
            holder[:] = [received.association.id]
            status = await pipeline.store_fetched(received)
            if status is None:
                count += 1
            else:
                received.close()
                refused += 1
        result = retrieval.result
        if refused or (result is not None and result.failed):
            raise PriorsFailed(f"C-GET: {refused} instance(s) not stored by the pipeline; archive: {result}")
        return count


def _describe(exc: BaseException, limit: float) -> str:
    """A failure in words, for logs and ``status()`` (no patient data in it)."""
    if isinstance(exc, TimeoutError) and not isinstance(exc, AiodicomError):
        return f"timed out after {limit:g} s"
    return f"{type(exc).__name__}: {exc}"
