"""`GET /api/v1/cluster`: the live nodes and the one answering; a single
process lists itself; any reader may look."""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.conftest import RunningPlatform


def test_a_single_process_lists_itself(platform_factory: Callable[..., RunningPlatform]) -> None:
    p = platform_factory()
    http = p.http()
    reader = http.post("/api/v1/keys", json={"name": "r", "role": "reader"}).json()["key"]
    answer = p.http(reader).get("/api/v1/cluster")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    [node] = body["nodes"]
    assert body["node"] == node["id"] == p.platform.nodes.node_id
    now = time.time() * 1000
    assert node["started_at"] <= node["last_seen"] <= now + 1000
    assert node["connections"] == 0 and node["messages_in_per_s"] == 0
    assert p.http(authorized=False).get("/api/v1/cluster").status_code == 401
    spec = http.get("/openapi.json").json()
    assert "ClusterOut" in spec["components"]["schemas"]


def test_every_node_lists_every_live_node(node_factory: Callable[..., RunningPlatform]) -> None:
    a = node_factory("node-a")
    b = node_factory("node-b")
    for node in (a, b):
        body = node.http().get("/api/v1/cluster").json()
        assert body["node"] == node.platform.nodes.node_id
        assert [n["id"] for n in body["nodes"]] == ["node-a", "node-b"]
    node_factory.stop(b)  # type: ignore[attr-defined]
    assert [n["id"] for n in a.http().get("/api/v1/cluster").json()["nodes"]] == ["node-a"]
