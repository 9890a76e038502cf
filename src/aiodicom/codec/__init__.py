"""Byte-level DICOM encoding shared by the network and data layers.

Nothing here knows about sockets or pipelines: UIDs and transfer syntaxes,
Part 10 file meta, and a fast scanner for a few top-level tags.
"""
