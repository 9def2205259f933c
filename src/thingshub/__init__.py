"""ThingsHub: a self-hosted IoT device-access platform."""

__version__ = "0.1.0"
