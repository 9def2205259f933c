"""Device protocols as pure translators, one module per family.

Rules of this package: imports only `thingshub.core` and the standard library;
no I/O, no clock (time is an argument). Each module owns its topic table, its
credential format and its error codes.
"""
