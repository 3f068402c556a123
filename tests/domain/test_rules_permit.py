"""R4 endorsement: windows, 29 February, late endorsements and the residence clock."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.domain.rules import (
    PermitState,
    add_months,
    add_years,
    anniversary,
    permit_status,
    window_opening,
)

D = date.fromisoformat
VALID, WINDOW, SUSPENDED = PermitState.VALID, PermitState.WINDOW, PermitState.SUSPENDED


@pytest.mark.parametrize(
    ("day", "months", "expected"),
    [
        ("2021-01-31", 1, "2021-02-28"),
        ("2024-01-31", 1, "2024-02-29"),
        ("2021-03-31", -1, "2021-02-28"),
        ("2024-03-30", -1, "2024-02-29"),
        ("2021-05-31", -1, "2021-04-30"),
        ("2022-01-15", -1, "2021-12-15"),
        ("2021-12-31", 1, "2022-01-31"),
        ("2020-02-29", 12, "2021-02-28"),
        ("2020-02-29", 48, "2024-02-29"),
        ("2023-08-31", 6, "2024-02-29"),
    ],
)
def test_add_months_clamps_to_month_end(day: str, months: int, expected: str) -> None:
    assert add_months(D(day), months) == D(expected)


def test_add_months_out_of_range_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="out of range"):
        add_years(date(9999, 6, 1), 1)


def test_anniversaries_of_29_february() -> None:
    issued = D("2020-02-29")
    got = [anniversary(issued, n) for n in range(1, 5)]
    assert got == [D("2021-02-28"), D("2022-02-28"), D("2023-02-28"), D("2024-02-29")]
    assert window_opening(D("2021-02-28")) == D("2021-01-28")
    assert window_opening(D("2024-02-29")) == D("2024-01-29")


# issued, endorsements, today, state, residence_since, due anniversary
TABLE = [
    # issue day; the day before the window; its first day; the anniversary; the day after
    ("2020-03-15", [], "2020-03-15", VALID, "2020-03-15", "2021-03-15"),
    ("2020-03-15", [], "2021-02-14", VALID, "2020-03-15", "2021-03-15"),
    ("2020-03-15", [], "2021-02-15", WINDOW, "2020-03-15", "2021-03-15"),
    ("2020-03-15", [], "2021-03-15", WINDOW, "2020-03-15", "2021-03-15"),
    ("2020-03-15", [], "2021-03-16", SUSPENDED, "2020-03-15", "2021-03-15"),
    # endorsed on the first day of the window, on the anniversary, a day early
    ("2020-03-15", ["2021-02-15"], "2021-03-16", VALID, "2020-03-15", "2022-03-15"),
    ("2020-03-15", ["2021-03-15"], "2021-03-16", VALID, "2020-03-15", "2022-03-15"),
    ("2020-03-15", ["2021-02-14"], "2021-03-16", SUSPENDED, "2020-03-15", "2021-03-15"),
    # late: restores that day and restarts residence; anniversaries stay on 15 March
    ("2020-03-15", ["2021-03-16"], "2021-03-16", VALID, "2021-03-16", "2022-03-15"),
    ("2020-03-15", ["2021-03-16"], "2022-02-15", WINDOW, "2021-03-16", "2022-03-15"),
    ("2020-03-15", ["2021-06-01"], "2022-03-16", SUSPENDED, "2021-06-01", "2022-03-15"),
    # late for 2021 and inside the 2022 window: covers both
    ("2020-03-15", ["2022-02-20"], "2022-03-16", VALID, "2022-02-20", "2023-03-15"),
    # late after several missed years
    ("2020-03-15", ["2023-07-01"], "2023-07-01", VALID, "2023-07-01", "2024-03-15"),
    # endorsement after today is not counted yet
    ("2020-03-15", ["2021-03-01"], "2021-02-20", WINDOW, "2020-03-15", "2021-03-15"),
    # month ends: anniversary 31 March opens on the last day of February
    ("2020-03-31", [], "2021-02-27", VALID, "2020-03-31", "2021-03-31"),
    ("2020-03-31", [], "2021-02-28", WINDOW, "2020-03-31", "2021-03-31"),
    ("2020-03-30", [], "2021-02-28", WINDOW, "2020-03-30", "2021-03-30"),
    (
        "2020-03-31",
        ["2021-03-01", "2022-03-01", "2023-03-01"],
        "2024-02-28",
        VALID,
        "2020-03-31",
        "2024-03-31",
    ),
    (
        "2020-03-31",
        ["2021-03-01", "2022-03-01", "2023-03-01"],
        "2024-02-29",
        WINDOW,
        "2020-03-31",
        "2024-03-31",
    ),
    ("2020-05-31", [], "2021-04-29", VALID, "2020-05-31", "2021-05-31"),
    ("2020-05-31", [], "2021-04-30", WINDOW, "2020-05-31", "2021-05-31"),
    ("2019-01-31", [], "2019-12-31", WINDOW, "2019-01-31", "2020-01-31"),
    ("2019-01-31", [], "2019-12-30", VALID, "2019-01-31", "2020-01-31"),
    # leap years: issued 29 Feb 2020
    ("2020-02-29", [], "2021-01-27", VALID, "2020-02-29", "2021-02-28"),
    ("2020-02-29", [], "2021-01-28", WINDOW, "2020-02-29", "2021-02-28"),
    ("2020-02-29", [], "2021-02-28", WINDOW, "2020-02-29", "2021-02-28"),
    ("2020-02-29", [], "2021-03-01", SUSPENDED, "2020-02-29", "2021-02-28"),
    ("2020-02-29", ["2021-02-28"], "2021-03-01", VALID, "2020-02-29", "2022-02-28"),
    (
        "2020-02-29",
        ["2021-02-01", "2022-02-01", "2023-02-28"],
        "2024-02-29",
        WINDOW,
        "2020-02-29",
        "2024-02-29",
    ),
    (
        "2020-02-29",
        ["2021-02-01", "2022-02-01", "2023-02-28"],
        "2024-03-01",
        SUSPENDED,
        "2020-02-29",
        "2024-02-29",
    ),
    (
        "2020-02-29",
        ["2021-02-01", "2022-02-01", "2023-02-28", "2024-02-29"],
        "2024-03-01",
        VALID,
        "2020-02-29",
        "2025-02-28",
    ),
    # several years, on time and late mixed
    (
        "2020-03-15",
        ["2021-03-01", "2022-04-10", "2023-03-15", "2024-02-15"],
        "2024-06-01",
        VALID,
        "2022-04-10",
        "2025-03-15",
    ),
    (
        "2020-03-15",
        ["2021-03-01", "2022-04-10", "2023-03-15", "2024-02-15"],
        "2025-03-16",
        SUSPENDED,
        "2022-04-10",
        "2025-03-15",
    ),
    (
        "2020-03-15",
        ["2021-03-01", "2022-04-10", "2023-03-15", "2024-02-15", "2025-05-05"],
        "2025-05-05",
        VALID,
        "2025-05-05",
        "2026-03-15",
    ),
]


@pytest.mark.parametrize(("issued", "endorsed", "today", "state", "since", "due"), TABLE)
def test_permit_status_table(
    issued: str, endorsed: list[str], today: str, state: PermitState, since: str, due: str
) -> None:
    status = permit_status(D(issued), [D(e) for e in endorsed], D(today))
    assert (status.state, status.residence_since, status.due_anniversary) == (
        state,
        D(since),
        D(due),
    )
    assert status.state == state.value  # a str for callers that compare with "valid"
    assert status.window_opens == window_opening(D(due))
    if state is SUSPENDED:
        assert status.suspended_since == D(due) + timedelta(days=1)
    else:
        assert status.suspended_since is None


def test_unsorted_and_repeated_input_gives_the_same_answer() -> None:
    endorsed = [D("2024-02-15"), D("2021-03-01"), D("2023-03-15"), D("2022-04-10")]
    one = permit_status(D("2020-03-15"), endorsed, D("2024-06-01"))
    two = permit_status(D("2020-03-15"), sorted(endorsed) + endorsed, D("2024-06-01"))
    assert one == two


def test_early_and_repeat_endorsements_change_nothing_and_are_listed() -> None:
    endorsed = [D("2020-06-01"), D("2021-02-20"), D("2021-03-01"), D("2021-03-15")]
    status = permit_status(D("2020-03-15"), endorsed, D("2021-04-01"))
    assert status.state is VALID
    assert status.unused == (D("2020-06-01"), D("2021-03-01"), D("2021-03-15"))


def test_a_late_endorsement_is_not_listed_as_unused() -> None:
    status = permit_status(D("2020-03-15"), [D("2021-06-01")], D("2021-07-01"))
    assert status.unused == ()


@pytest.mark.parametrize(
    ("endorsed", "today", "match"),
    [
        (["2020-03-14"], "2021-01-01", "endorsement is dated before"),
        ([], "2020-03-14", "today is before"),
    ],
)
def test_impossible_dates_are_value_errors(endorsed: list[str], today: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        permit_status(D("2020-03-15"), [D(e) for e in endorsed], D(today))


# --- properties -------------------------------------------------------------------------

RANK = {VALID: 0, WINDOW: 1, SUSPENDED: 2}
issue_dates = st.dates(min_value=date(2000, 1, 1), max_value=date(2030, 12, 31))
offsets = st.integers(min_value=0, max_value=7 * 366)


@st.composite
def histories(draw: st.DrawFn) -> tuple[date, list[date], date]:
    issued = draw(issue_dates)
    endorsed = [issued + timedelta(days=o) for o in draw(st.lists(offsets, max_size=8))]
    today = issued + timedelta(days=draw(offsets))
    return issued, endorsed, today


@given(histories())
def test_invariants(history: tuple[date, list[date], date]) -> None:
    issued, endorsed, today = history
    status = permit_status(issued, endorsed, today)
    assert status.state in {"valid", "window", "suspended"}
    assert issued <= status.residence_since <= today
    assert status.window_opens == window_opening(status.due_anniversary)
    assert status.due_anniversary > issued
    if status.state is SUSPENDED:
        assert status.suspended_since == status.due_anniversary + timedelta(days=1) <= today
    else:
        assert status.suspended_since is None
        assert today <= status.due_anniversary
        assert (status.state is WINDOW) == (today >= status.window_opens)
    assert set(status.unused) <= {e for e in endorsed if e <= today}
    shuffled = list(reversed(endorsed)) + endorsed[:2]
    assert permit_status(issued, shuffled, today) == status


@given(histories(), st.integers(min_value=1, max_value=8), st.integers(min_value=0, max_value=31))
def test_an_on_time_endorsement_never_makes_things_worse(
    history: tuple[date, list[date], date], n: int, into_window: int
) -> None:
    issued, endorsed, today = history
    due = anniversary(issued, n)
    on_time = min(window_opening(due) + timedelta(days=into_window), due, today)
    if on_time < window_opening(due):
        return  # that window has not opened by today
    before = permit_status(issued, endorsed, today)
    after = permit_status(issued, [*endorsed, on_time], today)
    assert RANK[after.state] <= RANK[before.state]
    if before.state is not SUSPENDED:
        assert after.residence_since <= before.residence_since


@given(issue_dates, offsets)
def test_no_endorsement_past_the_first_anniversary_is_suspended(issued: date, extra: int) -> None:
    today = add_years(issued, 1) + timedelta(days=1 + extra)
    status = permit_status(issued, [], today)
    assert status.state is SUSPENDED
    assert status.residence_since == issued
    assert status.suspended_since == add_years(issued, 1) + timedelta(days=1)


@given(issue_dates, offsets, st.integers(min_value=0, max_value=31))
def test_endorsing_in_every_window_never_suspends(issued: date, days: int, into: int) -> None:
    today = issued + timedelta(days=days)
    endorsed = []
    for n in range(1, 10):
        due = anniversary(issued, n)
        endorsed.append(min(window_opening(due) + timedelta(days=into), due))
    status = permit_status(issued, endorsed, today)
    assert status.state is not SUSPENDED
    assert status.residence_since == issued


@given(histories(), st.integers(min_value=1, max_value=400))
def test_without_new_endorsements_the_state_only_gets_worse(
    history: tuple[date, list[date], date], days: int
) -> None:
    issued, endorsed, today = history
    later = today + timedelta(days=days)
    quiet = [e for e in endorsed if not today < e <= later]
    first, second = permit_status(issued, quiet, today), permit_status(issued, quiet, later)
    assert RANK[second.state] >= RANK[first.state]
    assert second.residence_since == first.residence_since
