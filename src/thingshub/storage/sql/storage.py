"""The repositories of an SQL database, wired to its connections, its group-commit
writer and its purge of deleted devices.

Rules:
- `db` takes every write and most reads; `reader` the reads of telemetry,
  attributes and events (SQLite: a second connection; PostgreSQL: the pool).
- `open()` connects and migrates (the subclass's `_connect`), then starts
  the writer and the purger, which resumes the purges a stop interrupted;
  `close()` stops the purger, commits the writes queued, then disconnects.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from functools import partial

from thingshub.core import ports
from thingshub.storage.locks import ProcessLocks
from thingshub.storage.sql import series, writes
from thingshub.storage.sql.batch import GroupCommit, RunBatch
from thingshub.storage.sql.connection import Database
from thingshub.storage.sql.devices import SqlDevices, SqlProducts, SqlSettings
from thingshub.storage.sql.dialect import Dialect
from thingshub.storage.sql.keys import SqlApiKeys
from thingshub.storage.sql.nodes import SqlNodes
from thingshub.storage.sql.ota import SqlFirmware, SqlOta
from thingshub.storage.sql.purge import Purger
from thingshub.storage.sql.records import SqlCommands, SqlImages
from thingshub.storage.sql.series import SqlAttributes, SqlEvents, SqlTelemetry
from thingshub.storage.sql.things import SqlDesired, SqlThingModels

#: The writes that wait out an outage of the database (batch.py): the reports of
#: devices, whose QoS 1 acknowledgement waits for them.
DEVICE_REPORTS = frozenset(
    {
        writes.TELEMETRY_APPEND,
        writes.TELEMETRY_APPEND_DEVICES,
        writes.ATTRIBUTES_UPSERT,
        writes.EVENTS_APPEND,
    }
)


class SqlStorage(ABC):
    def __init__(self, db: Database, reader: Database, dialect: Dialect, run: RunBatch) -> None:
        self.writer = GroupCommit(run, dialect.name, held=DEVICE_REPORTS)
        self.purger = Purger(
            partial(db.transaction, partial(series.purge_step, dialect)), dialect.name
        )
        self.products: ports.ProductRepo = SqlProducts(db)
        self.devices: ports.DeviceRepo = SqlDevices(db, dialect, self.purger)
        self.images: ports.ImageRepo = SqlImages(db, self.writer)
        self.commands: ports.CommandRepo = SqlCommands(db, self.writer)
        self.telemetry: ports.TelemetryRepo = SqlTelemetry(db, reader, dialect, self.writer)
        self.attributes: ports.AttributeRepo = SqlAttributes(reader, self.writer)
        self.events: ports.EventRepo = SqlEvents(reader, self.writer)
        self.settings: ports.SettingsRepo = SqlSettings(db)
        self.firmware: ports.FirmwareRepo = SqlFirmware(db)
        self.ota: ports.OtaRepo = SqlOta(db, dialect, self.writer)
        self.thing_models: ports.ThingModelRepo = SqlThingModels(db)
        self.desired: ports.DesiredRepo = SqlDesired(db)
        self.api_keys: ports.ApiKeyRepo = SqlApiKeys(db)
        self.nodes: ports.NodeRepo = SqlNodes(db)
        #: PostgreSQL replaces these with locks shared by every process.
        self.locks: ports.Locks = ProcessLocks()

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
