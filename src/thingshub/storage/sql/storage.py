"""The repositories of an SQL database, wired to its connections, its group-commit
writer and its purge of deleted devices.

Rules:
- A database gives: `db` (every write and most reads), `reader` (the reads of
  telemetry, attributes and events; SQLite: a second connection, PostgreSQL:
  the pool again), its `Dialect`, and `run`, which applies a batch of writes
  in one transaction (its writes.py). Its subclass opens and closes them:
  `open()` connects and migrates, then starts the writer and the purger
  (which resumes the purges a stop interrupted); `close()` stops the
  purger, commits the writes queued, then disconnects.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from functools import partial

from thingshub.core.ports import (
    AttributeRepo,
    CommandRepo,
    DeviceRepo,
    EventRepo,
    FirmwareRepo,
    ImageRepo,
    OtaRepo,
    ProductRepo,
    SettingsRepo,
    TelemetryRepo,
)
from thingshub.storage.batch import GroupCommit, RunBatch
from thingshub.storage.purge import Purger
from thingshub.storage.sql import series
from thingshub.storage.sql.connection import Database
from thingshub.storage.sql.devices import SqlDevices, SqlProducts, SqlSettings
from thingshub.storage.sql.dialect import Dialect
from thingshub.storage.sql.ota import SqlFirmware, SqlOta
from thingshub.storage.sql.records import SqlCommands, SqlImages
from thingshub.storage.sql.series import SqlAttributes, SqlEvents, SqlTelemetry


class SqlStorage(ABC):
    def __init__(self, db: Database, reader: Database, dialect: Dialect, run: RunBatch) -> None:
        self.writer = GroupCommit(run, dialect.name)
        self.purger = Purger(
            partial(db.transaction, partial(series.purge_step, dialect)), dialect.name
        )
        self.products: ProductRepo = SqlProducts(db)
        self.devices: DeviceRepo = SqlDevices(db, dialect, self.purger)
        self.images: ImageRepo = SqlImages(db, self.writer)
        self.commands: CommandRepo = SqlCommands(db, self.writer)
        self.telemetry: TelemetryRepo = SqlTelemetry(db, reader, dialect, self.writer)
        self.attributes: AttributeRepo = SqlAttributes(reader, self.writer)
        self.events: EventRepo = SqlEvents(reader, self.writer)
        self.settings: SettingsRepo = SqlSettings(db)
        self.firmware: FirmwareRepo = SqlFirmware(db)
        self.ota: OtaRepo = SqlOta(db, dialect, self.writer)

    async def open(self) -> None:
        if await self._connect():
            self.writer.start()
            self.purger.start()  # resumes the purges a stop interrupted

    async def close(self) -> None:
        await self.purger.close()
        await self.writer.close()  # commits what is queued
        await self._disconnect()

    @abstractmethod
    async def _connect(self) -> bool:
        """Connect and migrate; False if connected already."""

    @abstractmethod
    async def _disconnect(self) -> None: ...

    async def purge(self) -> None:
        """Return once the points and events of deleted devices are all deleted."""
        await self.purger.drain()
