"""Device secrets: generated once, shown once, only their hashes kept.

Rules:
- Device key: 32 random bytes, base64 (the OneNET HMAC key; it has to be kept
  to verify tokens, so it is stored as is).
- User name and password: random URL-safe strings from `secrets`; the
  password is stored as HMAC-SHA256(pepper, password), where the pepper is a
  random server secret. Passwords are random and long, so a keyed hash is
  enough: nothing to slow-hash against a dictionary.
- Comparisons are constant-time.
- A ThingsPanel access token is the whole credential of a login without a
  password (the device's identity, as ThingsPanel's broker takes it): kept
  as is, unique on the server, 1-64 printable ASCII without spaces; a
  generated one is 20 letters and digits.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import string

from thingshub.core.errors import InvalidRequest

KEY_BYTES = 32


def new_product_id() -> str:
    return secrets.token_hex(5)


def new_device_key() -> str:
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()


def check_device_key(value: object) -> str:
    """A key a device chose (dynamic registration): base64 of 1 to 32 bytes."""
    try:
        raw = base64.b64decode(value, validate=True) if isinstance(value, str) else b""
    except ValueError:
        raw = b""
    if not 1 <= len(raw) <= KEY_BYTES:
        raise InvalidRequest(f"key must be the base64 of 1 to {KEY_BYTES} bytes")
    assert isinstance(value, str)
    return value


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


#: A generated access token: 20 letters and digits, as ThingsPanel makes them.
ACCESS_TOKEN_ALPHABET = string.ascii_letters + string.digits
ACCESS_TOKEN_LENGTH = 20
MAX_ACCESS_TOKEN = 64


def new_access_token() -> str:
    return "".join(secrets.choice(ACCESS_TOKEN_ALPHABET) for _ in range(ACCESS_TOKEN_LENGTH))


def check_access_token(value: object) -> str | None:
    """None, True (generate one) or a token of 1-64 printable ASCII characters (no space)."""
    if value is None or value is False:
        return None
    if value is True:
        return new_access_token()
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= MAX_ACCESS_TOKEN
        or not all("!" <= c <= "~" for c in value)
    ):
        raise InvalidRequest(
            "access_token must be true (generate one) or 1-64 printable ASCII characters"
        )
    return value
