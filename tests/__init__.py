"""aiodicom's test suite (a regular package: see conftest.py)."""
