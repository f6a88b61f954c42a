"""The desired-state store: PostgreSQL through asyncpg, SQL kept in ``.sql`` files."""
