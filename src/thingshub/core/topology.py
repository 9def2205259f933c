"""Gateways and sub-devices: the rules of the device tree, for every protocol family.

Rules:
- A device has at most one gateway (its parent) and an optional
  `sub_address`, 1-36 characters of `[A-Za-z0-9_.:-]` (ThingsPanel's
  address of a sub-device), unique among the gateway's children.
- A tree is at most MAX_DEPTH devices deep, top gateway included (ThingsPanel
  allows five levels); a gateway has at most MAX_CHILDREN children (OneNET's
  limit); a device is never its own ancestor.
- A binding is judged from what is stored: the chain of the new gateway up to
  its top (`ancestors`, nearest first) and the height of the device's own
  subtree (1 for a device without children). Nothing here reads storage.
- A message for a sub-device travels through its top gateway, the only one
  with a connection; `route` gives that gateway and the addresses that lead
  from it down to the device, and refuses a chain with a link lacking its
  address (the wire could not name the device), unless the protocol names
  the device by its ids (OneNET), when no address is needed.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Final

from thingshub.core.errors import Conflict, InvalidRequest

MAX_DEPTH: Final = 5
MAX_CHILDREN: Final = 1500
MAX_ADDRESS: Final = 36
_ADDRESS = re.compile(r"[A-Za-z0-9_.:-]{1,36}")
_NOT_ADDRESS = re.compile(r"[^A-Za-z0-9_.:-]")

#: A device as the tree knows it: (product id, name).
Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Link:
    """One device of a chain: who it is, its gateway and its address there."""

    key: Key
    gateway: Key | None
    sub_address: str | None


def address_problem(value: object) -> str | None:
    """Why `value` is not a sub-device address; None if it is one."""
    if not isinstance(value, str):
        return "a sub-device address must be a string"
    if not _ADDRESS.fullmatch(value):
        return (
            f"a sub-device address is 1 to {MAX_ADDRESS} characters of letters, digits,"
            " '_', '.', ':' and '-'"
        )
    return None


def addresses_fine(values: Collection[object]) -> bool:
    """Whether `address_problem` finds nothing in any of `values`: a message's
    addresses at once, their lengths inline and their characters by one search
    over all of them. False says only that some value needs `address_problem`."""
    for value in values:
        if type(value) is not str or not 0 < len(value) <= MAX_ADDRESS:
            return False
    return _NOT_ADDRESS.search("".join(values)) is None  # type: ignore[arg-type]


def check_address(value: object) -> str:
    """`value` if it is a sub-device address, else InvalidRequest."""
    problem = address_problem(value)
    if problem is not None:
        raise InvalidRequest(f"sub_address: {problem}")
    assert isinstance(value, str)
    return value


def check_binding(
    device: Key, gateway: Key, ancestors: Sequence[Key], height: int, children: int
) -> None:
    """Raise InvalidRequest unless `device` may become a child of `gateway`.

    `ancestors` is the gateway's chain up to its top, the gateway first;
    `height` the depth of the device's own subtree (1: no children);
    `children` how many children the gateway has besides the device."""
    if device == gateway or device in ancestors:
        raise InvalidRequest(
            f"device {device[1]!r} of product {device[0]!r} cannot be bound to its own"
            " sub-device: the tree would have a cycle"
        )
    depth = len(ancestors) + height
    if depth > MAX_DEPTH:
        raise InvalidRequest(
            f"the tree would be {depth} devices deep; at most {MAX_DEPTH} levels are allowed"
        )
    if children >= MAX_CHILDREN:
        raise InvalidRequest(
            f"gateway {gateway[1]!r} of product {gateway[0]!r} has {MAX_CHILDREN} sub-devices"
            " already, the most it may have"
        )


def route(chain: Sequence[Link], *, addressed: bool = True) -> tuple[Key, tuple[str, ...]]:
    """(top gateway, addresses from it down to the device) of a chain that runs
    from the device (first) up to its top gateway (last); Conflict where a
    link lacks its address. Not `addressed` (a protocol naming the device by
    its ids): the top gateway and no addresses."""
    if not addressed:
        return chain[-1].key, ()
    addresses: list[str] = []
    for link in chain[:-1]:
        if link.sub_address is None:
            raise Conflict(
                f"device {link.key[1]!r} of product {link.key[0]!r} has no sub_address under"
                " its gateway, so messages through the gateway cannot name it"
            )
        addresses.append(link.sub_address)
    addresses.reverse()
    return chain[-1].key, tuple(addresses)
