"""API keys: made, listed, revoked, and every API request's key checked against them.

Rules (interfaces.md, "API keys and roles"):
- A key is `thk_<id>_<secret>`: `id` (12 hex digits) names its stored row, so
  checking a key is one dict lookup and one hash, never a scan over hashes;
  `secret` is 32 random bytes (URL-safe base64). It is shown once, when made.
- Only SHA-256 of the secret is stored, compared in constant time (see
  `hash_secret` for why a fast hash is right here).
- The serve key (`--api-key`) is checked first, in constant time, and is
  an admin of every product; it is neither stored, listed nor revocable.
- Keys are checked from memory: every key is loaded at `start` and the
  cache changes with `create` and `revoke`, so a revoked key fails on the
  very next request in this process. In a cluster, both are told to the
  other nodes (services/coherence.py), which load the keys again: a key
  made on one node works on the others, and a revoked one fails there,
  within a few milliseconds.
- `last_used_at` is noted in memory on each use and written in one batch
  every `flush_every` seconds (and at stop), never a write per request;
  the list shows the newest of the stored and the noted time.
- Products a key is limited to must exist when it is made (404 otherwise,
  as for any missing thing a body names); one deleted later is simply
  absent to it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import replace

from thingshub.core import access
from thingshub.core.errors import InvalidRequest, NotFound, Unavailable
from thingshub.core.model import ApiKey
from thingshub.core.ports import ApiKeyRepo, Clock, ProductRepo
from thingshub.services.background import Retries, cancel
from thingshub.services.coherence import CacheSync

log = logging.getLogger("thingshub.keys")

PREFIX = "thk_"
MAX_NAME = 100
MAX_PRODUCTS = 1000


def hash_secret(secret: str) -> str:
    """SHA-256 of a key's secret, hex.

    A slow password hash (scrypt, argon2) defends low-entropy secrets people
    choose against guessing offline; these secrets are 256 random bits, which
    no amount of hashing speed makes guessable, so a single SHA-256 is as
    safe here and costs a microsecond instead of tens of milliseconds on
    every API request."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _split(presented: str) -> tuple[str, str] | None:
    """(id, secret) of a presented `thk_<id>_<secret>`, or None."""
    if not presented.startswith(PREFIX):
        return None
    key_id, sep, secret = presented[len(PREFIX) :].partition("_")
    if not sep or not key_id or not secret:
        return None
    return key_id, secret


def principal_of(key: ApiKey) -> access.Principal:
    products = None if key.products is None else frozenset(key.products)
    return access.Principal(key.role, products, key.id)


class KeyService:
    def __init__(
        self,
        repo: ApiKeyRepo,
        products: ProductRepo,
        clock: Clock,
        serve_key: str,
        *,
        flush_every: float = 30.0,
    ) -> None:
        self.repo = repo
        self.products = products
        self.clock = clock
        self._serve_key = serve_key.encode()
        self.flush_every = flush_every
        self._keys: dict[str, ApiKey] = {}
        self._principals: dict[str, access.Principal] = {}
        self._used: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        #: Called with the id of each key revoked (the live stream closes its clients).
        self._on_revoke: list[Callable[[str], None]] = []
        #: The other nodes, told of each key made or revoked here.
        self.sync = CacheSync("keys", lambda _key: self._reload_soon())
        self._reloads: set[asyncio.Task[None]] = set()

    def on_revoke(self, listener: Callable[[str], None]) -> None:
        self._on_revoke.append(listener)

    # ------------------------------------------------------------ checking

    def authenticate(self, presented: str | None) -> access.Principal | None:
        """Who presents this key; None for a missing, malformed, wrong or revoked one.
        Synchronous and without I/O: the guard calls it before reading a body."""
        if not presented:
            return None
        if hmac.compare_digest(self._serve_key, presented.encode()):
            return access.SERVE
        parts = _split(presented)
        if parts is None:
            return None
        key = self._keys.get(parts[0])
        if key is None or not hmac.compare_digest(key.secret_hash, hash_secret(parts[1])):
            return None
        self._used[key.id] = self.clock.now_ms()
        return self._principals[key.id]

    # ------------------------------------------------------------ managing

    async def create(
        self, name: str, role: str, products: Sequence[str] | None
    ) -> tuple[ApiKey, str]:
        """A new key and its full text (shown only now)."""
        if not name.strip() or len(name) > MAX_NAME:
            raise InvalidRequest(f"a key's name is 1-{MAX_NAME} characters, not only spaces")
        if not access.is_role(role):
            raise InvalidRequest(f"role must be one of {', '.join(access.ROLES)}")
        scope = None
        if products is not None:
            scope = tuple(sorted(set(products)))
            if not scope or len(scope) > MAX_PRODUCTS:
                raise InvalidRequest(f"products lists 1-{MAX_PRODUCTS} product ids (or is absent)")
            for pid in scope:
                if await self.products.get(pid) is None:
                    raise NotFound(f"product {pid!r} does not exist")
        key_id = secrets.token_hex(6)
        secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
        key = ApiKey(key_id, name, role, scope, hash_secret(secret), self.clock.now_ms())
        await self.repo.add(key)
        self._remember(key)
        self.sync.changed(key.id)
        return key, f"{PREFIX}{key_id}_{secret}"

    def list(self) -> list[ApiKey]:
        """Every stored key by id, with the newest use known."""
        return [self._with_use(self._keys[i]) for i in sorted(self._keys)]

    def get(self, key_id: str) -> ApiKey | None:
        key = self._keys.get(key_id)
        return None if key is None else self._with_use(key)

    async def revoke(self, key_id: str) -> bool:
        """Delete a key; it fails from the next request on. False if there is none."""
        gone = await self.repo.delete(key_id)
        self._forget(key_id)
        self.sync.changed(key_id)
        return gone

    def _forget(self, key_id: str) -> None:
        self._keys.pop(key_id, None)
        self._principals.pop(key_id, None)
        self._used.pop(key_id, None)
        for listener in self._on_revoke:
            listener(key_id)

    async def reload(self) -> None:
        """Read the keys again (another node made or revoked one)."""
        stored = {key.id: key for key in await self.repo.list()}
        for key_id in [k for k in self._keys if k not in stored]:
            self._forget(key_id)
        for key in stored.values():
            self._remember(key)

    def _reload_soon(self) -> None:
        task = asyncio.get_running_loop().create_task(self._reloading())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def _reloading(self) -> None:
        try:
            await self.reload()
        except Exception:
            log.warning("reading the API keys again failed", exc_info=True)

    def _remember(self, key: ApiKey) -> None:
        self._keys[key.id] = key
        self._principals[key.id] = principal_of(key)

    def _with_use(self, key: ApiKey) -> ApiKey:
        used = self._used.get(key.id)
        if used is None or (key.last_used_at is not None and key.last_used_at >= used):
            return key
        return replace(key, last_used_at=used)

    # ------------------------------------------------------------ life

    async def start(self) -> None:
        for key in await self.repo.list():
            self._remember(key)
        self._task = asyncio.get_running_loop().create_task(self._flushing())

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None
        for task in list(self._reloads):
            await cancel(task)
        try:
            await self.flush()
        except Unavailable as exc:  # stopping goes on: only "last used" times are lost
            log.warning("when keys were last used not recorded at stop: %s", exc.message)

    async def flush(self) -> None:
        """Write the uses noted since the last flush (a failure keeps them for the next)."""
        if not self._used:
            return
        used, self._used = self._used, {}
        try:
            await self.repo.touch(used)
        except Exception:
            for key_id, ts in used.items():  # newer uses noted meanwhile win
                self._used[key_id] = max(ts, self._used.get(key_id, ts))
            raise
        for key_id, ts in used.items():
            key = self._keys.get(key_id)
            if key is not None and (key.last_used_at is None or key.last_used_at < ts):
                self._keys[key_id] = replace(key, last_used_at=ts)

    async def _flushing(self) -> None:
        retries = Retries(log, "writing when API keys were last used")
        while True:
            await asyncio.sleep(self.flush_every)
            try:
                await self.flush()
            except Exception as exc:
                retries.failed(exc)
            else:
                retries.succeeded()
