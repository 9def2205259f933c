"""Signing in to the console with the API key.

Rules:
- The login page asks for the API key (the one `thingshub serve` printed) and
  compares it in constant time; a wrong key costs the caller half a second.
- A session is the user storage of NiceGUI (a signed cookie naming a record
  kept in the data dir) holding a fingerprint of the key: an HMAC of the key
  with the console's secret, never the key itself. Starting the server with
  another key signs everyone out, since their fingerprint no longer matches.
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

from thingshub.api.security import key_matches
from thingshub.console.context import ConsoleContext
from thingshub.console.layout import MOUNT, apply_theme

SESSION_KEY = "thingshub_session"
#: Delay after a wrong key: slows guessing, unnoticeable to a person.
WRONG_KEY_DELAY = 0.5


def fingerprint(ctx: ConsoleContext) -> str:
    return hmac.new(ctx.secret.encode(), ctx.api.api_key.encode(), hashlib.sha256).hexdigest()


def signed_in(ctx: ConsoleContext) -> bool:
    held = app.storage.user.get(SESSION_KEY)
    return isinstance(held, str) and hmac.compare_digest(held, fingerprint(ctx))


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
            if key_matches(ctx.api.api_key, key.value.strip()):
                app.storage.user[SESSION_KEY] = fingerprint(ctx)
                ui.navigate.to(target)
                return
            button.disable()
            await asyncio.sleep(WRONG_KEY_DELAY)
            button.enable()
            problem.set_text("That is not the API key of this server.")
            problem.set_visibility(True)

        with (
            ui.column().classes("absolute-center items-center gap-6"),
            ui.card().classes("w-96 p-8 gap-4 th-card"),
        ):
            with ui.row().classes("items-center gap-3"):
                ui.icon("hub", size="2.2rem").classes("text-primary")
                ui.label("ThingsHub").classes("text-2xl font-semibold text-slate-800")
            ui.markdown(
                "Sign in with the API key that `thingshub serve` printed "
                "(it is kept in `<data-dir>/api-key`)."
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
