"""Settings of `thingshub serve`: from options, the environment, or a TOML file.

Rules:
- Precedence: command-line option, then environment variable
  (`THINGSHUB_<NAME>`), then the TOML file (`--config` / `THINGSHUB_CONFIG`),
  then the default. The names and defaults in the README are fixed.
- Only `cli.py` and `app.py` read settings; everything else receives plain
  arguments.
- A bad value is a `SettingsError` with a sentence naming the setting.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any


class SettingsError(Exception):
    pass


#: What a node id may be (interfaces: `--node-id`).
NODE_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path = Path("./thingshub-data")
    host: str = "127.0.0.1"
    #: The plain MQTT listener's port; None ("off") when only TLS is served.
    mqtt_port: int | None = 1883
    http_port: int = 8080
    database_url: str | None = None
    api_key: str | None = None
    # Limits of the MQTT server (see mqtt/server/config.py for their meaning).
    max_connections: int = 100_000
    max_connections_per_address: int = 0  # 0: no cap
    max_packet_size: int = 1024 * 1024
    max_keepalive: int = 1200
    connect_timeout: float = 10.0
    #: Messages a second one device may publish (0: no limit; gateway/hooks.py).
    device_publish_rate: float = 0.0
    log_level: str = "info"
    # OTA: the base URL devices download firmware from (default http://{host}:{http_port}),
    # and the largest firmware file accepted, in bytes.
    public_url: str | None = None
    firmware_max_size: int = 256 * 1024 * 1024
    #: Seconds between two rounds of the OTA rollout loop (informs, timeouts).
    ota_tick: float = 1.0
    #: Serve the web console at /console (NiceGUI keeps process-wide state: one a process).
    console: bool = True
    #: The live stream drops a client whose unsent backlog passes this many bytes,
    #: or that has left a message waiting this many seconds (it does not read).
    stream_max_backlog: int = 1 << 20
    stream_stall_timeout: float = 30.0
    #: HTTP connections open at once, at most (HTTP and MQTT share the file descriptors).
    max_http_connections: int = 2000
    #: Seconds an HTTP connection has to send a complete request head.
    http_head_timeout: float = 15.0
    #: PEM certificate (chain, leaf first) and key: with them, MQTT over TLS on
    #: `mqtts_port`, and HTTPS instead of HTTP on `http_port` (tls.py).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    mqtts_port: int = 8883
    #: Cluster (interfaces: "Several processes and machines"): NATS joins this
    #: node to the others on the same PostgreSQL database.
    nats_url: str | None = None
    #: Unique in the cluster; None: host name and MQTT port (app.py).
    node_id: str | None = None
    #: Node processes on this machine sharing the ports (SO_REUSEPORT).
    workers: int = 1
    #: Seconds after its last heartbeat that a node counts as dead.
    node_lease: float = 15.0

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


_TYPES: dict[str, type] = {
    "data_dir": Path,
    "host": str,
    "mqtt_port": int,
    "http_port": int,
    "database_url": str,
    "api_key": str,
    "max_connections": int,
    "max_connections_per_address": int,
    "device_publish_rate": float,
    "max_packet_size": int,
    "max_keepalive": int,
    "connect_timeout": float,
    "log_level": str,
    "public_url": str,
    "firmware_max_size": int,
    "ota_tick": float,
    "console": bool,
    "stream_max_backlog": int,
    "stream_stall_timeout": float,
    "max_http_connections": int,
    "http_head_timeout": float,
    "tls_cert": Path,
    "tls_key": Path,
    "mqtts_port": int,
    "nats_url": str,
    "node_id": str,
    "workers": int,
    "node_lease": float,
}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _convert(name: str, value: Any) -> Any:
    kind = _TYPES[name]
    if name == "mqtt_port" and isinstance(value, str) and value.strip().lower() == "off":
        return None
    try:
        if kind is int:
            if isinstance(value, bool):
                raise ValueError
            out: Any = int(value)
        elif kind is float:
            out = float(value)
        elif kind is bool:
            if isinstance(value, bool):
                out = value
            elif str(value).strip().lower() in _TRUE | _FALSE:
                out = str(value).strip().lower() in _TRUE
            else:
                raise ValueError
        elif kind is Path:
            out = Path(str(value)).expanduser()
        else:
            out = str(value)
    except (TypeError, ValueError):
        raise SettingsError(f"setting {name}: {value!r} is not a valid {kind.__name__}") from None
    if name.endswith("_port") and not 0 <= out <= 65535:
        raise SettingsError(f"setting {name}: {out} is not a TCP port (0-65535)")
    if name == "log_level" and out.lower() not in ("debug", "info", "warning", "error"):
        raise SettingsError(f"setting log_level: {out!r} is not debug, info, warning or error")
    if name == "public_url" and not out.startswith(("http://", "https://")):
        raise SettingsError(f"setting public_url: {out!r} is not an http:// or https:// URL")
    if name in ("max_connections_per_address", "device_publish_rate") and out < 0:
        raise SettingsError(f"setting {name}: {out} is negative (0: no limit)")
    if name == "ota_tick" and not 0 < out <= 60:
        raise SettingsError(f"setting ota_tick: {out} is not between 0 and 60 seconds")
    if name == "stream_max_backlog" and out < 1024:
        raise SettingsError(f"setting stream_max_backlog: {out} is less than 1024 bytes")
    if name == "stream_stall_timeout" and not 0 < out <= 3600:
        raise SettingsError(f"setting stream_stall_timeout: {out} is not between 0 and 3600 s")
    if name == "max_http_connections" and out < 1:
        raise SettingsError(f"setting max_http_connections: {out} is not a positive number")
    if name == "http_head_timeout" and not 0 < out <= 3600:
        raise SettingsError(f"setting http_head_timeout: {out} is not between 0 and 3600 seconds")
    if name == "firmware_max_size" and out < 1:
        raise SettingsError(f"setting firmware_max_size: {out} is not a positive number of bytes")
    if name == "nats_url" and not out.startswith(("nats://", "tls://")):
        raise SettingsError(f"setting nats_url: {out!r} is not a nats:// URL")
    if name == "node_id" and not NODE_ID.fullmatch(out):
        raise SettingsError(
            f"setting node_id: {out!r} is not 1-64 letters, digits, '_', '.' or '-'"
        )
    if name == "workers" and not 1 <= out <= 256:
        raise SettingsError(f"setting workers: {out} is not between 1 and 256")
    if name == "node_lease" and not 1 <= out <= 3600:
        raise SettingsError(f"setting node_lease: {out} is not between 1 and 3600 seconds")
    return out


def load(
    options: Mapping[str, Any],
    environ: Mapping[str, str],
    config_file: Path | None = None,
) -> Settings:
    """Merge the sources; `options` holds only what was given on the command line."""
    from_file: dict[str, Any] = {}
    path = config_file or (
        Path(environ["THINGSHUB_CONFIG"]) if "THINGSHUB_CONFIG" in environ else None
    )
    if path is not None:
        try:
            from_file = tomllib.loads(path.read_text())
        except OSError as exc:
            raise SettingsError(f"cannot read config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {path} is not valid TOML: {exc}") from None
        unknown = set(from_file) - set(_TYPES)
        if unknown:
            raise SettingsError(
                f"config file {path}: unknown setting(s) {', '.join(sorted(unknown))}"
            )
    values: dict[str, Any] = {}
    for f in fields(Settings):
        name = f.name
        env_name = f"THINGSHUB_{name.upper()}"
        if options.get(name) is not None:
            values[name] = _convert(name, options[name])
        elif env_name in environ:
            values[name] = _convert(name, environ[env_name])
        elif name in from_file:
            values[name] = _convert(name, from_file[name])
    settings = Settings(**values)
    _check_tls(settings)
    _check_cluster(settings)
    return settings


def dump(s: Settings) -> str:
    """Settings as JSON, as `undump` reads them back (a supervisor hands its
    resolved settings to its worker processes: cli/workers.py)."""
    values = {f.name: getattr(s, f.name) for f in fields(s)}
    return json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in values.items()})


def undump(text: str) -> Settings:
    values = json.loads(text)
    paths = {k: Path(v) for k, v in values.items() if _TYPES[k] is Path and v is not None}
    return replace(Settings(), **{**values, **paths})


def is_postgres(url: str | None) -> bool:
    return url is not None and url.startswith(("postgres://", "postgresql://"))


def _check_cluster(s: Settings) -> None:
    """A cluster's nodes share one PostgreSQL database; SQLite has one process."""
    if s.nats_url is not None and not is_postgres(s.database_url):
        raise SettingsError(
            "setting nats_url: a cluster needs a PostgreSQL database_url (postgresql://...);"
            " SQLite serves one process only"
        )
    if s.workers > 1 and not is_postgres(s.database_url):
        raise SettingsError(
            "setting workers: several processes need a PostgreSQL database_url"
            " (postgresql://...); SQLite serves one process only"
        )


def _check_tls(s: Settings) -> None:
    """The TLS settings go together, and turning plain MQTT off needs TLS."""
    if (s.tls_cert is None) != (s.tls_key is None):
        lacking = "tls_key" if s.tls_key is None else "tls_cert"
        raise SettingsError(f"settings tls_cert and tls_key go together: {lacking} is not set")
    if s.mqtt_port is None and not s.tls:
        raise SettingsError(
            "setting mqtt_port: off needs tls_cert and tls_key, else devices have no listener"
        )
