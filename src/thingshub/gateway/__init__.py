"""Binds the MQTT server to the platform: logins, topic rights, presence, and
the translation of device messages by the dialects."""
