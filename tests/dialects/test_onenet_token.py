"""OneNET login tokens (docs/protocols.md section 1): golden values, parsing and refusals.

The expected signatures are computed here with `hmac`/`hashlib`/`base64` and
pinned as literals, so a change that breaks both the module and a helper
shared with it cannot go unnoticed. The fixed expiry was chosen so that every
method's raw signature holds `+`, `/` and `=`, the three characters whose
URL-encoding a device gets wrong most often.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import secrets

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thingshub.core.errors import Unauthorized
from thingshub.dialects.onenet.token import (
    Token,
    looks_like_token,
    make_token,
    parse_token,
    verify_token,
)

KEY_B64 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="  # bytes 0..31
PRODUCT_KEY = base64.b64encode(bytes(range(100, 132))).decode()
PID = "pid123"
NAME = "dev-1"
RES = "products/pid123/devices/dev-1"
ET = 1_893_456_149  # 2030-01-01T00:02:29Z
NOW = ET - 3600
VERSION = "2018-10-31"
METHODS = ("md5", "sha1", "sha256")

#: base64(HMAC_method(key, et\nmethod\nres\nversion)) for the values above.
GOLDEN = {
    "md5": "T/bvSp4MFmY+ki5VcRJD9w==",
    "sha1": "Q4gB2zySaA+Uob+YcaGs8/8/5W8=",
    "sha256": "ZhaM/kk8TK/jxT0y+nAYOskPfj6BT0LPaskm0tMEys4=",
}

B64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def hand_sign(key_b64: str, et: int, method: str, res: str, version: str = VERSION) -> str:
    """The signature exactly as docs/protocols.md words it, without the module."""
    digest = {"md5": hashlib.md5, "sha1": hashlib.sha1, "sha256": hashlib.sha256}[method]
    message = f"{et}\n{method}\n{res}\n{version}".encode()
    return base64.b64encode(hmac.new(base64.b64decode(key_b64), message, digest).digest()).decode()


def hand_quote(value: str) -> str:
    """URL-encode the only characters of base64 and of `res` that need it."""
    return value.replace("%", "%25").replace("+", "%2B").replace("/", "%2F").replace("=", "%3D")


def token_text(
    *,
    version: str = VERSION,
    res: str = "products%2Fpid123%2Fdevices%2Fdev-1",
    et: str = str(ET),
    method: str = "sha256",
    sign: str | None = None,
) -> str:
    """A token assembled field by field, so each test can spoil exactly one field."""
    if sign is None:
        sign = hand_quote(GOLDEN[method])
    return f"version={version}&res={res}&et={et}&method={method}&sign={sign}"


def refusal(
    password: str, *, now: int = NOW, pid: str = PID, name: str = NAME, key: str = KEY_B64
) -> str:
    """The reason a password is refused for device pid/name at `now`; fails if it is accepted."""
    with pytest.raises(Unauthorized) as info:
        verify_token(
            parse_token(password), key_b64=key, product_id=pid, device_name=name, now_s=now
        )
    return info.value.message


# ---------------------------------------------------------------- golden values


@pytest.mark.parametrize("method", METHODS)
def test_hand_computed_signature_is_the_pinned_one(method: str) -> None:
    """Pins the helper itself, and that the chosen expiry exercises `+`, `/` and `=`."""
    sign = hand_sign(KEY_B64, ET, method, RES)
    assert sign == GOLDEN[method]
    assert {"+", "/", "="} <= set(sign)


@pytest.mark.parametrize("method", METHODS)
def test_make_token_is_byte_exact(method: str) -> None:
    """The CLI and the console hand this text to devices as is: every byte must be right."""
    expected = (
        f"version=2018-10-31&res=products%2F{PID}%2Fdevices%2F{NAME}&et={ET}"
        f"&method={method}&sign={hand_quote(hand_sign(KEY_B64, ET, method, RES))}"
    )
    token = make_token(KEY_B64, PID, NAME, ET, method)
    assert token == expected
    sign_field = token.rsplit("&sign=", 1)[1]
    assert "%2B" in sign_field and "%2F" in sign_field and "%3D" in sign_field
    assert not set("+/=") & set(sign_field)


def test_make_token_literal() -> None:
    """One token spelled out in full, in case the helpers above and the module drift together."""
    assert make_token(KEY_B64, PID, NAME, ET, "sha256") == (
        "version=2018-10-31&res=products%2Fpid123%2Fdevices%2Fdev-1&et=1893456149"
        "&method=sha256&sign=ZhaM%2Fkk8TK%2FjxT0y%2BnAYOskPfj6BT0LPaskm0tMEys4%3D"
    )


def test_make_token_defaults_to_sha256() -> None:
    """The API's default method is sha256; the function must agree with it."""
    assert make_token(KEY_B64, PID, NAME, ET) == make_token(KEY_B64, PID, NAME, ET, "sha256")
    assert "&method=sha256&" in make_token(KEY_B64, PID, NAME, ET)


@pytest.mark.parametrize("method", METHODS)
def test_parse_token_round_trip(method: str) -> None:
    """Parsing undoes the URL-encoding of every field."""
    assert parse_token(make_token(KEY_B64, PID, NAME, ET, method)) == Token(
        VERSION, RES, ET, method, GOLDEN[method]
    )


@pytest.mark.parametrize("method", METHODS)
def test_verify_accepts_a_good_token_until_its_last_second(method: str) -> None:
    """`et` is the first second the token is no longer valid, so `et - 1` still admits."""
    token = parse_token(make_token(KEY_B64, PID, NAME, ET, method))
    for now in (0, NOW, ET - 1):
        verify_token(token, key_b64=KEY_B64, product_id=PID, device_name=NAME, now_s=now)


def test_field_order_is_free() -> None:
    """OneNET does not fix the order of the fields; neither does the parser."""
    fields = token_text().split("&")
    for reordered in (
        fields[::-1],
        fields[1:] + fields[:1],
        [fields[2], fields[0], *fields[3:], fields[1]],
    ):
        password = "&".join(reordered)
        assert parse_token(password) == Token(VERSION, RES, ET, "sha256", GOLDEN["sha256"])


# ---------------------------------------------------------------- what is not URL-encoded


def test_raw_base64_sign_is_accepted() -> None:
    """Decided behaviour: a sign left raw (`+`, `/`, `=` unencoded) still verifies.

    `parse_token` uses `unquote`, not `unquote_plus`, so `+` stays `+` (it is
    not read as a space), `/` has no meaning in the password, and only the
    first `=` of a field separates key from value. Several device SDKs forget
    to encode the sign, so accepting it costs nothing and helps them.
    """
    raw = GOLDEN["sha256"]
    assert {"+", "/", "="} <= set(raw)
    password = token_text(sign=raw)
    assert parse_token(password).sign == raw
    verify_token(
        parse_token(password), key_b64=KEY_B64, product_id=PID, device_name=NAME, now_s=NOW
    )


def test_unencoded_res_and_lowercase_escapes_are_accepted() -> None:
    """`res` may arrive unencoded, and `%2f`/`%2b`/`%3d` mean the same as upper-case escapes."""
    lower_sign = hand_quote(GOLDEN["sha256"]).replace("%2B", "%2b").replace("%2F", "%2f")
    lower_sign = lower_sign.replace("%3D", "%3d")
    for res, sign in ((RES, None), ("products%2fpid123%2fdevices%2fdev-1", lower_sign)):
        token = parse_token(token_text(res=res, sign=sign))
        assert token.res == RES
        assert token.sign == GOLDEN["sha256"]
        verify_token(token, key_b64=KEY_B64, product_id=PID, device_name=NAME, now_s=NOW)


def test_form_decoded_plus_is_not_repaired() -> None:
    """A client that turned `+` into a space signed nothing valid: refused, not guessed at."""
    spoiled = GOLDEN["sha256"].replace("+", " ")
    assert "signature is wrong" in refusal(token_text(sign=spoiled))


# ---------------------------------------------------------------- refusals


def test_wrong_key_is_refused() -> None:
    """A token signed with another device's key must not open this device."""
    other_key = base64.b64encode(bytes(range(1, 33))).decode()
    assert "signature is wrong" in refusal(make_token(other_key, PID, NAME, ET))


@pytest.mark.parametrize("now", [ET, ET + 1, ET + 86_400])
def test_expired_token_is_refused(now: int) -> None:
    """`et` is not after `now` (equal included) means expired."""
    assert "expired" in refusal(make_token(KEY_B64, PID, NAME, ET), now=now)


@pytest.mark.parametrize(
    ("token_pid", "token_name"),
    [
        (PID, "dev-2"),  # another device of the same product
        ("pid999", NAME),  # same name in another product
        (PID, "dev-1x"),  # a longer name that starts with ours
        (PID, "dev-"),  # a prefix of ours
        ("PID123", NAME),  # ids are case-sensitive
    ],
)
def test_token_for_another_resource_is_refused(token_pid: str, token_name: str) -> None:
    """A correctly signed token for another res never admits this device."""
    password = make_token(KEY_B64, token_pid, token_name, ET)
    assert "another resource" in refusal(password)


def test_resource_check_holds_even_with_that_devices_key() -> None:
    """Even the right key for the named res does not admit a different device."""
    password = make_token(KEY_B64, PID, "dev-2", ET)
    verify_token(
        parse_token(password), key_b64=KEY_B64, product_id=PID, device_name="dev-2", now_s=NOW
    )
    assert "another resource" in refusal(password, name=NAME)


def admit(password: str, name: str | None = NAME) -> None:
    """Verify `password` for device `name` (None: the product itself) of a product
    whose access key is PRODUCT_KEY; raises Unauthorized if it is refused."""
    verify_token(
        parse_token(password),
        key_b64=KEY_B64,
        product_id=PID,
        device_name=name,
        now_s=NOW,
        product_key=PRODUCT_KEY,
    )


def test_a_product_level_token_is_signed_with_the_product_key() -> None:
    """`res` = products/{pid} admits any device of the product, and the product
    itself (registration), only under the product's access key."""
    password = make_token(PRODUCT_KEY, PID, None, ET)
    for name in (NAME, "dev-2", None):
        admit(password, name)
    assert "signature is wrong" in refusal(password)  # no product key known
    with pytest.raises(Unauthorized, match="signature is wrong"):
        admit(make_token(KEY_B64, PID, None, ET))  # the device key signs no product token


def test_a_device_token_may_be_signed_with_either_key() -> None:
    for key in (KEY_B64, PRODUCT_KEY):
        admit(make_token(key, PID, NAME, ET, version="2022-05-01"))
    # Asked for the product alone, a device's token names another resource.
    with pytest.raises(Unauthorized, match="another resource"):
        admit(make_token(PRODUCT_KEY, PID, NAME, ET), None)


@pytest.mark.parametrize("version", ["2018-10-30", "2018-10-31 ", "", "2019-01-01"])
def test_unknown_version_is_refused(version: str) -> None:
    """Only version 2018-10-31 is defined; even correctly signed, another is refused."""
    sign = hand_quote(hand_sign(KEY_B64, ET, "sha256", RES, version))
    message = refusal(token_text(version=hand_quote(version), sign=sign))
    assert "unknown OneNET token version" in message


@pytest.mark.parametrize("method", ["sha512", "SHA256", "md4", "", "sha-256"])
def test_unknown_method_is_refused(method: str) -> None:
    """Only md5, sha1 and sha256, spelled in lower case, are methods."""
    assert "unknown OneNET token method" in refusal(token_text(method=method, sign="x"))


@pytest.mark.parametrize("et", [ET + 1, ET - 1, ET + 10 * 365 * 86_400])
def test_tampered_expiry_is_refused(et: int) -> None:
    """Moving `et` without re-signing breaks the signature."""
    assert "signature is wrong" in refusal(token_text(et=str(et)))


@pytest.mark.parametrize(
    "et",
    [
        f"+{ET}",  # int() would take these four as ET itself ...
        f"0{ET}",
        f"{ET:_}",
        f" {ET}",
        "".join(chr(0x0660 + int(c)) for c in str(ET)),  # ... and Arabic-Indic digits
        f"{ET}.0",
        "1e10",
        "abc",
        "",
        "-1",
    ],
)
def test_expiry_must_be_plain_decimal(et: str) -> None:
    """The signature covers `str(et)`; another spelling of the same number must not verify.

    (Bug fixed: `int()` accepted `+`, leading zeros, `_` and non-ASCII digits,
    giving every token unsigned variants.)
    """
    assert "expiry is not a plain decimal number" in refusal(token_text(et=et))


def test_expiry_too_long_for_int_is_refused() -> None:
    """Python refuses to parse more than 4300 digits; that must stay an Unauthorized."""
    assert "expiry is not a number" in refusal(token_text(et="9" * 5000))


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("", "malformed"),
        ("garbage", "malformed"),
        ("\x00\xff&&&", "malformed"),
        (token_text() + "&", "malformed"),  # empty trailing field
        (token_text() + "&sign=x", "malformed"),  # duplicated field
        (token_text() + "&version=2018-10-31", "malformed"),
        (token_text() + "&extra=1", "malformed"),  # unknown field
        (token_text().replace("method=", "method"), "malformed"),  # no '='
        (token_text().replace("version=", "Version="), "malformed"),  # keys are case-sensitive
        (token_text().replace("&sign=" + hand_quote(GOLDEN["sha256"]), ""), "lacks sign"),
        ("version=2018-10-31&res=x&sign=y", "lacks et, method"),
        ("sign=", "lacks et, method, res, version"),
    ],
)
def test_malformed_token_is_refused(password: str, reason: str) -> None:
    """Every malformed password is an Unauthorized with a reason, never another exception."""
    assert reason in refusal(password)


def test_empty_sign_is_refused() -> None:
    """An empty sign must not compare equal to anything."""
    assert "signature is wrong" in refusal(token_text(sign=""))


# ---------------------------------------------------------------- looks_like_token


@pytest.mark.parametrize("method", METHODS)
def test_tokens_look_like_tokens(method: str) -> None:
    """The gateway routes a password by this test; a token must take the token path."""
    assert looks_like_token(make_token(KEY_B64, PID, NAME, ET, method))
    assert looks_like_token(token_text(sign=GOLDEN[method], method=method))


def test_reordered_tokens_look_like_tokens() -> None:
    """Every field order `parse_token` accepts must also be recognised as a token.

    (Bug fixed: a token starting with `res=` or `sign=` was sent down the
    ThingsPanel password path and refused as a wrong password.)
    """
    fields = token_text().split("&")
    for i in range(len(fields)):
        assert looks_like_token("&".join(fields[i:] + fields[:i]))


def test_issued_passwords_do_not_look_like_tokens() -> None:
    """ThingsPanel passwords (`secrets.token_urlsafe(24)`) must never take the token path."""
    for _ in range(200):
        assert not looks_like_token(secrets.token_urlsafe(24))
    for password in ("", "version", "res", "hunter2", "x" * 32):
        assert not looks_like_token(password)


@given(
    st.text(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", min_size=32, max_size=32
    )
)
def test_any_urlsafe_password_is_not_a_token(password: str) -> None:
    """Whatever the random draw, a URL-safe password holds no `&` or `=`, so it is no token."""
    assert not looks_like_token(password)


# ---------------------------------------------------------------- properties

keys = st.binary(min_size=32, max_size=32).map(lambda b: base64.b64encode(b).decode())
identifiers = st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True)


@settings(max_examples=150)
@given(
    key=keys,
    pid=identifiers,
    name=identifiers,
    method=st.sampled_from(METHODS),
    now=st.integers(0, 2**33),
    lifetime=st.integers(1, 10 * 365 * 86_400),
    replacement=st.sampled_from(B64_ALPHABET + "="),
)
def test_any_fresh_token_verifies_and_any_flipped_sign_does_not(
    key: str, pid: str, name: str, method: str, now: int, lifetime: int, replacement: str
) -> None:
    """make → parse → verify admits the device; one changed sign character never does."""
    password = make_token(key, pid, name, now + lifetime, method)
    assert looks_like_token(password)
    token = parse_token(password)
    assert token.sign == hand_sign(key, now + lifetime, method, f"products/{pid}/devices/{name}")
    verify_token(token, key_b64=key, product_id=pid, device_name=name, now_s=now)
    for i, original in enumerate(token.sign):
        flipped_char = replacement if replacement != original else ("A" if original != "A" else "B")
        flipped = token.sign[:i] + flipped_char + token.sign[i + 1 :]
        with pytest.raises(Unauthorized, match="signature is wrong"):
            verify_token(
                dataclasses.replace(token, sign=flipped),
                key_b64=key,
                product_id=pid,
                device_name=name,
                now_s=now,
            )


# ---------------------------------------------------------------- the fast paths

_FIELD_TEXT = st.text(st.sampled_from("&=%resignvio2F3DC3A9zZ+/ xé"), max_size=40)


def _looks_by_splitting(password: str) -> bool:
    """The rule as first written: the keys of the `&`-separated `key=value` parts."""
    keys = {key for key, sep, _ in (part.partition("=") for part in password.split("&")) if sep}
    return "version" in keys or {"res", "sign"} <= keys


@given(_FIELD_TEXT)
def test_looks_like_token_is_the_splitting_rule(password: str) -> None:
    """The text search finds exactly the keys that splitting the password would."""
    assert looks_like_token(password) == _looks_by_splitting(password)


@given(st.lists(_FIELD_TEXT | st.text(max_size=12), min_size=5, max_size=5))
def test_parsing_decodes_as_unquote_does(values: list[str]) -> None:
    """Percent escapes of ASCII are decoded by the fast path, anything else by
    `unquote`: the token is the same either way (values may hold any escape,
    broken ones, and non-ASCII text)."""
    from urllib.parse import unquote

    values = [v.replace("&", "").replace("=", "") for v in values]
    values[2] = "1"  # et: a plain number, or the parse stops there
    fields = ("version", "res", "et", "method", "sign")
    token = parse_token("&".join(f"{k}={v}" for k, v in zip(fields, values, strict=True)))
    assert (token.version, token.res, token.method, token.sign) == tuple(
        unquote(values[i]) for i in (0, 1, 3, 4)
    )


def test_an_escaped_utf8_character_is_decoded() -> None:
    """`%C3%A9` is one character (é), as `unquote` reads it, not two."""
    assert parse_token(token_text(sign="%C3%A9")).sign == "é"
