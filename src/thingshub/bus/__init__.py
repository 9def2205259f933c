"""Delivery of events between the parts of ThingsHub: in-process, or across
processes and machines through NATS."""
