"""OneNET's topics: everything of a device lies under `$sys/{pid}/{name}/`.

Rules:
- A device publishes only to its own device-to-platform topics and subscribes
  only to filters all of whose matches lie under its own prefix.
- Topic levels after the prefix name the function (`image/...`,
  `cmd/...`); ids in topics (command ids) are one level.
"""

from __future__ import annotations

from thingshub.core.topics import filter_within, topic_matches

ROOT = "$sys/"


def prefix(product_id: str, device_name: str) -> str:
    return f"{ROOT}{product_id}/{device_name}/"


#: Device-to-platform topics, relative to the device's prefix.
PUBLISH_PATTERNS = (
    "image/update",
    "image/get",
    "cmd/response/+",
    "dp/post/json",
    "ota/inform_reply",
)


def may_publish(product_id: str, device_name: str, topic: str) -> bool:
    if not topic.startswith(ROOT):
        return False  # another family's topic: no prefix built
    own = prefix(product_id, device_name)
    if not topic.startswith(own):
        return False
    rest = topic[len(own) :]
    if rest in {"image/update", "image/get"}:  # the hot path: no pattern matching
        return True
    return any(topic_matches(p, rest) for p in PUBLISH_PATTERNS)


def may_subscribe(product_id: str, device_name: str, topic_filter: str) -> bool:
    return filter_within(topic_filter, prefix(product_id, device_name) + "#")
