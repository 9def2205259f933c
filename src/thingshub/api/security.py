"""The API key: every `/api` call presents it as `Authorization: Bearer <key>`.

Rules:
- Compared in constant time.
- A missing or wrong key is 401 with a JSON body and `WWW-Authenticate: Bearer`.
- The WebSocket stream may also pass it as `?key=` (browsers cannot set headers).
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from thingshub.core.errors import Unauthorized

UNAUTHORIZED = "a valid API key is required (Authorization: Bearer <key>)"

bearer = HTTPBearer(auto_error=False, description="The API key printed by `thingshub serve`.")


def key_matches(expected: str, presented: str | None) -> bool:
    if not presented:
        return False
    return hmac.compare_digest(expected.encode(), presented.encode())


def presented_key(authorization: str | None, query_key: str | None = None) -> str | None:
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value:
            return value.strip()
        return None
    return query_key


async def require_api_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    expected: str = request.app.state.api_key
    if not key_matches(expected, credentials.credentials if credentials else None):
        raise Unauthorized(UNAUTHORIZED)
