"""The gateway tests use the platform fixtures of tests/conftest.py (`platform`, `register`),
and these: `served`, a platform of its own on SQLite, and `version`, each MQTT version
(5 and 3.1.1) in turn."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.conftest import RunningPlatform


@pytest.fixture(params=[5, 4], ids=["mqtt5", "mqtt311"])
def version(request: pytest.FixtureRequest) -> int:
    return int(request.param)


@pytest.fixture
def served(platform_factory: Callable[..., RunningPlatform]) -> RunningPlatform:
    return platform_factory()
