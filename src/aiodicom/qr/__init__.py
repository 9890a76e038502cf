"""Query/Retrieve over stored instances: an index of the files, C-FIND matching, the SCP's handlers.

Above :mod:`aiodicom.dimse` in the layering: the DIMSE services
(:mod:`aiodicom.dimse.services.query`, :mod:`aiodicom.dimse.services.retrieve`) know the
messages; this package knows what is stored and what matches.
"""
