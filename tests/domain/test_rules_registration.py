"""R1 registration: the 3-day and 10-day clocks, who is local, moving in and out."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.domain.registration import (
    RegistrationFacts,
    RegistrationState,
    RegistrationStatus,
    is_local,
    registration_status,
    worklist,
)

D = date.fromisoformat
S = RegistrationState
HERE, ELSEWHERE = "B1", "B2"


# first seen, registered at, today, state, deadline, overdue from
TABLE = [
    # 3 days: day 1 is the first presence; day 3 on time; overdue from day 4
    ("2024-01-30", None, "2024-01-30", S.DUE, "2024-02-01", "2024-02-02"),
    ("2024-01-30", None, "2024-02-01", S.DUE, "2024-02-01", "2024-02-02"),
    ("2024-01-30", None, "2024-02-02", S.OVERDUE, "2024-02-01", "2024-02-02"),
    ("2023-02-27", None, "2023-03-01", S.DUE, "2023-03-01", "2023-03-02"),
    ("2023-02-27", None, "2023-03-02", S.OVERDUE, "2023-03-01", "2023-03-02"),
    ("2024-02-27", None, "2024-02-29", S.DUE, "2024-02-29", "2024-03-01"),
    ("2024-02-27", None, "2024-03-01", S.OVERDUE, "2024-02-29", "2024-03-01"),
    ("2024-02-29", None, "2024-03-02", S.DUE, "2024-03-02", "2024-03-03"),
    ("2024-02-29", None, "2024-03-03", S.OVERDUE, "2024-03-02", "2024-03-03"),
    ("2023-12-30", None, "2024-01-01", S.DUE, "2024-01-01", "2024-01-02"),
    # 10 days for a change of address: day 10 on time, overdue from day 11
    ("2024-02-20", ELSEWHERE, "2024-02-20", S.CHANGE_DUE, "2024-02-29", "2024-03-01"),
    ("2024-02-20", ELSEWHERE, "2024-02-29", S.CHANGE_DUE, "2024-02-29", "2024-03-01"),
    ("2024-02-20", ELSEWHERE, "2024-03-01", S.CHANGE_OVERDUE, "2024-02-29", "2024-03-01"),
    ("2023-02-20", ELSEWHERE, "2023-03-01", S.CHANGE_DUE, "2023-03-01", "2023-03-02"),
    ("2023-02-20", ELSEWHERE, "2023-03-02", S.CHANGE_OVERDUE, "2023-03-01", "2023-03-02"),
    ("2024-12-25", ELSEWHERE, "2025-01-03", S.CHANGE_DUE, "2025-01-03", "2025-01-04"),
    ("2024-12-25", ELSEWHERE, "2025-01-04", S.CHANGE_OVERDUE, "2025-01-03", "2025-01-04"),
]


@pytest.mark.parametrize(("seen", "registered", "today", "state", "deadline", "overdue"), TABLE)
def test_registration_clocks(
    seen: str, registered: str | None, today: str, state: S, deadline: str, overdue: str
) -> None:
    facts = RegistrationFacts(local=False, first_seen_on=D(seen), registered_building=registered)
    status = registration_status(facts, HERE, D(today))
    assert (status.state, status.deadline, status.overdue_from) == (state, D(deadline), D(overdue))
    assert status.open
    assert status.alert == (state in {S.OVERDUE, S.CHANGE_OVERDUE})
    assert (deadline if status.state in {S.DUE, S.CHANGE_DUE} else overdue) in status.action


@pytest.mark.parametrize(
    ("facts", "today", "state"),
    [
        (RegistrationFacts(local=True, first_seen_on=D("2020-01-01")), "2024-01-01", S.LOCAL),
        (
            RegistrationFacts(local=False, first_seen_on=D("2020-01-01"), registered_building=HERE),
            "2024-01-01",
            S.REGISTERED,
        ),
        (RegistrationFacts(local=False, registered_building=HERE), "2024-01-01", S.REGISTERED),
        (RegistrationFacts(local=False), "2024-01-01", S.NOT_SEEN),
        (RegistrationFacts(local=False, first_seen_on=D("2024-01-02")), "2024-01-01", S.NOT_SEEN),
        (
            RegistrationFacts(
                local=False, first_seen_on=D("2024-01-01"), moved_out_on=D("2024-01-09")
            ),
            "2024-01-09",
            S.MOVED_OUT,
        ),
        (
            RegistrationFacts(
                local=False, first_seen_on=D("2024-01-01"), moved_out_on=D("2024-01-09")
            ),
            "2024-01-08",
            S.OVERDUE,
        ),
        (
            RegistrationFacts(
                local=True, first_seen_on=D("2024-01-01"), moved_out_on=D("2024-01-02")
            ),
            "2024-02-01",
            S.MOVED_OUT,
        ),
    ],
)
def test_states_without_a_clock(facts: RegistrationFacts, today: str, state: S) -> None:
    status = registration_status(facts, HERE, D(today))
    assert status.state is state
    assert status.action
    if state in {S.LOCAL, S.REGISTERED, S.NOT_SEEN, S.MOVED_OUT}:
        assert not status.open
        assert status.deadline is None
        assert status.overdue_from is None


def test_registered_elsewhere_then_registered_here() -> None:
    seen = D("2024-03-01")
    elsewhere = RegistrationFacts(local=False, first_seen_on=seen, registered_building=ELSEWHERE)
    assert registration_status(elsewhere, HERE, D("2024-03-20")).state is S.CHANGE_OVERDUE
    here = RegistrationFacts(local=False, first_seen_on=seen, registered_building=HERE)
    assert registration_status(here, HERE, D("2024-03-20")).state is S.REGISTERED
    # the same facts seen from the other building: registered there
    assert registration_status(elsewhere, ELSEWHERE, D("2024-03-20")).state is S.REGISTERED


def test_bad_facts_are_value_errors() -> None:
    with pytest.raises(ValueError, match="registered building"):
        RegistrationFacts(local=False, registered_building="  ")
    with pytest.raises(ValueError, match="moved out"):
        RegistrationFacts(local=False, first_seen_on=D("2024-01-02"), moved_out_on=D("2024-01-01"))


def test_empty_building_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="building"):
        registration_status(RegistrationFacts(local=False), " ", D("2024-01-01"))


def test_worklist_puts_overdue_first_then_by_deadline() -> None:
    today = D("2024-03-10")

    def at(seen: str, registered: str | None = None) -> RegistrationStatus:
        facts = RegistrationFacts(False, first_seen_on=D(seen), registered_building=registered)
        return registration_status(facts, HERE, today)

    statuses = {
        "registered": at("2024-03-01", HERE),
        "change due": at("2024-03-05", ELSEWHERE),
        "due": at("2024-03-09"),
        "overdue late": at("2024-03-05"),
        "change overdue": at("2024-02-20", ELSEWHERE),
        "overdue early": at("2024-03-01"),
    }
    assert [key for key, _ in worklist(statuses)] == [
        "change overdue",
        "overdue early",
        "overdue late",
        "due",
        "change due",
    ]


LOCAL_DISTRICTS = ["杭州市上城区", "杭州市拱墅区", "浙江省杭州市西湖区", "杭州市江干区"]


@pytest.mark.parametrize(
    ("address", "local"),
    [
        ("浙江省杭州市上城区望江街道近江村1号", True),
        ("杭州市上城区望江街道近江村1号", True),
        ("浙江省 杭州市　上城区 清波街道", True),  # ASCII and full-width spaces
        ("浙江省杭州市西湖区文三路1号", True),  # configured with the province
        ("浙江省杭州市江干区四季青街道", True),  # old name on an older card
        ("浙江省宁波市海曙区上城路12号", False),  # local name only as a street
        ("浙江省杭州市桐庐县上城区村", False),  # a county: not the urban districts
        ("安徽省合肥市杭州市上城区路8号", False),
        ("浙江省杭州市上城", False),  # truncated
        ("江西省上饶市信州区", False),
        ("", False),
    ],
)
def test_is_local_matches_the_district_prefix(address: str, local: bool) -> None:
    assert is_local(address, LOCAL_DISTRICTS) is local


def test_is_local_refuses_bad_configuration() -> None:
    with pytest.raises(TypeError, match="not one string"):
        is_local("杭州市上城区", "杭州市上城区")
    with pytest.raises(ValueError, match="empty"):
        is_local("杭州市上城区", ["杭州市上城区", "浙江省 "])


def test_is_local_is_not_the_id_region_code() -> None:
    # An ID number first issued in 330102 (上城区) says nothing about today's 户籍.
    assert not is_local("江苏省南京市玄武区", LOCAL_DISTRICTS)


# --- properties -------------------------------------------------------------------------

RANK = {S.DUE: 0, S.OVERDUE: 1, S.CHANGE_DUE: 0, S.CHANGE_OVERDUE: 1}
days = st.dates(min_value=date(2000, 1, 1), max_value=date(2040, 12, 31))


@given(
    days,
    st.sampled_from([None, ELSEWHERE]),
    st.integers(min_value=0, max_value=30),
    st.integers(min_value=0, max_value=30),
)
def test_as_days_pass_a_clock_never_goes_back(
    seen: date, registered: str | None, first: int, more: int
) -> None:
    facts = RegistrationFacts(local=False, first_seen_on=seen, registered_building=registered)
    earlier = registration_status(facts, HERE, seen + timedelta(days=first))
    later = registration_status(facts, HERE, seen + timedelta(days=first + more))
    assert RANK[later.state] >= RANK[earlier.state]
    assert (later.deadline, later.overdue_from) == (earlier.deadline, earlier.overdue_from)
    assert earlier.deadline is not None
    assert earlier.overdue_from == earlier.deadline + timedelta(days=1)
    allowed = 3 if registered is None else 10
    assert (earlier.state in {S.OVERDUE, S.CHANGE_OVERDUE}) == (first + 1 > allowed)


@given(days, st.integers(min_value=0, max_value=400), st.sampled_from([None, HERE, ELSEWHERE]))
def test_local_people_are_never_due(seen: date, after: int, registered: str | None) -> None:
    facts = RegistrationFacts(local=True, first_seen_on=seen, registered_building=registered)
    status = registration_status(facts, HERE, seen + timedelta(days=after))
    assert status.state is S.LOCAL
    assert not status.open
