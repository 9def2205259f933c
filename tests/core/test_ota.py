"""The OTA rules of core/ota.py: the device state machine, step meanings, download
tokens (against a fake clock), the rollout pace and the inform payload."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from thingshub.core import ota
from thingshub.core.errors import Forbidden, InvalidRequest
from thingshub.core.messages import OtaInform
from thingshub.core.model import Firmware, OtaDevice
from thingshub.core.ota import FAILURES, Progress
from thingshub.dialects.thingspanel.ota import inform_body
from thingshub.dialects.thingspanel.reports import ReportError, parse_progress
from thingshub.services.clock import FakeClock

T0 = 1_700_000_000_000
SECRET = b"s" * 32


def informed(now: int = T0) -> OtaDevice:
    return ota.informed(ota.queued("t1", "d1", now - 10), now)


# ---------------------------------------------------------------- the state machine


def test_a_device_starts_queued_and_is_informed_once() -> None:
    d = ota.queued("t1", "d1", T0)
    assert (d.state, d.step, d.desc, d.informed_at, d.finished_at) == (
        "QUEUED",
        None,
        "",
        None,
        None,
    )
    first = ota.informed(d, T0 + 5)
    assert first.state == "INFORMED" and first.informed_at == T0 + 5
    again = ota.informed(first, T0 + 99)  # informed again: the first inform counts
    assert again.informed_at == T0 + 5 and again.updated_at == T0 + 99
    with pytest.raises(ValueError):
        ota.informed(ota.progressed(first, Progress(5, "", "MCU"), T0), T0)


@pytest.mark.parametrize("step", [1, 37, 99])
def test_steps_1_to_99_are_in_progress(step: int) -> None:
    d = ota.progressed(informed(), Progress(step, "downloading", "MCU"), T0 + 1)
    assert (d.state, d.step, d.desc, d.detail) == (
        "IN_PROGRESS",
        step,
        "downloading",
        "downloading",
    )
    assert d.finished_at is None and d.state not in ota.FINAL


def test_step_100_succeeds() -> None:
    d = ota.progressed(informed(), Progress(100, "", "MCU"), T0 + 7)
    assert (d.state, d.step, d.desc, d.finished_at) == (
        "SUCCEEDED",
        100,
        "upgrade succeeded",
        T0 + 7,
    )
    assert d.detail is None


@pytest.mark.parametrize(
    ("step", "meaning"),
    [
        (-1, "upgrade failed"),
        (-2, "download failed"),
        (-3, "verification failed"),
        (-4, "flash failed"),
    ],
)
def test_negative_steps_fail_with_their_meaning(step: int, meaning: str) -> None:
    assert FAILURES[step] == meaning
    d = ota.progressed(informed(), Progress(step, "bad CRC", "MCU"), T0 + 3)
    assert (d.state, d.step, d.desc, d.detail) == ("FAILED", step, meaning, "bad CRC")
    assert d.finished_at == T0 + 3 and d.state in ota.FINAL


def test_progress_needs_an_informed_device() -> None:
    for state in ("QUEUED", "SUCCEEDED", "FAILED", "CANCELED", "TIMED_OUT"):
        d = ota.queued("t1", "d1", T0)
        d = d if state == "QUEUED" else ota.ended(informed(), "CANCELED", "x", T0)
        with pytest.raises(ValueError):
            ota.progressed(d, Progress(10, "", "MCU"), T0)


def test_steps_may_go_back_while_in_progress() -> None:
    d = ota.progressed(informed(), Progress(80, "", "MCU"), T0)
    d = ota.progressed(d, Progress(10, "retrying", "MCU"), T0 + 1)
    assert d.state == "IN_PROGRESS" and d.step == 10


def test_final_states_never_change() -> None:
    done = ota.progressed(informed(), Progress(100, "", "MCU"), T0)
    assert ota.ended(done, "CANCELED", ota.CANCELED_DESC, T0 + 1) is done
    assert ota.timed_out(done, 10, T0 + 99_999) is done
    canceled = ota.ended(informed(), "CANCELED", ota.CANCELED_DESC, T0 + 1)
    assert (canceled.state, canceled.desc, canceled.finished_at) == (
        "CANCELED",
        "the task was canceled",
        T0 + 1,
    )
    with pytest.raises(ValueError):
        ota.ended(informed(), "SUCCEEDED", "", T0)


def test_timeouts_count_from_the_first_inform() -> None:
    d = informed(T0)
    assert ota.time_left_ms(d, 60, T0 + 59_999) == 1
    assert ota.time_left_ms(d, 60, T0 + 60_000) == 0
    d = ota.progressed(d, Progress(50, "", "MCU"), T0 + 50_000)  # progress does not reset it
    assert ota.time_left_ms(d, 60, T0 + 50_000) == 10_000
    assert ota.time_left_ms(d, 60, T0 + 10**9) == 0  # a clock set forward: none left
    assert ota.time_left_ms(d, 60, T0 - 10**9) == 60_000  # set back: never more than all
    timed = ota.timed_out(d, 60, T0 + 60_000)
    assert timed.state == "TIMED_OUT" and timed.step == 50 and "60 s" in timed.desc
    assert ota.time_left_ms(timed, 60, T0) is None  # final
    assert ota.time_left_ms(ota.queued("t", "d", T0), 1, T0 + 10**9) is None  # not informed yet


def test_task_status_and_counts() -> None:
    running = [informed(), ota.progressed(informed(), Progress(100, "", "M"), T0)]
    assert ota.task_status_after(running) == "RUNNING"
    finished = [running[1], ota.ended(informed(), "TIMED_OUT", "", T0)]
    assert ota.task_status_after(finished) == "COMPLETED"
    counts = ota.counts(running)
    assert counts == {
        "QUEUED": 0,
        "INFORMED": 1,
        "IN_PROGRESS": 0,
        "SUCCEEDED": 1,
        "FAILED": 0,
        "CANCELED": 0,
        "TIMED_OUT": 0,
    }


# ---------------------------------------------------------------- refused reports


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"step": "0", "module": "M"}', "bad_step"),
        (b'{"step": "101", "module": "M"}', "bad_step"),
        (b'{"step": "-5", "module": "M"}', "bad_step"),
        (b'{"step": "x", "module": "M"}', "bad_step"),
        (b'{"module": "M"}', "bad_step"),
        (b'{"step": "5"}', "invalid_report"),
        (b"[1]", "invalid_report"),
        (b"\xff", "invalid_report"),
        (b'{"step": "5", "module": "M", "desc": 3}', "invalid_report"),
    ],
)
def test_refused_reports_are_classified(payload: bytes, reason: str) -> None:
    with pytest.raises(ReportError) as caught:
        parse_progress(payload)
    assert ota.ignore_reason(caught.value) == reason
    assert reason in ota.IGNORE_REASONS


# ---------------------------------------------------------------- download tokens


def test_a_token_is_good_for_its_task_device_and_file_until_it_expires() -> None:
    clock = FakeClock(T0)
    expires = ota.token_expiry(clock.now_ms(), 600, 86_400)
    assert expires == T0 // 1000 + 601
    token = ota.sign_token(SECRET, "t1", "d1", "f1", expires)
    ota.verify_token(SECRET, token, "t1", "d1", "f1", clock.now_ms())
    clock.advance(600_000)
    ota.verify_token(SECRET, token, "t1", "d1", "f1", clock.now_ms())
    clock.advance(1000)
    with pytest.raises(Forbidden, match="expired"):
        ota.verify_token(SECRET, token, "t1", "d1", "f1", clock.now_ms())


def test_the_token_lifetime_is_capped() -> None:
    assert ota.token_expiry(T0, 7 * 86_400, 3600) == T0 // 1000 + 3601


@pytest.mark.parametrize(
    ("task", "device", "firmware"),
    [("t2", "d1", "f1"), ("t1", "d2", "f1"), ("t1", "d1", "f2")],
)
def test_a_token_is_bound_to_what_it_was_made_for(task: str, device: str, firmware: str) -> None:
    token = ota.sign_token(SECRET, "t1", "d1", "f1", T0 // 1000 + 60)
    with pytest.raises(Forbidden, match="not valid"):
        ota.verify_token(SECRET, token, task, device, firmware, T0)


def test_forged_tokens_are_refused() -> None:
    expires = T0 // 1000 + 60
    token = ota.sign_token(SECRET, "t1", "d1", "f1", expires)
    stamp, mac = token.split(".")
    assert len(mac) == 64 and mac == mac.lower()
    other_secret = ota.sign_token(b"x" * 32, "t1", "d1", "f1", expires)
    longer = f"{int(stamp) + 3600}.{mac}"
    flipped = f"{stamp}.{mac[:-1]}{'0' if mac[-1] != '0' else '1'}"
    for bad in (other_secret, longer, flipped, f"{stamp}.", f".{mac}", mac, "x.y", "", None):
        with pytest.raises(Forbidden):
            ota.verify_token(SECRET, bad, "t1", "d1", "f1", T0)
    # The message is what the documentation says: HMAC-SHA256 over the four values.
    message = f"ota-download\nt1\nd1\nf1\n{expires}".encode()
    assert mac == hmac.new(SECRET, message, hashlib.sha256).hexdigest()


# ---------------------------------------------------------------- rollout pace


def test_no_rollout_limit() -> None:
    r = ota.Rollout(None, T0)
    for _ in range(1000):
        assert r.available(T0)
        r.take(T0)


def test_rollout_of_one_a_minute() -> None:
    clock = FakeClock(T0)
    r = ota.Rollout(1, clock.now_ms())
    assert r.available(clock.now_ms())  # the first device goes at once
    r.take(clock.now_ms())
    clock.advance(59_999)
    assert not r.available(clock.now_ms())
    clock.advance(1)
    assert r.available(clock.now_ms())
    r.take(clock.now_ms())
    clock.advance(10 * 60_000)  # a quiet while does not pile up more than one
    r.take(clock.now_ms())
    assert not r.available(clock.now_ms())


def test_rollout_rate_over_a_minute() -> None:
    clock = FakeClock(T0)
    r = ota.Rollout(600, clock.now_ms())  # 10 a second, at most one second's worth at once
    informed = 0
    for _ in range(60_000 // 20):  # a loop ticking every 20 ms for a minute
        while r.available(clock.now_ms()):
            r.take(clock.now_ms())
            informed += 1
        clock.advance(20)
    assert 595 <= informed <= 601
    clock.advance(60_000)
    burst = 0
    while r.available(clock.now_ms()):
        r.take(clock.now_ms())
        burst += 1
    assert burst == 10


# ---------------------------------------------------------------- the inform, checks


def test_the_inform_payload() -> None:
    fw = Firmware("f1", "p1", "n", "1.2.3", "MCU", 42, "a" * 32, "b" * 64, T0, {"k": [1]})
    body = inform_body(OtaInform("t1", fw, "SHA256", "http://h/ota/download/t1/d1?token=x"))
    assert body == {
        "id": "t1",
        "code": 200,
        "params": {
            "version": "1.2.3",
            "size": 42,
            "url": "http://h/ota/download/t1/d1?token=x",
            "signMethod": "SHA256",
            "sign": "b" * 64,
            "module": "MCU",
            "extData": {"k": [1]},
        },
    }
    assert inform_body(OtaInform("t1", fw, "MD5", "u"))["params"]["sign"] == "a" * 32


def test_checks_of_what_applications_send() -> None:
    assert ota.check_sign_method(None) == "SHA256"
    assert ota.check_sign_method("md5") == "MD5"
    assert ota.check_rollout(None) is None and ota.check_rollout(5) == 5
    assert ota.check_device_timeout(None) == 3600
    assert ota.check_targets(["a", "b", "a"], None) == ["a", "b"]
    assert ota.check_targets(None, True) is None
    assert ota.check_ext_data(None, 0) == {}
    for bad in (
        lambda: ota.check_sign_method("SHA1"),
        lambda: ota.check_rollout(0),
        lambda: ota.check_rollout(True),
        lambda: ota.check_rollout(1.5),
        lambda: ota.check_device_timeout(0),
        lambda: ota.check_device_timeout(8 * 86_400),
        lambda: ota.check_targets(None, None),
        lambda: ota.check_targets([], None),
        lambda: ota.check_targets(["a"], True),
        lambda: ota.check_targets(["a/b"], None),
        lambda: ota.check_targets("a", None),
        lambda: ota.check_version(""),
        lambda: ota.check_version("1 0"),
        lambda: ota.check_version("v" * 65),
        lambda: ota.check_module("a+b"),
        lambda: ota.check_ext_data([1], 3),
        lambda: ota.check_ext_data({}, ota.MAX_EXT_DATA + 1),
        lambda: ota.check_firmware_name("a\nb"),
    ):
        with pytest.raises(InvalidRequest):
            bad()


def test_what_applications_send_comes_back_checked() -> None:
    assert ota.check_version("2.0.1") == "2.0.1"
    assert ota.check_version("v" * 64) == "v" * 64
    assert ota.check_module("MCU") == "MCU"
    assert ota.check_firmware_name(None) is None
    assert ota.check_firmware_name("") is None  # no name: the service makes one
    assert ota.check_firmware_name("MCU firmware 2.0.1") == "MCU firmware 2.0.1"
    assert ota.check_ext_data({"mandatory": True}, 18) == {"mandatory": True}
    assert ota.check_ext_data({}, ota.MAX_EXT_DATA) == {}
    assert ota.check_device_timeout(1) == 1
    assert ota.check_device_timeout(7 * 86_400) == 7 * 86_400
    assert ota.check_rollout(ota.MAX_ROLLOUT_PER_MINUTE) == ota.MAX_ROLLOUT_PER_MINUTE
    assert ota.check_targets(["a"], False) == ["a"]
    many = [f"d{i}" for i in range(ota.MAX_TASK_DEVICES)]
    assert ota.check_targets(many, None) == many


@pytest.mark.parametrize(
    ("devices", "everything", "words"),
    [
        (None, "yes", "all must be true or false"),
        (["a"], 1, "all must be true or false"),  # 1 == True, but 1 is not true in JSON
        (None, 1.0, "all must be true or false"),
        (["a"], 0, "all must be true or false"),
        ([f"d{i}" for i in range(ota.MAX_TASK_DEVICES + 1)], None, "at most 100000 devices"),
        (["a"], True, "not both"),
        (None, False, "say which devices"),
    ],
)
def test_a_tasks_targets_are_devices_or_all(
    devices: object, everything: object, words: str
) -> None:
    with pytest.raises(InvalidRequest, match=words):
        ota.check_targets(devices, everything)


def test_ext_data_numbers_stay_within_what_every_reader_keeps_exact() -> None:
    safe = {"a": [2**53 - 1, -(2**53 - 1), 1.5, True, None, "x" * 10, {"b": [0]}]}
    assert ota.check_ext_data(safe, 100) == safe
    for unsafe in ({"a": 2**53}, {"a": [{"b": -(2**53)}]}, {"a": 1e300}):
        with pytest.raises(InvalidRequest, match="ext_data numbers must be within"):
            ota.check_ext_data(unsafe, 20)


def test_a_rollout_bucket_never_goes_back_in_time() -> None:
    """A clock read out of order (an earlier time) neither refills nor moves the bucket."""
    r = ota.Rollout(60, T0)  # one a second
    r.take(T0)
    assert not r.available(T0 - 5_000)
    assert not r.available(T0 + 999)
    assert r.available(T0 + 1_000)


def test_ids_sort_by_creation() -> None:
    ids = ota.IdClock()
    made = [ota.new_id(ids.next(T0)) for _ in range(50)]
    assert made == sorted(made) and len(set(made)) == 50
    assert ota.new_id(ids.next(T0 + 10**6)) > made[-1]


@pytest.mark.parametrize(
    ("step", "succeeded", "failed"),
    [
        (100, True, False),
        (99, False, False),
        (1, False, False),
        (-1, False, True),
        (-4, False, True),
    ],
)
def test_a_progress_step_says_whether_the_upgrade_ended(
    step: int, succeeded: bool, failed: bool
) -> None:
    progress = Progress(step, "", "MCU")
    assert (progress.succeeded, progress.failed) == (succeeded, failed)
