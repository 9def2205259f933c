"""The HTTP API for applications (FastAPI): one router module per resource, one
error table, the API key, metrics and health."""
