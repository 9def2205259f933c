"""OneNET device login tokens: parse, sign, verify.

Rules:
- Login: client id = device name, user name = product id, password = a token
  `version=2018-10-31&res=products%2F{pid}%2Fdevices%2F{name}&et={expiry}
  &method={md5|sha1|sha256}&sign={base64 signature}`, values URL-encoded.
- sign = base64(HMAC_method(base64decode(device key),
  et + "\\n" + method + "\\n" + res + "\\n" + version)), `res` unencoded.
- `et` is a plain decimal (`0` or no leading zero, ASCII digits only): the
  signature is checked over `str(et)`, so any other spelling of the same
  number (`+1`, `01`, `1_0`) would be a second, unsigned form of one token.
- `version` is 2018-10-31 or 2022-05-01 (signed alike).
- Keys (field-protocols §5.1): `res` = `products/{pid}/devices/{name}`
  signed with the device key or the product access key, or `products/{pid}`
  (a product-level token, which admits any device of the product) signed
  with the product access key.
- A token is refused when it is malformed, its version or method is unknown,
  `et` is not after `now`, `res` names another device or product, or the
  signature is wrong under every key it may be signed with (compared in
  constant time).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

from thingshub.core.errors import Unauthorized
from thingshub.core.model import Device

TOKEN_VERSION = "2018-10-31"
VERSIONS = (TOKEN_VERSION, "2022-05-01")
METHODS = {"md5": hashlib.md5, "sha1": hashlib.sha1, "sha256": hashlib.sha256}
_TOKEN_FIELDS = ("version", "res", "et", "method", "sign")
_EXPIRY = re.compile(r"0|[1-9][0-9]*")


@dataclass(frozen=True, slots=True)
class Token:
    version: str
    res: str
    et: int
    method: str
    sign: str


def looks_like_token(password: str) -> bool:
    """Tell a OneNET token from a ThingsPanel password without parsing it fully.

    Field order is free (as in `parse_token`); issued passwords never hold `&` or `=`.
    A field is `key=...` at the start or after a `&`: looked for as text, which
    is what splitting would find, without building the parts on every login.
    """
    return _has_field(password, "version") or (
        _has_field(password, "res") and _has_field(password, "sign")
    )


def _has_field(password: str, key: str) -> bool:
    return password.startswith(key + "=") or f"&{key}=" in password


def _unquote(value: str) -> str:
    """`urllib.parse.unquote`, several times faster on what tokens hold: the
    escapes of `/`, `=` and `+` (in `res` and `sign`), replaced as text. A
    value with any other escape (lower case, UTF-8, broken) goes to `unquote`
    whole. Replacing cannot make a new escape: `/`, `=`, `+` are not hex digits."""
    if "%" not in value:
        return value
    plain = value.replace("%2F", "/").replace("%3D", "=").replace("%2B", "+")
    return plain if "%" not in plain else unquote(value)


def parse_token(password: str) -> Token:
    fields: dict[str, str] = {}
    for part in password.split("&"):
        key, sep, value = part.partition("=")
        if not sep or key not in _TOKEN_FIELDS or key in fields:
            raise Unauthorized("malformed OneNET token")
        fields[key] = _unquote(value)
    if len(fields) != len(_TOKEN_FIELDS):  # every key is one of them, none twice
        missing = ", ".join(sorted(set(_TOKEN_FIELDS) - set(fields)))
        raise Unauthorized(f"OneNET token lacks {missing}")
    if not _EXPIRY.fullmatch(fields["et"]):
        raise Unauthorized("OneNET token expiry is not a plain decimal number")
    try:
        et = int(fields["et"])
    except ValueError:
        raise Unauthorized("OneNET token expiry is not a number") from None
    return Token(fields["version"], fields["res"], et, fields["method"], fields["sign"])


def resource(product_id: str, device_name: str | None = None) -> str:
    """The `res` of a device's token, or of its product's (no device name)."""
    if device_name is None:
        return f"products/{product_id}"
    return f"products/{product_id}/devices/{device_name}"


def signature(key_b64: str, et: int, method: str, res: str, version: str = TOKEN_VERSION) -> str:
    try:
        key = base64.b64decode(key_b64, validate=True)
    except (binascii.Error, ValueError):
        raise Unauthorized("device key is not base64") from None
    message = f"{et}\n{method}\n{res}\n{version}".encode()
    return base64.b64encode(hmac.new(key, message, METHODS[method]).digest()).decode()


def verify_token(
    token: Token,
    *,
    key_b64: str | None,
    product_id: str,
    device_name: str | None,
    now_s: int,
    product_key: str | None = None,
) -> None:
    """Raise Unauthorized, with the reason, unless the token admits this device
    (or, with `device_name` None, this product) now.

    `key_b64` is the device's key, `product_key` the product's access key."""
    if token.version not in VERSIONS:
        raise Unauthorized(f"unknown OneNET token version {token.version!r}")
    if token.method not in METHODS:
        raise Unauthorized(f"unknown OneNET token method {token.method!r}")
    if token.res == resource(product_id):
        keys = [product_key]
    elif device_name is not None and token.res == resource(product_id, device_name):
        keys = [key_b64, product_key]
    else:
        raise Unauthorized("OneNET token is for another resource")
    if token.et <= now_s:
        raise Unauthorized("OneNET token has expired")
    for key in keys:
        if key is None:
            continue
        expected = signature(key, token.et, token.method, token.res, token.version)
        if hmac.compare_digest(expected.encode(), token.sign.encode()):
            return
    raise Unauthorized("OneNET token signature is wrong")


def verify_device_token(token: Token, device: Device, now_s: int) -> None:
    """`verify_token` with the device's own key and ids (and its product's key,
    when the lookup that found it brought one)."""
    verify_token(
        token,
        key_b64=device.key,
        product_id=device.product_id,
        device_name=device.name,
        now_s=now_s,
        product_key=device.product_key,
    )


def make_token(
    key_b64: str,
    product_id: str,
    device_name: str | None,
    expires_at_s: int,
    method: str = "sha256",
    version: str = TOKEN_VERSION,
) -> str:
    """A token as a device would compute it (for the CLI, the console and tests);
    `device_name` None makes a product-level token."""
    res = resource(product_id, device_name)
    sign = signature(key_b64, expires_at_s, method, res, version)
    return (
        f"version={version}&res={quote(res, safe='')}&et={expires_at_s}"
        f"&method={method}&sign={quote(sign, safe='')}"
    )
