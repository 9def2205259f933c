"""A general-purpose MQTT 3.1.1 and 5.0 server for asyncio.

Rules of this package:
- It knows nothing about devices, products or the platform. The platform sees
  it only through `thingshub.mqtt.hooks.Hooks` and `Broker.publish`.
- `codec` is sans-io: bytes in, packets out, packets in, bytes out. It never
  touches a socket, a clock or an event loop.
- `server` owns sockets, sessions, timers and routing.
"""
