"""API keys: `/api/v1/keys` (interfaces.md, "API keys and roles").

`POST` makes a key with a role and, optionally, the products it is limited
to, and shows its secret once; `GET` lists keys without secrets (nor their
hashes); `DELETE` revokes one at once. Only an admin key that sees every
product manages keys (roles.py). The serve key is not among them.
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from thingshub.api.deps import Keys
from thingshub.api.params import ApiRoute, KeyCursor, KeyId, Limit
from thingshub.api.schemas import BODY_ERRORS, ERRORS, KeyCreated, KeyIn, KeyOut, PageOut
from thingshub.core import cursors
from thingshub.core.errors import NotFound

router = APIRouter(prefix="/api/v1/keys", tags=["keys"], responses=ERRORS, route_class=ApiRoute)


@router.post("", status_code=201, responses=BODY_ERRORS)
async def create_key(body: KeyIn, keys: Keys) -> KeyCreated:
    """Make a key; its full text (`key`) is shown only in this answer."""
    key, text = await keys.create(body.name, body.role, body.products)
    return KeyCreated.of(key, text)


@router.get("")
async def list_keys(keys: Keys, limit: Limit = 100, cursor: KeyCursor = None) -> PageOut[KeyOut]:
    """The keys by id, without their secrets, each with when it was last used."""
    after = cursors.after_key(cursor)
    found = [k for k in keys.list() if after is None or k.id > after]
    items = found[:limit]
    more = len(found) > limit
    return PageOut[KeyOut](
        items=[KeyOut.of(k) for k in items], next=cursors.key(items[-1].id) if more else None
    )


@router.delete("/{key_id}", status_code=204)
async def revoke_key(key_id: KeyId, keys: Keys) -> Response:
    """Revoke a key: it is refused (401) from the next request on."""
    if not await keys.revoke(key_id):
        raise NotFound(f"API key {key_id!r} does not exist")
    return Response(status_code=204)
