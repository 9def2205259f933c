"""PostgreSQL storage, through an asyncpg pool (rules in storage.py)."""

from thingshub.storage.postgres.storage import PostgresStorage

__all__ = ["PostgresStorage"]
