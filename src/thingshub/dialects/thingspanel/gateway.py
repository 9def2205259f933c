"""ThingsPanel gateways: the nested payload of `gateway/...` and `devices/register`.

Rules:
- A gateway payload is a node: `gateway_data` (the node's own content),
  `sub_device_data` ({address: content}) and `sub_gateway_data` ({address:
  node}), all optional, nothing else. The top node is the sending device;
  each address names a child of the node it sits in. A node at a level
  deeper than core/topology.MAX_DEPTH (the sender is level 1) is refused.
- Node contents are objects (no historical arrays): telemetry and
  attributes key-value pairs (reports.py's rules), an event {"method",
  "params"?, "ts"?} (ms). A message is judged whole, exactly as a direct
  report is: any broken rule anywhere refuses it all (INVALID_PARAM, or
  PAYLOAD_TOO_LARGE past the limits of one direct report, counted over the
  whole message). A message with no content at all has nothing to store.
- Requests the platform sends a sub-device are nested the same way
  (`nest`), as ThingsPanel's backend nests them: `gateway_data` for the
  gateway itself; every gateway between it and the target as
  `sub_gateway_data.{address}`; the target under its parent's node as
  `sub_device_data.{address}`, or, when it has sub-devices of its own (a
  sub-gateway), as `sub_gateway_data.{address}.gateway_data`.
- `devices/register`: {"registers": [{"sub_addr", "model"?, "protocol"?}]}.
  An unreadable payload is refused whole (status "fail"); a malformed entry
  is refused alone (INVALID_PARAM) when it names an address.
"""

from __future__ import annotations

from typing import Any, Final

from thingshub.core import values
from thingshub.core.jsontext import dumps
from thingshub.core.messages import NodeData, RegisterResult, SubRegister, SubRegisterRequest
from thingshub.core.model import PointsAt
from thingshub.core.topology import MAX_DEPTH, address_problem, addresses_fine
from thingshub.core.values import kind as _kind
from thingshub.core.values import shown
from thingshub.dialects.thingspanel import reports
from thingshub.dialects.thingspanel.reports import (
    MAX_ATTRIBUTES,
    MAX_EVENTS,
    MAX_PAYLOAD,
    MAX_POINTS,
    ReportError,
)

GATEWAY_DATA: Final = "gateway_data"
SUB_DEVICE_DATA: Final = "sub_device_data"
SUB_GATEWAY_DATA: Final = "sub_gateway_data"
_NODE_KEYS: Final = (GATEWAY_DATA, SUB_DEVICE_DATA, SUB_GATEWAY_DATA)
#: The limit of one message, by kind, over all its nodes.
_LIMITS: Final = {"telemetry": MAX_POINTS, "attributes": MAX_ATTRIBUTES, "event": MAX_EVENTS}
_WHAT: Final = {"telemetry": "points", "attributes": "attributes", "event": "events"}


def _param(message: str) -> ReportError:
    return ReportError(reports.INVALID_PARAM, message)


class _Reader:
    """Walks one message's tree, counting what it holds against the limits."""

    def __init__(self, kind: str, now_ms: int) -> None:
        self.kind = kind
        self.now_ms = now_ms
        self.count = 0
        self.nodes: list[NodeData] = []

    def node(self, body: object, path: tuple[str, ...], where: str) -> None:
        """`where` locates the node in the message ("" for the top one)."""
        if not isinstance(body, dict):
            raise _param(f"{where or 'the payload'} must be an object, not {_kind(body)}")
        at = f"{where}." if where else ""
        for key in body:
            if key not in _NODE_KEYS:
                raise _param(
                    f"{at}{shown(key)} is not a field of a gateway node: it holds only"
                    f" {', '.join(_NODE_KEYS)}"
                )
        if GATEWAY_DATA in body:
            self.content(body[GATEWAY_DATA], path, f"{at}{GATEWAY_DATA}")
        for field in (SUB_DEVICE_DATA, SUB_GATEWAY_DATA):
            if field not in body:
                continue
            children = body[field]
            if not isinstance(children, dict):
                raise _param(
                    f"{at}{field} must be an object of sub-device addresses, not {_kind(children)}"
                )
            if children and len(path) + 2 > MAX_DEPTH:
                raise _param(
                    f"{at}{field} is deeper than {MAX_DEPTH} levels of gateways and sub-devices"
                )
            values_only = field == SUB_DEVICE_DATA and self.kind == "telemetry"
            if values_only and self._all_values(children, path):
                continue
            for address, child in children.items():
                problem = address_problem(address)
                if problem is not None:
                    raise _param(f"{at}{field}: {shown(address)}: {problem}")
                if values_only and type(child) is dict and child:  # a sub-device's values
                    self._values(child, (*path, address), at)  # `content`'s, where named
                    continue  # only for a refusal
                inner = f"{at}{field}[{shown(address)}]"
                if field == SUB_DEVICE_DATA:
                    self.content(child, (*path, address), inner)
                else:
                    self.node(child, (*path, address), inner)

    def content(self, body: object, path: tuple[str, ...], where: str) -> None:
        if not isinstance(body, dict):
            raise _param(f"{where} must be an object, not {_kind(body)}")
        if self.kind == "event":
            ts = self.now_ms
            if "ts" in body:
                ts = reports.timestamp(body["ts"], self.now_ms, f"{where}: ")
            event = reports.event_record(body, ts, f"{where}: ")
            self._add(1)
            self.nodes.append(NodeData(path, events=(event,)))
            return
        if not body:
            raise _param(f"{where} is empty: there is nothing to store")
        self._add(len(body))
        reports.check_entries(body, f"{where}: ")
        if self.kind == "telemetry":
            self.nodes.append(NodeData(path, points=PointsAt(self.now_ms, body)))
        else:
            self.nodes.append(NodeData(path, attributes=dict(body)))

    def _all_values(self, children: dict[str, Any], path: tuple[str, ...]) -> bool:
        """The common message: every sub-device's telemetry (a non-empty object) with
        a good address and entries devices nearly always send, judged at once (no
        call and no search a node) and taken. False: nothing taken, and the loop
        node by node judges them, refusing with the same words as ever."""
        count = self.count
        for child in children.values():
            if type(child) is not dict or not child:
                return False
            count += len(child)
        if count > MAX_POINTS or not addresses_fine(children):
            return False
        if not values.all_entries_fine(children.values()):
            return False
        self.count = count
        now = self.now_ms
        nodes = self.nodes
        for address, child in children.items():
            nodes.append(NodeData((*path, address), points=PointsAt(now, child)))
        return True

    def _values(self, body: dict[str, Any], path: tuple[str, ...], at: str) -> None:
        """`content` of a sub-device's telemetry (an object, not empty), its place in
        the message ("{at}sub_device_data[address]") spelled only in a refusal."""
        self.count += len(body)
        if self.count > MAX_POINTS:
            self._add(0)  # too many: refused there
        problem = values.entries_problem(body)
        if problem:
            raise _param(f"{at}{SUB_DEVICE_DATA}[{shown(path[-1])}]: {problem}")
        self.nodes.append(NodeData(path, points=PointsAt(self.now_ms, body)))

    def _add(self, count: int) -> None:
        self.count += count
        limit = _LIMITS[self.kind]
        if self.count > limit:
            raise ReportError(
                reports.PAYLOAD_TOO_LARGE,
                f"the message carries more than {limit} {_WHAT[self.kind]}; at most {limit}"
                " are accepted",
            )


def parse(kind: str, payload: bytes, now_ms: int, max_payload: int = MAX_PAYLOAD) -> list[NodeData]:
    """The nodes of a `gateway/{kind}` payload, in document order (kind:
    "telemetry", "attributes" or "event")."""
    body = reports.load(payload, max_payload)
    reader = _Reader(kind, now_ms)
    reader.node(body, (), "")
    if not reader.nodes:
        raise _param("the message holds no data for the gateway or any sub-device")
    return reader.nodes


def nest(path: tuple[str, ...], content: object, gateway: bool = False) -> dict[str, Any]:
    """The payload carrying `content` to the device at `path` below the gateway
    (`gateway`: that device is a sub-gateway, its content is its `gateway_data`)."""
    if not path:
        return {GATEWAY_DATA: content}
    if len(path) == 1 and not gateway:
        return {SUB_DEVICE_DATA: {path[0]: content}}
    return {SUB_GATEWAY_DATA: {path[0]: nest(path[1:], content, gateway)}}


# ---------------------------------------------------------------- devices/register


def parse_register(payload: bytes, max_payload: int = MAX_PAYLOAD) -> SubRegisterRequest:
    """A `devices/register` payload: the entries to create and those refused."""
    try:
        body = reports.load(payload, max_payload)
    except ReportError as exc:
        return SubRegisterRequest((), problem=exc.message)
    if not isinstance(body, dict) or not isinstance(body.get("registers"), list):
        return SubRegisterRequest(
            (), problem='the payload must be an object {"registers": [{"sub_addr", ...}]}'
        )
    entries = body["registers"]
    if len(entries) > MAX_EVENTS:
        return SubRegisterRequest(
            (), problem=f"at most {MAX_EVENTS} sub-devices register in one message"
        )
    registers: list[SubRegister] = []
    invalid: list[tuple[str, str]] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("sub_addr"), str):
            return SubRegisterRequest(
                (), problem=f"registers[{index}] must be an object with a string sub_addr"
            )
        address = entry["sub_addr"]
        problem = address_problem(address)
        if problem is not None:
            invalid.append((address, problem))
            continue
        registers.append(SubRegister(address, _text(entry, "model"), _text(entry, "protocol")))
    return SubRegisterRequest(tuple(registers), tuple(invalid))


def _text(entry: dict[str, Any], field: str) -> str | None:
    """An optional string field (anything else counts as absent: `model` names a
    product only if one has that id, else the gateway's is used)."""
    value = entry.get(field)
    return value if isinstance(value, str) else None


def register_response(ok: bool, message: str, results: tuple[RegisterResult, ...]) -> bytes:
    """ThingsPanel's `sub-register-response` body."""
    body: dict[str, Any] = {
        "type": "sub-register-response",
        "status": "success" if ok else "fail",
        "message": message,
    }
    if ok:
        body["registersRes"] = {
            r.sub_address: {
                "result": 0 if not r.errcode else 1,
                "errorcode": r.errcode,
                "message": r.message,
                "sub_addr": r.sub_address,
            }
            for r in results
        }
    return dumps(body)
