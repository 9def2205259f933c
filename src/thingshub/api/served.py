"""What a request of one platform carries: that platform's parts, in the ASGI scope.

Why: the routes, and the state FastAPI builds for them on the first request
(84 ms of CPU an application, 41% of the CPU of the API and gateway tests), are
made once a process (app.py), while a process may serve several platforms (a
cluster's nodes in the tests, one after another in a test worker). Each
platform's `PlatformApi` puts its `Served` in every request's scope; the
dependencies (deps.py), the guard, the stream and the operations routes read
their platform's parts from there, never from the application.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.types import Scope

if TYPE_CHECKING:  # the parts import the API's modules that read this one
    from prometheus_client import CollectorRegistry

    from thingshub.api.context import ApiContext
    from thingshub.api.metrics import HttpMetrics
    from thingshub.api.streamhub import StreamHub

#: The scope key of a request's `Served`.
SERVED = "thingshub.served"


@dataclass(frozen=True, slots=True)
class Served:
    ctx: ApiContext
    #: The HTTP requests' metrics, in `registry` (with the platform's collectors).
    metrics: HttpMetrics
    registry: CollectorRegistry
    #: The live stream's clients.
    stream: StreamHub


def served(scope: Scope) -> Served:
    """The platform a request came to (set by `PlatformApi`)."""
    found: Served = scope[SERVED]
    return found
