"""Pipelines: receive per patient, validate on release, process, export (docs/guide/pipelines.md).

The layer above the network (:mod:`aiodicom.dimse`) and the data conversion
(:mod:`aiodicom.grinders`); neither imports it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from aiodicom.pipeline.inputs import AnyOf, DynamicInput, Input, InputFailed, Not
from aiodicom.pipeline.offload import offload
from aiodicom.pipeline.pipeline import InputContainer, Pipeline, PipelineStatus, Sender

#: Exporters live in their own modules, imported on first use.
_LAZY = {
    "DicomExport": "aiodicom.pipeline.export",
    "Exporter": "aiodicom.pipeline.export",
    "FileExport": "aiodicom.pipeline.export",
    "HistoricInput": "aiodicom.pipeline.historic",
    "PriorQuery": "aiodicom.pipeline.historic",
    "Outbox": "aiodicom.pipeline.outbox",
}

__all__ = [
    "AnyOf",
    "DicomExport",
    "DynamicInput",
    "Exporter",
    "FileExport",
    "HistoricInput",
    "Input",
    "InputFailed",
    "InputContainer",
    "Not",
    "Outbox",
    "Pipeline",
    "PipelineStatus",
    "PriorQuery",
    "Sender",
    "offload",
]

if TYPE_CHECKING:
    from aiodicom.pipeline.export import DicomExport, Exporter, FileExport
    from aiodicom.pipeline.historic import HistoricInput, PriorQuery
    from aiodicom.pipeline.outbox import Outbox


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'aiodicom.pipeline' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
