"""Pipelines: receive per patient, validate, process, export (see docs/guide/pipelines.md)."""
