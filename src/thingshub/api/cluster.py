"""The cluster's nodes: `GET /api/v1/cluster` (interfaces.md, "Several processes
and machines").

The live nodes as their heartbeats last wrote them (services/nodes.py), and
which one answered; a single process lists itself. Any reader may look.
"""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter

from thingshub.api.deps import Nodes
from thingshub.api.params import ApiRoute
from thingshub.api.schemas import ERRORS, ClusterOut, NodeOut

router = APIRouter(
    prefix="/api/v1/cluster", tags=["operations"], responses=ERRORS, route_class=ApiRoute
)


@router.get("")
async def cluster(nodes: Nodes) -> ClusterOut:
    """The live nodes of the cluster (times in ms), and the id of this one."""
    live = await nodes.nodes()
    return ClusterOut(node=nodes.node_id, nodes=[NodeOut(**asdict(n)) for n in live])
