"""Store and engine tests on a per-test PostgreSQL database (see tests/README.md).

A package, so that its ``conftest`` is ``db.conftest`` and does not shadow
``tests/conftest.py``, which other test modules import as ``conftest``."""
