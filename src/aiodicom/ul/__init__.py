"""The DICOM Upper Layer (PS3.8) without I/O.

:mod:`~aiodicom.ul.pdu` encodes and decodes PDUs, :mod:`~aiodicom.ul.fsm` holds
the state tables, :mod:`~aiodicom.ul.machine` runs them, :mod:`~aiodicom.ul.negotiation`
decides presentation contexts and :mod:`~aiodicom.ul.assembly` rebuilds DIMSE
messages from P-DATA fragments. Bytes in, events and bytes out: the asyncio
transport in :mod:`aiodicom.transport` is one user of it, the tests another.
"""
