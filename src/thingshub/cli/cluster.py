"""`thingshub cluster`: the nodes of the cluster a server belongs to, over the
HTTP API (`GET /api/v1/cluster`).

Rules:
- An HTTP client of a running server (client.py); any key may look (reader).
- The table shows every live node, the one that answered marked `*`, when it
  started (UTC) and how long ago it last beat; `--json` is the API's answer.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import typer

from thingshub.cli.client import Api, show
from thingshub.cli.options import DirOpt, JsonOpt, KeyOpt, UrlOpt

COLUMNS = ["node", "started", "last seen", "connections", "messages in / s"]


def cluster(
    url: UrlOpt = None, api_key: KeyOpt = None, data_dir: DirOpt = None, as_json: JsonOpt = False
) -> None:
    """List the live nodes of the cluster (a single server: itself)."""
    answer = Api(url, api_key, data_dir).call("GET", "/api/v1/cluster")
    if as_json:
        show(answer, True, COLUMNS)
        return
    now = time.time() * 1000
    rows = [
        {
            "node": f"{n['id']} *" if n["id"] == answer["node"] else n["id"],
            "started": datetime.fromtimestamp(n["started_at"] / 1000, UTC).strftime(
                "%Y-%m-%d %H:%M:%S"
            ),
            "last seen": f"{max(now - n['last_seen'], 0) / 1000:.1f} s ago",
            "connections": n["connections"],
            "messages in / s": n["messages_in_per_s"],
        }
        for n in answer["nodes"]
    ]
    show(rows, False, COLUMNS, title=f"Cluster nodes (* answered: {answer['node']})")


def register(app: typer.Typer) -> None:
    app.command()(cluster)
