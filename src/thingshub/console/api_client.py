"""The HTTP API, called in-process: no socket, the server's own key.

Why: where the console follows the API's published contract (the README's HTTP API)
instead of a service's Python interface (OTA), it goes through the very
routes applications use, so it validates, answers and fails as they do. The
requests run on this event loop through the ASGI app; nothing leaves the
process.
"""

from __future__ import annotations

from typing import Any

import httpx
from starlette.types import ASGIApp


class ApiError(Exception):
    """A non-2xx answer; `message` is the API's `error` sentence."""

    def __init__(self, status: int, message: str, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.body = body

    @property
    def missing(self) -> bool:
        """The route is not there (an older server, or a feature switched off)."""
        if self.status in (501, 503):
            return True
        return self.status in (404, 405) and self.message in ("Not Found", "Method Not Allowed")


class ApiClient:
    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self._app = app
        self._headers = {"Authorization": f"Bearer {api_key}"}

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON body of a 2xx answer (None when empty); ApiError otherwise."""
        transport = httpx.ASGITransport(app=self._app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://console.internal", headers=self._headers
        ) as client:
            response = await client.request(method, path, **kwargs)
        try:
            body = response.json() if response.content else None
        except ValueError:
            body = response.text
        if response.is_success:
            return body
        message = body.get("error") if isinstance(body, dict) else None
        raise ApiError(response.status_code, str(message or response.reason_phrase), body)
