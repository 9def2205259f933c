"""OneNET's dynamic registration as a device performs it: only the product's access key
in hand, it registers itself and gets its own key (docs/protocols.md section 7.2).

Rules:
- `POST {api_url}/mqtt/v1/devices/reg` with a product-level token (`res =
  products/{pid}`, signed with the access key, valid `token_ttl` seconds) and
  `{"name", "key"?, "desc"?}`; the answer's `data` is `{"device_id",
  "name", "pid", "key"}`. A device that exists already is returned as it
  is, so a device may register at every boot.
- Any answer but `code_no` "000000" raises `Rejected(code_no, message)`
  (403 "000002": the product does not allow registration).
- The access key never leaves the device: only the token is sent.
"""

from __future__ import annotations

import ssl
import time
from typing import Any

from thingshub.device.client import Rejected
from thingshub.dialects.onenet.token import make_token

PATH = "/mqtt/v1/devices/reg"


async def register(
    api_url: str,
    product_id: str,
    access_key: str,
    name: str,
    *,
    key: str | None = None,
    desc: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 10.0,
    token_ttl: int = 3600,
) -> dict[str, Any]:
    """Register the device `name` of `product_id`; its `data` (with its `key`)."""
    import httpx

    token = make_token(access_key, product_id, None, int(time.time()) + token_ttl)
    body: dict[str, Any] = {"name": name}
    if key is not None:
        body["key"] = key
    if desc is not None:
        body["desc"] = desc
    verify: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
    async with httpx.AsyncClient(timeout=timeout, verify=verify) as http:
        r = await http.post(api_url.rstrip("/") + PATH, json=body, headers={"Authorization": token})
    try:
        answer = r.json()
    except ValueError:
        raise Rejected(r.status_code, r.text[:200]) from None
    if answer.get("code_no") != "000000":
        raise Rejected(answer.get("code_no", r.status_code), str(answer.get("message", "")))
    return dict(answer["data"])
