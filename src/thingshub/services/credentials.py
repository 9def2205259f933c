"""Device secrets: generated once, shown once, only their hashes kept.

Rules:
- Device key: 32 random bytes, base64 (the OneNET HMAC key; it has to be kept
  to verify tokens, so it is stored as is).
- User name and password: random URL-safe strings from `secrets`; the
  password is stored as HMAC-SHA256(pepper, password), where the pepper is a
  random server secret. Passwords are random and long, so a keyed hash is
  enough: nothing to slow-hash against a dictionary.
- Comparisons are constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

KEY_BYTES = 32


def new_product_id() -> str:
    return secrets.token_hex(5)


def new_device_key() -> str:
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()


def new_username() -> str:
    return secrets.token_urlsafe(12)


def new_password() -> str:
    return secrets.token_urlsafe(24)


def new_pepper() -> str:
    return secrets.token_hex(32)


def hash_password(pepper: str, password: str | bytes) -> str:
    data = password.encode() if isinstance(password, str) else password
    return hmac.new(bytes.fromhex(pepper), data, hashlib.sha256).hexdigest()


def password_matches(pepper: str, password: str | bytes, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_password(pepper, password), stored_hash)
