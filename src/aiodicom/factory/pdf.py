"""Wrapping a PDF report as an Encapsulated PDF instance.

Pipelines often produce a report next to their images; storing it as DICOM lets
it travel to the PACS with the study instead of by e-mail.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydicom.dataset import Dataset

from aiodicom.errors import FactoryError
from aiodicom.factory.blueprint import Blueprint
from aiodicom.factory.blueprints import ENCAPSULATED_PDF
from aiodicom.factory.build import build_instance

__all__ = ["encapsulate_pdf"]


def encapsulate_pdf(
    pdf: bytes,
    parent: Dataset | Iterable[Dataset] | None = None,
    *,
    title: str = "",
    blueprint: Blueprint = ENCAPSULATED_PDF,
) -> Dataset:
    """An Encapsulated PDF data set holding ``pdf``, in the parent's patient and study.

    The bytes must start with ``%PDF-``: a mislabelled document would be stored
    under a MIME type that viewers then fail to open.
    """
    if not isinstance(pdf, bytes | bytearray) or not bytes(pdf[:5]) == b"%PDF-":
        raise FactoryError("not a PDF document (it does not start with %PDF-)")
    return build_instance(
        blueprint,
        parent,
        kwargs={"document": bytes(pdf), "title": title, "mime_type": "application/pdf"},
    )
