"""Tests of the sans-I/O DICOM Upper Layer (PS3.8): PDU codec, state machine, negotiation, reassembly."""
