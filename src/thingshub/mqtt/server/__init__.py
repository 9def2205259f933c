"""The asyncio MQTT server: `Broker` plus its configuration and statistics."""

from thingshub.mqtt.server.broker import Broker
from thingshub.mqtt.server.config import NEVER, BrokerConfig
from thingshub.mqtt.server.delivery import BrokerStats

__all__ = ["NEVER", "Broker", "BrokerConfig", "BrokerStats"]
