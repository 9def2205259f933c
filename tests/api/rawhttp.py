"""HTTP/1.1 over a bare socket, for what httpx will not do: stall half-way
through a request head, hold a body back, or keep one connection across an
error to see whether the server closed it.

Every read waits at most a given time; a timeout fails the test with what was
seen instead of hanging it.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

PARTIAL_HEAD = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"


@dataclass
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def stalled(port: int, head: bytes = PARTIAL_HEAD) -> socket.socket:
    """A connection that sent `head` (an incomplete request head) and stops there."""
    sock = connect(port)
    if head:
        sock.sendall(head)
    return sock


def closed_by_server(sock: socket.socket, timeout: float) -> bytes:
    """Read until the server closes the connection; return what it sent.

    Fails if the connection is still open after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"the server kept the connection open; it sent {data!r}")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def read_response(sock: socket.socket, timeout: float = 5.0) -> Response:
    """One response with a Content-Length (or none: then until the server closes)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"the connection closed before a response head: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        length = int(headers["content-length"])
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                raise AssertionError("the connection closed in the middle of a response body")
            rest += chunk
        return Response(status, headers, rest[:length])
    return Response(status, headers, rest + closed_by_server(sock, timeout))


def request(
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
) -> bytes:
    """The bytes of a request (with Content-Length when there is a body)."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    all_headers = dict(headers or {})
    if body and "content-length" not in {k.lower() for k in all_headers}:
        all_headers["Content-Length"] = str(len(body))
    lines += [f"{k}: {v}" for k, v in all_headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body
