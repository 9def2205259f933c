"""The one table from ThingsHub errors to HTTP answers.

Rules:
- Every error answer is a JSON object with at least `error` (a sentence);
  errors carrying a protocol code add `err_code` and `err_msg`.
- Malformed parameters and bodies are 400 (not FastAPI's 422).
- Anything unexpected is a 500 with a generic sentence; the details go to the
  log, never to the client. The 500 is an ordinary answer: the connection
  stays open for the client's next request (Starlette's outermost error
  middleware would re-raise after answering, and the server would then close
  the connection). Only a failure after the answer has started, when the
  answer cannot be completed, ends the connection.
- A 405 lists in `Allow` every method the OpenAPI description gives the
  path (HEAD with GET), not only those of the first route that matched it.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path
from starlette.types import Receive, Scope, Send

from thingshub.core import errors
from thingshub.core.thingmodel import ModelError

log = logging.getLogger("thingshub.api")

STATUS: dict[type[errors.ThingsHubError], int] = {
    errors.InvalidRequest: 400,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.DeviceOffline: 409,
    errors.CommandTimeout: 504,
    errors.AnswerTooLarge: 400,
    errors.BadDeviceAnswer: 502,
    errors.LimitExceeded: 429,
    errors.TooLarge: 413,
    errors.Unavailable: 503,
}


def status_for(exc: errors.ThingsHubError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_body(message: str, **extra: Any) -> dict[str, Any]:
    return {"error": message, **{k: v for k, v in extra.items() if v is not None}}


def _describe(exc: RequestValidationError) -> str:
    problems = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        problems.append(f"{where or 'body'}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(problems)


def install(app: FastAPI) -> None:
    @app.exception_handler(errors.ThingsHubError)
    async def _domain(request: Request, exc: errors.ThingsHubError) -> JSONResponse:
        body = error_body(exc.message)
        if exc.err_code is not None:
            body["err_code"] = exc.err_code
            body["err_msg"] = getattr(exc, "err_msg", None) or exc.message
        if isinstance(exc, ModelError):
            body["path"] = exc.path  # the JSON pointer of the fault in the model
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, errors.Unauthorized) else None
        return JSONResponse(body, status_code=status_for(exc), headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body(_describe(exc)), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed_methods(request) or headers.get("Allow", "")
        return JSONResponse(
            error_body(str(exc.detail)), status_code=exc.status_code, headers=headers or None
        )


def _allowed_methods(request: Request) -> str:
    """The methods the OpenAPI description gives the request's path ("" if none)."""
    app: FastAPI = request.app
    table: list[tuple[re.Pattern[str], set[str]]] | None = getattr(app.state, "allow", None)
    if table is None:
        table = [
            (compile_path(path)[0], {m.upper() for m in operations})
            for path, operations in app.openapi().get("paths", {}).items()
        ]
        app.state.allow = table
    methods: set[str] = set()
    for pattern, allowed in table:
        if pattern.match(request.url.path):
            methods |= allowed
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


async def answer_unexpected(scope: Scope, receive: Receive, send: Send, exc: Exception) -> None:
    """Log an exception no handler took and answer 500, keeping the connection
    (called by the guard, the outermost of ThingsHub's layers)."""
    log.error("unexpected error on %s %s", scope.get("method"), scope.get("path"), exc_info=exc)
    response = JSONResponse(error_body("internal error"), status_code=500)
    await response(scope, receive, send)
