"""The device side of ThingsHub: a Python SDK for devices that talk to it over MQTT.

`OneNetDevice` (token login, device image, commands, thing model),
`OneNetGateway` (a OneNET device that also speaks for its sub-devices:
topology, their login, their data, calls to them routed to handlers),
`ThingsPanelDevice` (telemetry, attributes, events, commands, attribute
set/get, control, OTA) and `ThingsPanelGateway` (the same for sub-devices
behind one connection). Each has an asyncio API and, through `.blocking()`, a
blocking one for scripts; each reconnects and subscribes again by itself,
over TCP, TLS or WebSocket.

Rules:
- A device is a device: it speaks the wire protocols of docs/protocols.md
  over a socket, exactly as hardware would, and imports nothing of the
  server (an import-linter contract in pyproject.toml says so).
- The fleet simulator (`fleet.py`) is built on the same classes.
"""

from thingshub.device.blocking import Blocking
from thingshub.device.client import (
    DeviceError,
    LoginRefused,
    MqttClient,
    NotConnected,
    Rejected,
)
from thingshub.device.gateway import ThingsPanelGateway
from thingshub.device.onenet import OneNetDevice, ThingError
from thingshub.device.onenet_gateway import OneNetGateway, SubDevice
from thingshub.device.ota import Firmware
from thingshub.device.thingspanel import ThingsPanelDevice

__all__ = [
    "Blocking",
    "DeviceError",
    "Firmware",
    "LoginRefused",
    "MqttClient",
    "NotConnected",
    "OneNetDevice",
    "OneNetGateway",
    "Rejected",
    "SubDevice",
    "ThingError",
    "ThingsPanelDevice",
    "ThingsPanelGateway",
]
