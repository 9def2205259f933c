"""What the storage tests share: the Backend handle, sample values, raw PostgreSQL access."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg

from thingshub.core.model import CommandRecord, Device, Product, StoredImage
from thingshub.core.ports import Storage

T = TypeVar("T")


@dataclass
class Backend:
    kind: str  # "memory", "sqlite" or "postgres"
    make: Callable[[], Storage]  # a new, unopened storage over this test's data
    target: str  # the SQLite file or the PostgreSQL URL (schema included)

    def run(self, scenario: Callable[[Storage], Awaitable[T]]) -> T:
        """Open a storage, run `scenario` on it, close it; in a fresh event loop."""

        async def main() -> T:
            storage = self.make()
            await storage.open()
            try:
                return await scenario(storage)
            finally:
                await storage.close()

        return asyncio.run(main())


def product(pid: str = "p1", name: str = "Product") -> Product:
    return Product(pid, name, 1_700_000_000_000)


def device(
    pid: str = "p1",
    name: str = "d1",
    number: str | None = None,
    username: str | None = None,
    tags: dict[str, str] | None = None,
) -> Device:
    return Device(
        product_id=pid,
        name=name,
        device_number=number if number is not None else f"{pid}.{name}",
        key="a2V5" * 11,
        username=username if username is not None else f"user-{pid}-{name}",
        password_hash="0" * 64,
        created_at=1_700_000_000_123,
        tags=tags if tags is not None else {},
    )


def image(version: int, **reported: object) -> StoredImage:
    """An image document in the shape of docs/protocols.md §2, at `version`."""
    return StoredImage(
        {
            "state": {"reported": dict(reported)},
            "metadata": {"reported": {k: {"timestamp": 1_700_000_000} for k in reported}},
            "version": version,
            "timestamp": 1_700_000_000 + version,
        },
        version,
    )


def command(
    cmd_id: str,
    pid: str = "p1",
    name: str = "d1",
    created_at: int = 1_700_000_000_000,
    status: str = "sent",
    request: bytes = b"\x00on\xff",
) -> CommandRecord:
    return CommandRecord(
        cmd_id=cmd_id,
        product_id=pid,
        name=name,
        family="onenet",
        kind="command",
        request=request,
        status=status,
        created_at=created_at,
        sent_at=created_at + 1,
    )


def pg_fetch(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Rows of one query, on a connection of its own (for checks behind the storage's back)."""

    async def main() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(url, timeout=5)
        try:
            return [tuple(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    return asyncio.run(main())
