"""Device protocols as pure translators behind one port.

Rules of this package: imports only `thingshub.core` and the standard
library; no I/O, no clock (time is an argument). Each dialect is a
package of its own (`onenet/`, `thingspanel/`) implementing `port.Dialect`;
the `registry` is how the gateway finds the one a login, a topic or a
message belongs to. A new device protocol is a new package here, registered
in `registry.default_registry` (or, for a plug-in, with `Registry.register`).
"""
