"""aiodicom: asyncio-native DICOM networking and image-processing pipelines.

The small public surface::

    async with aiodicom.connect("pacs", 104, called_ae="PACS") as assoc:
        await assoc.echo()
        status = await assoc.store("image.dcm")

    server = aiodicom.Server("MYAE", port=0, on_store=handle)
    port = await task_group.start(server.serve)

Names are imported on first use, so ``import aiodicom.grinders`` does not
pull in the network stack (and vice versa).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "ClientAssociation": "aiodicom.dimse.client",
    "connect": "aiodicom.dimse.client",
    "contexts_for_files": "aiodicom.dimse.client",
    "query_retrieve_contexts": "aiodicom.dimse.client",
    "MoveInbox": "aiodicom.dimse.retrieve",
    "QueryFailed": "aiodicom.dimse.retrieve",
    "Retrieval": "aiodicom.dimse.retrieve",
    "RetrieveFailed": "aiodicom.dimse.retrieve",
    "RetrieveResult": "aiodicom.dimse.retrieve",
    "InvalidQueryError": "aiodicom.dimse.retrieve",
    "QueryLevel": "aiodicom.dimse.services.models",
    "Server": "aiodicom.dimse.server",
    "Status": "aiodicom.dimse.status",
    "StatusCategory": "aiodicom.dimse.status",
    "AssociationInfo": "aiodicom.dimse.association",
    "ReceivedInstance": "aiodicom.dimse.store",
    "Archive": "aiodicom.qr.archive",
    "MoveDestination": "aiodicom.dimse.services.retrieve",
    "Timeouts": "aiodicom.transport.timeouts",
    "ConnectTimeout": "aiodicom.transport.timeouts",
    "AssociateTimeout": "aiodicom.transport.timeouts",
    "ResponseTimeout": "aiodicom.transport.timeouts",
    "IdleTimeout": "aiodicom.transport.timeouts",
    "run": "aiodicom.runner",
    "configure_logging": "aiodicom._log",
    "JsonLogFormatter": "aiodicom._log",
    "Pipeline": "aiodicom.pipeline.pipeline",
    "InputContainer": "aiodicom.pipeline.pipeline",
    "PipelineStatus": "aiodicom.pipeline.pipeline",
    "Sender": "aiodicom.pipeline.pipeline",
    "Input": "aiodicom.pipeline.inputs",
    "DynamicInput": "aiodicom.pipeline.inputs",
    "InputFailed": "aiodicom.pipeline.inputs",
    "HistoricInput": "aiodicom.pipeline.historic",
    "PriorQuery": "aiodicom.pipeline.historic",
    "AnyOf": "aiodicom.pipeline.inputs",
    "Not": "aiodicom.pipeline.inputs",
    "offload": "aiodicom.pipeline.offload",
    "Exporter": "aiodicom.pipeline.export",
    "DicomExport": "aiodicom.pipeline.export",
    "FileExport": "aiodicom.pipeline.export",
    "AiodicomError": "aiodicom.errors",
    "AssociationAborted": "aiodicom.errors",
    "AssociationError": "aiodicom.errors",
    "AssociationRejected": "aiodicom.errors",
    "DicomFileError": "aiodicom.errors",
    "DicomTimeoutError": "aiodicom.errors",
    "DimseError": "aiodicom.errors",
    "InvalidPortError": "aiodicom.errors",
    "MalformedDatasetError": "aiodicom.errors",
    "NoPresentationContext": "aiodicom.errors",
    "ProtocolError": "aiodicom.errors",
    "StatusError": "aiodicom.errors",
}

__all__ = [
    "AiodicomError",
    "AnyOf",
    "Archive",
    "AssociateTimeout",
    "AssociationAborted",
    "AssociationError",
    "AssociationInfo",
    "AssociationRejected",
    "ClientAssociation",
    "ConnectTimeout",
    "DicomExport",
    "DicomFileError",
    "DicomTimeoutError",
    "DimseError",
    "DynamicInput",
    "Exporter",
    "FileExport",
    "HistoricInput",
    "IdleTimeout",
    "Input",
    "InputFailed",
    "InputContainer",
    "InvalidPortError",
    "InvalidQueryError",
    "JsonLogFormatter",
    "MalformedDatasetError",
    "MoveDestination",
    "MoveInbox",
    "NoPresentationContext",
    "Not",
    "Pipeline",
    "PipelineStatus",
    "PriorQuery",
    "ProtocolError",
    "QueryFailed",
    "QueryLevel",
    "ReceivedInstance",
    "ResponseTimeout",
    "Retrieval",
    "RetrieveFailed",
    "RetrieveResult",
    "Sender",
    "Server",
    "Status",
    "StatusCategory",
    "StatusError",
    "Timeouts",
    "configure_logging",
    "connect",
    "contexts_for_files",
    "offload",
    "query_retrieve_contexts",
    "run",
]

if TYPE_CHECKING:
    from aiodicom._log import JsonLogFormatter, configure_logging
    from aiodicom.dimse.association import AssociationInfo
    from aiodicom.dimse.client import (
        ClientAssociation,
        connect,
        contexts_for_files,
        query_retrieve_contexts,
    )
    from aiodicom.dimse.retrieve import (
        InvalidQueryError,
        MoveInbox,
        QueryFailed,
        Retrieval,
        RetrieveFailed,
        RetrieveResult,
    )
    from aiodicom.dimse.server import Server
    from aiodicom.dimse.services.models import QueryLevel
    from aiodicom.dimse.services.retrieve import MoveDestination
    from aiodicom.dimse.status import Status, StatusCategory
    from aiodicom.dimse.store import ReceivedInstance
    from aiodicom.errors import (
        AiodicomError,
        AssociationAborted,
        AssociationError,
        AssociationRejected,
        DicomFileError,
        DicomTimeoutError,
        DimseError,
        InvalidPortError,
        MalformedDatasetError,
        NoPresentationContext,
        ProtocolError,
        StatusError,
    )
    from aiodicom.pipeline.export import DicomExport, Exporter, FileExport
    from aiodicom.pipeline.historic import HistoricInput, PriorQuery
    from aiodicom.pipeline.inputs import AnyOf, DynamicInput, Input, InputFailed, Not
    from aiodicom.pipeline.offload import offload
    from aiodicom.pipeline.pipeline import InputContainer, Pipeline, PipelineStatus, Sender
    from aiodicom.qr.archive import Archive
    from aiodicom.runner import run
    from aiodicom.transport.timeouts import (
        AssociateTimeout,
        ConnectTimeout,
        IdleTimeout,
        ResponseTimeout,
        Timeouts,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'aiodicom' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
