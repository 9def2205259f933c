"""`thingshub firmware ...` and `thingshub ota ...`: firmware packages and OTA tasks,
over the HTTP API (finding the server and its key as client.py says).

Rules:
- `firmware upload` streams the file (never read whole into memory) as a
  multipart body built on the fly, with a Rich progress bar on stderr; a
  file over the server's limit is refused before anything is sent.
- `ota watch` refreshes a live table until the task is no longer RUNNING
  (Ctrl-C stops watching, not the task).
- Output is Rich tables, or the API's JSON with `--json`; an API error is its
  sentence and exit status 1.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from thingshub.cli.client import Api, console, die, err_console, pages, show
from thingshub.cli.options import DirOpt, JsonOpt, KeyOpt, UrlOpt

firmware_app = typer.Typer(help="Upload, list and delete firmware packages.", no_args_is_help=True)
ota_app = typer.Typer(help="Start, follow and cancel OTA upgrade tasks.", no_args_is_help=True)

CHUNK = 256 * 1024
FIRMWARE_COLUMNS = ["id", "name", "module", "version", "size"]
TASK_COLUMNS = ["id", "status", "module", "version", "sign_method", "rollout_per_minute"]
STATE_STYLES = {
    "QUEUED": "dim",
    "INFORMED": "cyan",
    "IN_PROGRESS": "yellow",
    "SUCCEEDED": "green",
    "FAILED": "red",
    "CANCELED": "magenta",
    "TIMED_OUT": "red",
}


# ---------------------------------------------------------------- firmware


def _quoted(value: str) -> str:
    """A value for a quoted Content-Disposition parameter."""
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "").replace("\n", "")


def multipart(
    fields: dict[str, str], path: Path, size: int, boundary: str, progress: Progress | None = None
) -> tuple[int, Iterator[bytes]]:
    """(length, chunks) of a multipart/form-data body: the fields, then the file,
    read a chunk at a time (advancing `progress`)."""
    head = (
        b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + value.encode()
            + b"\r\n"
            for name, value in fields.items()
        )
        + (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file";'
            f' filename="{_quoted(path.name)}"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
    )
    tail = f"\r\n--{boundary}--\r\n".encode()

    def chunks() -> Iterator[bytes]:
        yield head
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                if progress is not None:
                    progress.advance(progress.task_ids[0], len(chunk))
                yield chunk
        yield tail

    return len(head) + size + len(tail), chunks()


@firmware_app.command("upload")
def firmware_upload(
    pid: str,
    file: Annotated[Path, typer.Argument(help="The firmware file.")],
    version: Annotated[str, typer.Option("--version", help="Its version, e.g. 1.2.0.")],
    module: Annotated[str, typer.Option("--module", help="The module it is for, e.g. MCU.")],
    name: Annotated[str | None, typer.Option(help="A name (default: the file's).")] = None,
    ext_data: Annotated[
        str | None, typer.Option("--ext-data", help="A JSON object devices get as extData.")
    ] = None,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    data_dir: DirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Upload a firmware package (with a progress bar); prints its id and digests."""
    try:
        size = file.stat().st_size
    except OSError as exc:
        die(f"cannot read {file}: {exc.strerror or exc}")
    if not file.is_file():
        die(f"{file} is not a file")
    fields = {"version": version, "module": module}
    if name:
        fields["name"] = name
    if ext_data is not None:
        try:
            parsed = json.loads(ext_data)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            die("--ext-data must be a JSON object, e.g. '{\"force\": true}'")
        fields["ext_data"] = ext_data
    api = Api(url, api_key, data_dir)
    limit = api.call("GET", "/api/v1/server").get("firmware_max_size")
    if isinstance(limit, int) and size > limit:
        die(f"{file} has {size} bytes; this server accepts firmware of at most {limit} bytes")
    boundary = secrets.token_hex(16)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    ) as progress:
        progress.add_task(f"uploading {file.name}", total=size)
        length, body = multipart(fields, file, size, boundary, progress)
        created = api.call(
            "POST",
            f"/api/v1/products/{pid}/firmware",
            content=body,
            headers={
                "Content-Type": f"multipart/form-data; boundary={boundary}",
                "Content-Length": str(length),
            },
        )
    if as_json:
        show(created, True, [])
        return
    table = Table(title=f"Firmware {created['id']} of {pid}", show_header=False)
    table.add_column("what")
    table.add_column("value", overflow="fold")
    for key in ("id", "name", "module", "version", "size", "md5", "sha256", "ext_data"):
        value = created.get(key)
        table.add_row(key, json.dumps(value) if isinstance(value, dict) else str(value))
    console.print(table)


@firmware_app.command("list")
def firmware_list(
    pid: str,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    data_dir: DirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List a product's firmware packages."""
    items = pages(
        Api(url, api_key, data_dir), f"/api/v1/products/{pid}/firmware", {"limit": 1000}, True
    )
    if as_json:
        show(items, True, [])
        return
    table = Table(title=f"Firmware of {pid}")
    table.add_column("id", no_wrap=True)
    for col in FIRMWARE_COLUMNS[1:]:
        table.add_column(col, overflow="fold")
    for f in items:
        table.add_row(*[str(f[col]) for col in FIRMWARE_COLUMNS])
    console.print(table)


@firmware_app.command("delete")
def firmware_delete(
    pid: str, firmware_id: str, url: UrlOpt = None, api_key: KeyOpt = None, data_dir: DirOpt = None
) -> None:
    """Delete a package (not while a running task uses it)."""
    Api(url, api_key, data_dir).call("DELETE", f"/api/v1/products/{pid}/firmware/{firmware_id}")
    console.print(f"deleted firmware {firmware_id} of {pid}")


# ---------------------------------------------------------------- tasks


def _counts(task: dict[str, Any]) -> str:
    counts = task.get("counts") or {}
    return ", ".join(f"{n} {state}" for state, n in counts.items() if n) or "no devices"


def task_tables(task: dict[str, Any]) -> Group:
    """A task's summary and its devices, as Rich tables."""
    summary = Table(title=f"OTA task {task['id']}", show_header=False)
    summary.add_column("what")
    summary.add_column("value")
    summary.add_row("status", task["status"])
    summary.add_row("firmware", f"{task['module']} {task['version']} ({task['firmware_id']})")
    rate = task.get("rollout_per_minute")
    summary.add_row("rollout", f"{rate} per minute" if rate else "all at once")
    summary.add_row("device timeout", f"{task['device_timeout_s']} s")
    summary.add_row("devices", _counts(task))
    devices = Table()
    for col in ("name", "state", "step", "desc", "protocol", "tid"):
        devices.add_column(col)
    for d in task.get("devices", []):
        style = STATE_STYLES.get(d["state"], "")
        step = "-" if d["step"] is None else str(d["step"])
        state = f"[{style}]{d['state']}[/{style}]"
        # protocol: the family it takes part through; tid: its OneNET task id.
        via = (d.get("protocol") or "-", "-" if d.get("tid") is None else str(d["tid"]))
        devices.add_row(d["name"], state, step, d["desc"] or "-", *via)
    return Group(summary, devices)


@ota_app.command("create")
def ota_create(
    pid: str,
    firmware_id: str,
    device: Annotated[
        list[str] | None, typer.Option("--device", help="A device to upgrade (repeatable).")
    ] = None,
    everything: Annotated[bool, typer.Option("--all", help="Every device of the product.")] = False,
    rollout: Annotated[
        int | None, typer.Option("--rollout", help="Devices informed per minute at most.")
    ] = None,
    timeout: Annotated[
        int | None, typer.Option("--timeout", help="Seconds a device has to finish (3600).")
    ] = None,
    sign_method: Annotated[
        str | None, typer.Option("--sign-method", help="MD5 or SHA256 (default).")
    ] = None,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    data_dir: DirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Start an OTA task: give --device NAME (repeatable) or --all."""
    if bool(device) == everything:
        die("say which devices: --device NAME (repeatable) or --all")
    body: dict[str, Any] = {"firmware_id": firmware_id}
    if everything:
        body["all"] = True
    else:
        body["devices"] = device
    for key, value in (
        ("rollout_per_minute", rollout),
        ("device_timeout_s", timeout),
        ("sign_method", sign_method),
    ):
        if value is not None:
            body[key] = value
    task = Api(url, api_key, data_dir).call("POST", f"/api/v1/products/{pid}/ota-tasks", json=body)
    if as_json:
        show(task, True, [])
        return
    console.print(task_tables(task))


@ota_app.command("list")
def ota_list(
    pid: str,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    data_dir: DirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List a product's OTA tasks, oldest first."""
    items = pages(
        Api(url, api_key, data_dir), f"/api/v1/products/{pid}/ota-tasks", {"limit": 1000}, True
    )
    if not as_json:
        for item in items:
            item["devices"] = _counts(item)
    show(items, as_json, [*TASK_COLUMNS, "devices"], title=f"OTA tasks of {pid}")


@ota_app.command("show")
def ota_show(
    pid: str,
    task_id: str,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    data_dir: DirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a task and where each of its devices stands."""
    task = Api(url, api_key, data_dir).call("GET", f"/api/v1/products/{pid}/ota-tasks/{task_id}")
    if as_json:
        show(task, True, [])
        return
    console.print(task_tables(task))


@ota_app.command("watch")
def ota_watch(
    pid: str,
    task_id: str,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes.")] = 1.0,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    data_dir: DirOpt = None,
) -> None:
    """Follow a task live until it ends (Ctrl-C stops watching, not the task)."""
    api = Api(url, api_key, data_dir)
    path = f"/api/v1/products/{pid}/ota-tasks/{task_id}"
    task = api.call("GET", path)
    try:
        with Live(task_tables(task), console=console, refresh_per_second=4) as live:
            while task["status"] == "RUNNING":
                time.sleep(max(interval, 0.1))
                task = api.call("GET", path)
                live.update(task_tables(task))
    except KeyboardInterrupt:
        err_console.print("stopped watching; the task goes on")
        return
    console.print(f"task {task_id} {task['status']}: {_counts(task)}")


@ota_app.command("cancel")
def ota_cancel(
    pid: str,
    task_id: str,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    data_dir: DirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Cancel a running task: its devices not yet done become CANCELED."""
    task = Api(url, api_key, data_dir).call(
        "POST", f"/api/v1/products/{pid}/ota-tasks/{task_id}/cancel"
    )
    if as_json:
        show(task, True, [])
        return
    console.print(task_tables(task))


def register(app: typer.Typer) -> None:
    app.add_typer(firmware_app, name="firmware")
    app.add_typer(ota_app, name="ota")
