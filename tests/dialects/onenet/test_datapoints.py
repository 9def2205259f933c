"""OneNET's legacy data points (dialects/onenet/datapoints.py and the dialect's
`dp/post/json` topics), with the payloads of field-protocols.md §5.3: what a post
reads as, every refusal (err_code 98 "Illegal Data", the id when readable), and
the answers on `accepted` and `rejected`."""

from __future__ import annotations

import json
from typing import Any

import pytest

from thingshub.core.errors import InvalidRequest
from thingshub.core.messages import DataPoints, DataPointsAck, DataPointsRefused, DeviceRef
from thingshub.core.model import Point
from thingshub.dialects.onenet import OneNet, datapoints

NOW = 1_700_000_000_123
T = 1_700_000_000  # Unix seconds
REF = DeviceRef("p1", "d1", "n1")
OWN = "$sys/p1/d1/"
ONENET = OneNet()


def encoded(body: Any) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


@pytest.mark.parametrize(
    ("body", "post_id", "points"),
    [
        (
            {"id": 123, "dp": {"temperatrue": [{"v": 30, "t": T}], "power": [{"v": 4.5}]}},
            123,
            [Point("temperatrue", T * 1000, 30), Point("power", NOW, 4.5)],
        ),
        (
            {"id": 1, "dp": {"s": [{"v": "on", "t": 0}, {"v": {"a": [1]}, "t": 1.5}]}},
            1,
            [Point("s", 0, "on"), Point("s", 1500, {"a": [1]})],
        ),
        (
            {"id": 2**31 - 1, "dp": {"k" * 128: [{"v": True}]}},
            2**31 - 1,
            [Point("k" * 128, NOW, True)],
        ),
        (
            {"id": 5, "dp": {"n": [{"v": i} for i in range(10_000)]}},
            5,
            [Point("n", NOW, i) for i in range(10_000)],
        ),
    ],
)
def test_a_post_reads_as_points(body: Any, post_id: int, points: list[Point]) -> None:
    assert datapoints.parse(encoded(body), NOW) == (post_id, points)
    decoded = ONENET.decode(REF, OWN + "dp/post/json", encoded(body), NOW)
    assert decoded == DataPoints(post_id, points, NOW)


@pytest.mark.parametrize(
    ("body", "post_id", "detail"),
    [
        (b"\xff", -1, "the payload is not UTF-8 JSON"),
        (b"{", -1, "the payload is not UTF-8 JSON"),
        ([1], -1, "the payload must be a JSON object {id, dp}"),
        ({"dp": {"s": [{"v": 1}]}}, -1, "id must be an integer from 0 to 2147483647"),
        ({"id": -1, "dp": {}}, -1, "id must be an integer from 0 to 2147483647"),
        ({"id": 2**31, "dp": {}}, -1, "id must be an integer from 0 to 2147483647"),
        ({"id": "7", "dp": {}}, -1, "id must be an integer from 0 to 2147483647"),
        ({"id": True, "dp": {}}, -1, "id must be an integer from 0 to 2147483647"),
        ({"id": 7}, 7, "dp must be an object of streams"),
        ({"id": 7, "dp": {}}, 7, "dp must be an object of streams"),
        ({"id": 7, "dp": [{"s": 1}]}, 7, "dp must be an object of streams"),
        ({"id": 7, "dp": {"": [{"v": 1}]}}, 7, "stream "),
        ({"id": 7, "dp": {"k" * 129: [{"v": 1}]}}, 7, "stream "),
        ({"id": 7, "dp": {"s": []}}, 7, "s: an array of {v, t?} is expected"),
        ({"id": 7, "dp": {"s": {"v": 1}}}, 7, "s: an array of {v, t?} is expected"),
        ({"id": 7, "dp": {"s": [{"v": 1}, 2]}}, 7, "s[1]: a point is an object holding v"),
        ({"id": 7, "dp": {"s": [{"t": T}]}}, 7, "s[0]: a point is an object holding v"),
        ({"id": 7, "dp": {"s": [{"v": None}]}}, 7, "s[0]: "),
        ({"id": 7, "dp": {"s": [{"v": 2**63}]}}, 7, "s[0]: "),
        ({"id": 7, "dp": {"s": [{"v": 1, "t": -1}]}}, 7, "s[0]: t must be Unix seconds"),
        ({"id": 7, "dp": {"s": [{"v": 1, "t": 2**40}]}}, 7, "s[0]: t must be Unix seconds"),
        ({"id": 7, "dp": {"s": [{"v": 1, "t": "1"}]}}, 7, "s[0]: t must be Unix seconds"),
        ({"id": 7, "dp": {"s": [{"v": 1, "t": True}]}}, 7, "s[0]: t must be Unix seconds"),
        ({"id": 7, "dp": {"s": [{"v": i} for i in range(10_001)]}}, 7, "more than 10000 points"),
    ],
)
def test_a_broken_post_is_illegal_data(body: Any, post_id: int, detail: str) -> None:
    with pytest.raises(datapoints.PointsError) as refused:
        datapoints.parse(encoded(body), NOW)
    error = refused.value
    assert (error.id, error.err_code, error.err_msg) == (post_id, 98, "Illegal Data")
    assert error.message.startswith(detail), error.message
    assert isinstance(error, InvalidRequest)
    decoded = ONENET.decode(REF, OWN + "dp/post/json", encoded(body), NOW)
    assert isinstance(decoded, DataPointsRefused) and decoded.request_id == post_id
    assert decoded.error.message == error.message


def test_the_answers_go_to_accepted_and_rejected() -> None:
    assert ONENET.encode(REF, DataPointsAck(123)) == [
        (OWN + "dp/post/json/accepted", b'{"id":123}')
    ]
    error = datapoints.PointsError("dp must be an object of streams", 9)
    assert ONENET.encode(REF, DataPointsAck(9, error)) == [
        (
            OWN + "dp/post/json/rejected",
            b'{"id":9,"err_code":98,"err_msg":"Illegal Data",'
            b'"detail":"dp must be an object of streams"}',
        )
    ]
    assert datapoints.rejected(-1, None) == {"id": -1, "err_code": 98, "err_msg": "Illegal Data"}
    assert datapoints.rejected(-1, "") == datapoints.rejected(-1, None)
    assert datapoints.accepted(5) == {"id": 5}
