"""The API key: every `/api` call presents it as `Authorization: Bearer <key>`.

Rules:
- Checked by services/keys.py (the serve key and stored keys, in constant time).
- A missing or wrong key is 401 with a JSON body and `WWW-Authenticate: Bearer`.
- The WebSocket stream may also pass it as `?key=` (browsers cannot set headers).
"""

from __future__ import annotations

UNAUTHORIZED = "a valid API key is required (Authorization: Bearer <key>)"

#: How the OpenAPI description states the key (openapi.py).
KEY_SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "description": "The API key printed by `thingshub serve`, or one of POST /api/v1/keys.",
}


def presented_key(authorization: str | None, query_key: str | None = None) -> str | None:
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value:
            return value.strip()
        return None
    return query_key
