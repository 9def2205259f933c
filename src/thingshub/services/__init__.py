"""Use cases: load, apply the core's rules, save, notify.

Rules of this package: imports `thingshub.core` only (never dialects, mqtt,
storage or api); time comes from a `Clock`; every outside effect goes through
a port given to the constructor.
"""
