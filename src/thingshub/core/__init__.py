"""The pure core: domain values, rules and ports.

Rules of this package: standard library only; it never reads a clock (time
is an argument), never does I/O, never imports from another thingshub package.
"""
