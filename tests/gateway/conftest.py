"""The gateway tests use the platform fixtures of tests/conftest.py (`platform`, `register`)."""
