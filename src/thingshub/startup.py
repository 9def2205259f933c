"""What starting needs before the parts exist: where to listen, under which
name, and the one error an operator can fix.

Rules:
- A problem the operator can fix (a taken port, an unwritable data dir, an
  unreachable database) is a `StartupError` with one sentence, never a
  traceback (cli/serve.py prints it).
- Listeners share their ports with other processes (SO_REUSEPORT) only for the
  workers of `serve --workers` and the nodes of a cluster (`shares_ports`).
"""

from __future__ import annotations

import logging
import resource
import socket
from typing import TYPE_CHECKING

from thingshub.config import NODE_ID, Settings

if TYPE_CHECKING:
    from thingshub.services.devices import DeviceService

log = logging.getLogger("thingshub")


async def warm(devices: DeviceService) -> None:
    """Load the devices into the login cache, after the ready line (a failure is
    logged: logins then read the database until the cache fills)."""
    try:
        n = await devices.warm_cache()
    except Exception:
        log.exception("loading devices into the login cache failed")
    else:
        log.info("%d device(s) loaded into the login cache", n)


#: Where the soft limit goes when the hard one is unlimited (Linux's default fs.nr_open).
NOFILE_CEILING = 1_048_576


def raise_open_file_limit() -> int:
    """Raise the soft limit on open files to the hard one; return the soft limit now.

    Every connection is a descriptor, and many systems start a process at a soft
    1,024 under a hard limit far above it (systemd gives 524,288): left there, a
    server refuses its 1,000th device with EMFILE on a machine that allows far
    more. Raising the soft limit up to the hard one needs no privilege, and what
    epoll-based asyncio does with many descriptors is fine (nothing here uses
    select()). Where the limit cannot be raised the old one stays: never fatal.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = NOFILE_CEILING if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, want, exc)
        else:
            soft = want
    return soft


class StartupError(Exception):
    """Something the operator must fix; the message says what."""


def bind_http(host: str, port: int, *, shared: bool = False) -> socket.socket:
    """The HTTP listener's socket, bound and listening (`shared`: SO_REUSEPORT).

    Made with IPPROTO_TCP named, not 0: asyncio turns Nagle off (TCP_NODELAY) only
    on accepted sockets whose `proto` says TCP. With Nagle on, a response written
    as head then body waited for the client's delayed ACK: 40 ms on every
    keep-alive request."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if shared:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StartupError(
            f"cannot listen for HTTP on {host}:{port}: {exc.strerror or exc}"
        ) from exc
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def shares_ports(s: Settings) -> bool:
    """Whether the listeners let other processes listen on their ports too
    (SO_REUSEPORT): the workers of `serve --workers`, and any node of a cluster."""
    return s.workers > 1 or s.nats_url is not None


def default_node_id(port: int | None) -> str:
    """The host name and the MQTT port, as a node id may be written."""
    host = "".join(c if NODE_ID.fullmatch(c) else "-" for c in socket.gethostname()) or "node"
    return f"{host[:58]}-{port or 0}"


def public_url(configured: str | None, host: str, port: int, scheme: str = "http") -> str:
    """Where devices download firmware: the setting, else this server's own address."""
    if configured:
        return configured.rstrip("/")
    if host in ("0.0.0.0", "::", ""):
        log.warning(
            "listening on all addresses: set --public-url (THINGSHUB_PUBLIC_URL) to the"
            " address devices reach this server at; firmware links use 127.0.0.1 until then"
        )
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"
