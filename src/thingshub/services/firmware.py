"""Firmware packages: files in `<data dir>/firmware/`, metadata in storage.

Rules:
- An upload is written to a temporary file in the firmware directory while
  MD5 and SHA-256 are computed on the way, then renamed into place
  (`<id>.bin`) and recorded; whatever fails on the way removes the file, so
  a package is either whole and recorded or absent.
- The size limit (`max_size` bytes) is checked before anything past it is
  written: the upload fails with TooLarge (413) and its file is removed.
- Disk writes and hashing never run on the event loop: the bytes are
  gathered into blocks of `BLOCK` (1 MiB) and each block is written and
  hashed on a worker thread, so a 256 MiB upload costs the loop 256 thread
  hops rather than 256 MiB of blocking writes and a second of hashing; the
  file is fsynced before the rename, so a recorded package is on disk.
- A product has at most one package per (module, version); a package used
  by a RUNNING task cannot be deleted (409); the storage decides both.
- At start, leftovers older than an hour are removed: temporary files of
  uploads a stop interrupted, and files of packages no longer recorded
  (their product was deleted).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
from functools import partial
from pathlib import Path
from typing import BinaryIO

from thingshub.core import ota
from thingshub.core.errors import InvalidRequest, NotFound, TooLarge, Unavailable
from thingshub.core.jsontext import loads_unicode
from thingshub.core.model import Firmware, Page
from thingshub.core.ports import Clock, FirmwareRepo
from thingshub.services.devices import DeviceService
from thingshub.services.products import check_limit, decode_cursor, encode_cursor

log = logging.getLogger("thingshub.firmware")

BLOCK = 1024 * 1024
DEFAULT_MAX_SIZE = 256 * 1024 * 1024
SUFFIX = ".bin"
TEMP_PREFIX = ".upload-"
LEFTOVER_AGE_S = 3600


class Upload:
    """A package being received; `write` its bytes in order, then the service's
    `finish` records it (or `abort` drops it)."""

    def __init__(self, product_id: str, path: Path, file: BinaryIO, max_size: int) -> None:
        self.product_id = product_id
        self.path = path
        self.max_size = max_size
        self.size = 0
        self._file: BinaryIO | None = file
        self._buffer = bytearray()
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._sha256 = hashlib.sha256()

    async def write(self, data: bytes) -> None:
        if self.size + len(data) > self.max_size:
            raise TooLarge(f"the firmware file is larger than the limit of {self.max_size} bytes")
        self.size += len(data)
        self._buffer += data
        if len(self._buffer) >= BLOCK:
            await self._flush()

    async def _flush(self) -> None:
        if not self._buffer:
            return
        block = bytes(self._buffer)
        self._buffer.clear()
        try:
            await asyncio.to_thread(self._write, block)
        except OSError as exc:
            raise Unavailable(f"cannot store the firmware file: {exc.strerror or exc}") from exc

    def _write(self, block: bytes) -> None:
        assert self._file is not None
        self._file.write(block)
        self._md5.update(block)
        self._sha256.update(block)

    async def complete(self) -> tuple[str, str]:
        """Write what is left, make it durable, close; (md5, sha256)."""
        await self._flush()
        file, self._file = self._file, None
        if file is not None:
            try:
                await asyncio.to_thread(_sync_close, file)
            except OSError as exc:
                raise Unavailable(f"cannot store the firmware file: {exc.strerror or exc}") from exc
        return self._md5.hexdigest(), self._sha256.hexdigest()

    async def abort(self) -> None:
        file, self._file = self._file, None
        await asyncio.to_thread(_discard, file, self.path)


def _sync_close(file: BinaryIO) -> None:
    try:
        file.flush()
        os.fsync(file.fileno())
    finally:
        file.close()


def _discard(file: BinaryIO | None, path: Path) -> None:
    if file is not None:
        file.close()
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


class FirmwareService:
    def __init__(
        self,
        repo: FirmwareRepo,
        devices: DeviceService,
        clock: Clock,
        directory: Path,
        *,
        max_size: int = DEFAULT_MAX_SIZE,
    ) -> None:
        self.repo = repo
        self.devices = devices
        self.clock = clock
        self.directory = directory
        self.max_size = max_size
        self._ids = ota.IdClock()

    def path(self, firmware_id: str) -> Path:
        return self.directory / f"{firmware_id}{SUFFIX}"

    async def start(self) -> None:
        await asyncio.to_thread(
            partial(self.directory.mkdir, mode=0o700, parents=True, exist_ok=True)
        )
        try:
            known = await self.repo.ids()
            removed = await asyncio.to_thread(self._sweep, known, self.clock.now_ms() / 1000)
        except Exception:
            log.exception("removing leftover firmware files failed")
            return
        if removed:
            log.info("removed %d leftover firmware file(s)", removed)

    def _sweep(self, known: set[str], now_s: float) -> int:
        removed = 0
        for entry in self.directory.iterdir():
            name = entry.name
            leftover = name.startswith(TEMP_PREFIX) or (
                name.endswith(SUFFIX) and name[: -len(SUFFIX)] not in known
            )
            if not leftover or not entry.is_file():
                continue
            if now_s - entry.stat().st_mtime < LEFTOVER_AGE_S:
                continue  # perhaps an upload of another process, under way
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed += 1
        return removed

    # ------------------------------------------------------------ upload

    async def begin(self, product_id: str) -> Upload:
        """Start receiving a package of an existing product."""
        await self.devices.get_product(product_id)
        path = self.directory / f"{TEMP_PREFIX}{secrets.token_hex(8)}.part"
        try:
            file = await asyncio.to_thread(_create, self.directory, path)
        except OSError as exc:
            raise Unavailable(f"cannot store the firmware file: {exc.strerror or exc}") from exc
        return Upload(product_id, path, file, self.max_size)

    async def finish(
        self,
        upload: Upload,
        *,
        version: object,
        module: object,
        name: object = None,
        ext_data: str | None = None,
        filename: str | None = None,
    ) -> Firmware:
        """Check the package's fields, put its file in place and record it. The
        upload is over afterwards, recorded or removed."""
        try:
            version_ = ota.check_version(version)
            module_ = ota.check_module(module)
            name_ = ota.check_firmware_name(name) or _base_name(filename)
            ext = _ext_data(ext_data)
            if upload.size == 0:
                raise InvalidRequest("the firmware file is empty")
            md5, sha256 = await upload.complete()
        except BaseException:
            await upload.abort()
            raise
        now = self.clock.now_ms()
        firmware = Firmware(
            id=ota.new_id(self._ids.next(now)),
            product_id=upload.product_id,
            name=name_ or f"{module_}-{version_}",
            version=version_,
            module=module_,
            size=upload.size,
            md5=md5,
            sha256=sha256,
            created_at=now,
            ext_data=ext,
        )
        target = self.path(firmware.id)
        try:
            await asyncio.to_thread(os.replace, upload.path, target)
        except BaseException:
            await upload.abort()
            raise
        try:
            await self.repo.add(firmware)
        except BaseException:
            await asyncio.to_thread(_discard, None, target)
            raise
        log.info(
            "firmware %s of product %s stored: %s %s, %d bytes",
            firmware.id,
            firmware.product_id,
            firmware.module,
            firmware.version,
            firmware.size,
        )
        return firmware

    # ------------------------------------------------------------ the packages

    async def get(self, product_id: str, firmware_id: str) -> Firmware:
        firmware = await self.repo.get(product_id, firmware_id)
        if firmware is None:
            await self.devices.get_product(product_id)
            raise NotFound(f"firmware {firmware_id!r} does not exist in product {product_id!r}")
        return firmware

    async def list(
        self, product_id: str, limit: int = 100, cursor: str | None = None
    ) -> Page[Firmware]:
        check_limit(limit)
        await self.devices.get_product(product_id)
        items = await self.repo.list(product_id, limit + 1, decode_cursor(cursor))
        more = len(items) > limit
        items = items[:limit]
        return Page(items, encode_cursor(items[-1].id) if more else None)

    async def delete(self, product_id: str, firmware_id: str) -> None:
        """Delete a package and its file; 409 while a running task uses it."""
        if not await self.repo.delete(product_id, firmware_id):
            await self.devices.get_product(product_id)
            raise NotFound(f"firmware {firmware_id!r} does not exist in product {product_id!r}")
        await asyncio.to_thread(_discard, None, self.path(firmware_id))


def _create(directory: Path, path: Path) -> BinaryIO:
    """A new package file, private to the server (0600) from its first byte."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")


def _base_name(filename: str | None) -> str | None:
    """The uploaded file's name, as a default package name (None if unusable)."""
    if not filename:
        return None
    base = filename.replace("\\", "/").rsplit("/", 1)[-1][: ota.MAX_FIRMWARE_NAME]
    return base if base and base.isprintable() else None


def _ext_data(text: str | None) -> dict[str, object]:
    if text is None:
        return {}
    try:
        value = loads_unicode(text)
    except ValueError:
        raise InvalidRequest("ext_data must be a JSON object") from None
    return ota.check_ext_data(value, len(text.encode()))
