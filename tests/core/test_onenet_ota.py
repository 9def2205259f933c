"""OneNET's OTA rules (core/onenet_ota.py): errnos, task types, versions, the
status a device entry shows, what a download and each step do to it, and
OneNET's own reading of `Range` (field-protocols §4.2)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from thingshub.core import onenet_ota as rules
from thingshub.core import ota
from thingshub.core.errors import Conflict, InvalidRequest, NotFound, ThingsHubError
from thingshub.core.model import OtaDevice

T0 = 1_700_000_000_000


def entry(state: str, step: int | None = None) -> OtaDevice:
    device = ota.queued("t1", "d1", T0 - 100)
    return replace(device, state=state, step=step, tid=7, protocol=rules.PROTOCOL)


def errno_of(call: object, kind: type[ThingsHubError]) -> int | str | None:
    """The errno a call raised, checking the error's kind and words."""
    assert callable(call)
    with pytest.raises(kind) as info:
        call()
    error = info.value
    assert isinstance(error.err_code, int)
    assert error.err_msg == rules.ERRNO[error.err_code] == error.message
    return error.err_code


# ---------------------------------------------------------------- words and parameters


def test_every_errno_has_its_words() -> None:
    error = rules.error(NotFound, rules.NO_TASK)
    assert isinstance(error, NotFound)
    assert (error.err_code, error.err_msg) == (11, "no upgrade task")
    assert rules.ERRNO[rules.OK] == "succ"
    assert sorted(rules.ERRNO) == [0, 1, 2, 4, 7, 11, 12, 17, 20, 21, 22, 24, 27]


@pytest.mark.parametrize(("module", "kind"), [("FOTA", 1), ("fota", 1), ("MCU", 2), ("", 2)])
def test_a_fota_package_is_type_1_any_other_type_2(module: str, kind: int) -> None:
    assert rules.task_type(module) == kind


def test_type_is_1_or_2() -> None:
    assert (rules.check_type("1"), rules.check_type("2")) == (1, 2)
    for bad in (None, "", "0", "3", " 1", "01"):
        assert errno_of(lambda b=bad: rules.check_type(b), InvalidRequest) == rules.BAD_PARAMS


def test_versions_are_1_to_20_safe_characters() -> None:
    for good in ("1", "1.2.3-rc_4", "V" * 20):
        assert rules.check_version(good) == good
    for bad in ("", "V" * 21, "1 2", "1/2", "版本", 5, None):
        assert errno_of(lambda b=bad: rules.check_version(b), InvalidRequest) == 27


# ---------------------------------------------------------------- status


@pytest.mark.parametrize(
    ("state", "step", "status"),
    [
        (ota.QUEUED, None, 1),
        (ota.INFORMED, None, 1),
        (ota.IN_PROGRESS, None, 2),
        (ota.IN_PROGRESS, 99, 2),
        (ota.IN_PROGRESS, 100, 3),
        (ota.IN_PROGRESS, 101, 3),
        (ota.SUCCEEDED, 201, 4),
        (ota.FAILED, 205, 5),
        (ota.TIMED_OUT, 50, 5),
        (ota.CANCELED, None, 6),
    ],
)
def test_status_of_each_state(state: str, step: int | None, status: int) -> None:
    device = entry(state, step)
    assert rules.status(device) == status
    assert rules.upgrading(device) == (status == 3)


def test_a_finished_part_answers_20_or_22_when_canceled() -> None:
    for state in (ota.SUCCEEDED, ota.FAILED, ota.TIMED_OUT):
        assert errno_of(lambda s=state: rules.check_final(entry(s)), Conflict) == 20
    assert errno_of(lambda: rules.check_final(entry(ota.CANCELED)), Conflict) == 22
    for state in (ota.QUEUED, ota.INFORMED, ota.IN_PROGRESS):
        rules.check_final(entry(state))  # no error


# ---------------------------------------------------------------- download


def test_a_download_starts_the_upgrade_of_an_informed_device() -> None:
    started = rules.downloading(entry(ota.INFORMED), T0)
    assert (started.state, started.desc, started.updated_at) == (
        ota.IN_PROGRESS,
        "downloading",
        T0,
    )
    assert (started.tid, started.protocol) == (7, "onenet")
    going = entry(ota.IN_PROGRESS, 40)
    assert rules.downloading(going, T0) is going  # unchanged, as many ranges as it likes


def test_a_download_before_the_notice_or_after_the_end_is_refused() -> None:
    assert errno_of(lambda: rules.downloading(entry(ota.QUEUED), T0), NotFound) == 11
    assert errno_of(lambda: rules.downloading(entry(ota.SUCCEEDED), T0), Conflict) == 20
    assert errno_of(lambda: rules.downloading(entry(ota.CANCELED), T0), Conflict) == 22


# ---------------------------------------------------------------- steps


@pytest.mark.parametrize(("step", "desc"), [(0, "downloading: 0%"), (37, "downloading: 37%")])
def test_progress_steps_are_in_progress(step: int, desc: str) -> None:
    for state in (ota.INFORMED, ota.IN_PROGRESS):
        after = rules.stepped(entry(state, 10), step, T0)
        assert (after.state, after.step, after.desc, after.finished_at) == (
            ota.IN_PROGRESS,
            step,
            desc,
            None,
        )


@pytest.mark.parametrize("step", [100, 101])
def test_100_or_101_means_downloaded_and_upgrading(step: int) -> None:
    after = rules.stepped(entry(ota.IN_PROGRESS, 60), step, T0)
    assert (after.state, after.step, after.desc) == (ota.IN_PROGRESS, step, "upgrading")
    assert rules.status(after) == 3


def test_201_succeeds() -> None:
    for before in (entry(ota.IN_PROGRESS, 100), entry(ota.INFORMED), entry(ota.IN_PROGRESS, 5)):
        after = rules.stepped(before, 201, T0)
        assert (after.state, after.step, after.desc) == (ota.SUCCEEDED, 201, ota.SUCCEEDED_DESC)
        assert after.finished_at == after.updated_at == T0


@pytest.mark.parametrize("step", sorted(rules.STEP_FAILURES))
def test_failure_steps_fail_with_their_meaning(step: int) -> None:
    before = entry(ota.IN_PROGRESS, 101 if step > 200 else 30)
    after = rules.stepped(before, step, T0)
    assert (after.state, after.step, after.desc, after.finished_at) == (
        ota.FAILED,
        step,
        rules.STEP_FAILURES[step],
        T0,
    )


@pytest.mark.parametrize("step", [-1, 108, 150, 200, 209, 300])
def test_unknown_steps_answer_24(step: int) -> None:
    assert (
        errno_of(lambda: rules.stepped(entry(ota.IN_PROGRESS, 5), step, T0), InvalidRequest) == 24
    )


def test_while_upgrading_only_201_to_208_are_taken() -> None:
    upgrading = entry(ota.IN_PROGRESS, 100)
    assert errno_of(lambda: rules.stepped(upgrading, 101, T0), Conflict) == 21
    for step in (0, 50, 100, 102, 107):
        assert errno_of(lambda s=step: rules.stepped(upgrading, s, T0), Conflict) == 17
    assert rules.stepped(upgrading, 208, T0).state == ota.FAILED


def test_a_step_before_the_notice_or_after_the_end_is_refused() -> None:
    assert errno_of(lambda: rules.stepped(entry(ota.QUEUED), 10, T0), Conflict) == 17
    assert errno_of(lambda: rules.stepped(entry(ota.SUCCEEDED, 201), 201, T0), Conflict) == 20
    assert errno_of(lambda: rules.stepped(entry(ota.CANCELED), 10, T0), Conflict) == 22
    # A final part answers 20/22 before the step is even read.
    assert errno_of(lambda: rules.stepped(entry(ota.FAILED), 999, T0), Conflict) == 20


# ---------------------------------------------------------------- Range


@pytest.mark.parametrize(
    ("header", "span"),
    [
        ("bytes=0-99", (0, 99)),
        ("0-99", (0, 99)),  # the SDK omits `bytes=`
        ("BYTES=10-19", (10, 19)),
        (" bytes= 10-19 ", (10, 19)),
        ("bytes=0010-0019", (10, 19)),  # leading zeros
        ("bytes=900-", (900, 999)),
        ("bytes=-100", (900, 999)),
        ("bytes=-1000", (0, 999)),
        ("bytes=-0", (0, 999)),  # n = 0: start = size, clamped to 0 as below
        ("bytes=500-5000", (500, 999)),  # end >= size -> size - 1
        ("bytes=1000-1005", (0, 999)),  # start >= size -> 0
        ("bytes=5000-", (0, 999)),
        ("bytes=50-10", (0, 10)),  # start > end -> start = 0
    ],
)
def test_range_by_onenets_rules(header: str, span: tuple[int, int]) -> None:
    assert rules.byte_range(header, 1000) == span


@pytest.mark.parametrize(
    "header", [None, "", "bytes=", "bytes=-", "-", "bytes=-1001", "bytes=a-b", "0-1,5-6", "x=0-1"]
)
def test_anything_else_is_the_whole_file(header: str | None) -> None:
    assert rules.byte_range(header, 1000) is None


def test_an_empty_file_is_always_whole() -> None:
    assert rules.byte_range("bytes=0-0", 0) is None
