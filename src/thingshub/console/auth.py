"""Signing in to the console with an API key.

Rules:
- The login page asks for an API key: the one `thingshub serve` printed, or
  one made with `thingshub key create` (any role). It is checked as the API
  checks it (services/keys.py: constant time); a wrong key costs the caller
  half a second.
- A session is the user storage of NiceGUI (a signed cookie naming a record
  kept in the data dir) holding the key's id ("" for the serve key) and a
  fingerprint: an HMAC, with the console's secret, of the serve key or of
  the stored key's hash, never the key itself. Every page reads the signed-in
  `Principal` anew (`caller`): a revoked key signs its sessions out at their
  next page, and starting the server with another serve key signs its
  sessions out, since their fingerprint no longer matches.
- What a page offers follows the caller's role and products (access.py).
- Every page but /login calls `gate()` first and answers a redirect to the
  login page (remembering where the visitor wanted to go) when there is no
  session. Only console paths are followed after signing in (no open redirect).
- /logout ends the session.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import RedirectResponse
from nicegui import app, ui

from thingshub.console.context import ConsoleContext
from thingshub.console.layout import MOUNT, apply_theme
from thingshub.core.access import READER, SERVE, Principal
from thingshub.services.keys import principal_of

SESSION_KEY = "thingshub_session"
#: Delay after a wrong key: slows guessing, unnoticeable to a person.
WRONG_KEY_DELAY = 0.5


def _mac(ctx: ConsoleContext, text: str) -> str:
    return hmac.new(ctx.secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def _session_of(ctx: ConsoleContext, who: Principal) -> dict[str, str] | None:
    """What a session keeps of a signed-in key (see the module rules)."""
    if who.key_id is None:
        return {"key": "", "fp": _mac(ctx, ctx.api.api_key)}
    key = ctx.api.keys.get(who.key_id)
    return None if key is None else {"key": key.id, "fp": _mac(ctx, key.secret_hash)}


def caller(ctx: ConsoleContext) -> Principal | None:
    """Who is signed in to this browser's session, if anyone (and their key still works)."""
    held = app.storage.user.get(SESSION_KEY)
    if not isinstance(held, dict):
        return None
    key_id, fp = held.get("key"), held.get("fp")
    if not isinstance(key_id, str) or not isinstance(fp, str):
        return None
    if not key_id:
        return SERVE if hmac.compare_digest(fp, _mac(ctx, ctx.api.api_key)) else None
    key = ctx.api.keys.get(key_id)
    if key is None or not hmac.compare_digest(fp, _mac(ctx, key.secret_hash)):
        return None
    return principal_of(key)


#: Who a page acts for when the session ended after its gate: it sees nothing.
NOBODY = Principal(READER, frozenset())


def current(ctx: ConsoleContext) -> Principal:
    """The signed-in Principal, for a page past its `gate`."""
    return caller(ctx) or NOBODY


def signed_in(ctx: ConsoleContext) -> bool:
    return caller(ctx) is not None


def safe_target(target: str | None) -> str:
    """A console path to go to after signing in; anything else is the overview."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def gate(ctx: ConsoleContext, request: Request) -> RedirectResponse | None:
    """None when the visitor is signed in; otherwise the redirect to the login page."""
    if signed_in(ctx):
        return None
    wanted = request.url.path.removeprefix(MOUNT) or "/"
    if request.url.query:
        wanted += "?" + request.url.query
    return RedirectResponse(f"{MOUNT}/login?to={quote(wanted, safe='')}", status_code=303)


def register(ctx: ConsoleContext) -> None:
    @ui.page("/login", title="Sign in · ThingsHub")
    def login(to: str = "/") -> None:
        apply_theme()
        target = safe_target(to)
        if signed_in(ctx):
            ui.navigate.to(target)
            return

        async def submit() -> None:
            who = ctx.api.keys.authenticate(key.value.strip())
            session = None if who is None else _session_of(ctx, who)
            if session is not None:
                app.storage.user[SESSION_KEY] = session
                ui.navigate.to(target)
                return
            button.disable()
            await asyncio.sleep(WRONG_KEY_DELAY)
            button.enable()
            problem.set_text("That is not an API key of this server.")
            problem.set_visibility(True)

        with (
            ui.column().classes("absolute-center items-center gap-6"),
            ui.card().classes("w-96 p-8 gap-4 th-card"),
        ):
            with ui.row().classes("items-center gap-3"):
                ui.icon("hub", size="2.2rem").classes("text-primary")
                ui.label("ThingsHub").classes("text-2xl font-semibold text-slate-800")
            ui.markdown(
                "Sign in with an API key: the one `thingshub serve` printed "
                "(it is kept in `<data-dir>/api-key`), or one made with `thingshub key create`."
            ).classes("text-sm text-slate-500")
            key = (
                ui.input("API key", password=True, password_toggle_button=True)
                .classes("w-full")
                .props("outlined autofocus")
                .on("keydown.enter", submit)
            )
            problem = ui.label().classes("text-negative text-sm")
            problem.set_visibility(False)
            button = ui.button("Sign in", on_click=submit).classes("w-full").props("unelevated")

    @ui.page("/logout")
    def logout() -> RedirectResponse:
        app.storage.user.pop(SESSION_KEY, None)
        return RedirectResponse(f"{MOUNT}/login", status_code=303)
