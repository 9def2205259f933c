"""Storage in dicts: the reference implementation and the services' test double (storage.py)."""

from thingshub.storage.memory.storage import MemoryStorage

__all__ = ["MemoryStorage"]
