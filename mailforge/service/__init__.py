"""The service layer: the one place domain rules live (limits, readiness, the
reputation guard, idempotency, scoping), called alike by the API handlers, the CLI and
the MCP server. A service function takes the ``ServiceContext``, the acting
``Principal`` and typed input, and returns domain objects or raises ``ServiceError``
kinds; it never sees HTTP. SQL stays in ``store/``."""
