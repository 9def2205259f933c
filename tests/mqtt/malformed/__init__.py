"""The malformed-input table: rows from the MQTT specifications (rows_*.py), the
socket harness that plays them against a server (harness.py)."""
