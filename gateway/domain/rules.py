"""R4: endorsement (签注) of the Zhejiang residence permit, and the calendar sums the rules share.

Notice §二(一)4: a holder must have the permit endorsed within the month before
each anniversary of the issue date; from the day after a missed anniversary the
permit is suspended; a late endorsement restores it and the years of residence
count afresh from the late endorsement date. The choices below make that exact;
each is a row in tests/domain/test_rules_permit.py.

- Anniversary *n* is the issue date's month and day *n* years on. An issue date
  of 29 February has its anniversaries on 28 February in common years (issued
  29 Feb 2020: 28 Feb 2021, 28 Feb 2022, 28 Feb 2023, 29 Feb 2024).
- The window for an anniversary opens on the same day of the month one calendar
  month earlier, clamped to the end of a shorter month (anniversary 15 Mar:
  opens 15 Feb; 31 Mar: opens 28 or 29 Feb; 28 Feb 2021: opens 28 Jan 2021),
  and includes the anniversary itself. Endorsing on the anniversary is on time;
  suspension starts the next day.
- An endorsement inside a window covers that anniversary. One made after a
  missed anniversary is late: it restores the permit that day, covers every
  anniversary before it, and restarts `residence_since`. If it also falls in the
  next anniversary's window it covers that one too (one visit endorses the card
  for the current year).
- Anniversaries stay on the issue date after a late endorsement. The notice ties
  them to the issue date (自证件签发之日起每满1年) and a late endorsement is not a
  re-issue; only the residence-years count moves (`residence_since`).
- An endorsement that falls in no window and follows no missed anniversary (too
  early, or a second one in a window already covered) changes nothing; it is
  listed in `PermitStatus.unused` so callers can flag the record.
- The status is computed *as of* `today`: endorsements dated after it have not
  happened yet and are left out, so one history answers for any day. An
  endorsement dated before the issue date, or `today` before it, is a data
  error and raises `ValueError`.
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum

_DAY = timedelta(days=1)


def add_months(day: date, months: int) -> date:
    """`day` moved by whole calendar months, clamped to the last day of a shorter month.

    31 Jan + 1 month is 28 or 29 Feb; 31 Mar - 1 month likewise. Raises
    `ValueError` past year 9999.
    """
    index = day.year * 12 + day.month - 1 + months
    year, month0 = divmod(index, 12)
    if not 1 <= year <= 9999:
        raise ValueError(f"date out of range: year {year}")
    last = calendar.monthrange(year, month0 + 1)[1]
    return date(year, month0 + 1, min(day.day, last))


def add_years(day: date, years: int) -> date:
    """`day` moved by whole years; 29 February becomes 28 February in a common year."""
    return add_months(day, 12 * years)


class PermitState(StrEnum):
    VALID = "valid"
    """In force; the next endorsement window has not opened."""
    WINDOW = "window"
    """In force, and the month before the due anniversary has begun: endorse now."""
    SUSPENDED = "suspended"
    """A due anniversary passed without endorsement; functions stop until a late one."""


@dataclass(frozen=True, slots=True)
class PermitStatus:
    """Where a permit stands on one day, and from when its holder's residence counts."""

    state: PermitState
    residence_since: date
    """The issue date, or the latest late endorsement: residence years count from here."""
    due_anniversary: date
    """The earliest anniversary no endorsement covers yet (in the past when suspended)."""
    window_opens: date
    """First day an endorsement covers `due_anniversary`."""
    suspended_since: date | None = None
    """The day after the missed anniversary, while suspended."""
    unused: tuple[date, ...] = ()
    """Endorsements up to `today` that covered nothing (too early, or a repeat)."""


def anniversary(issued_on: date, n: int) -> date:
    """The `n`-th anniversary of the issue date (29 Feb → 28 Feb in common years)."""
    return add_years(issued_on, n)


def window_opening(anniversary_on: date) -> date:
    """First day of the endorsement window for an anniversary (same day, a month before)."""
    return add_months(anniversary_on, -1)


def permit_status(issued_on: date, endorsed_on: Sequence[date], today: date) -> PermitStatus:
    """The permit's state on `today` from its issue date and every endorsement on record.

    Endorsements may come in any order and repeat; those after `today` are left
    out. See the module docstring for how windows, late endorsements and 29
    February are counted.
    """
    if today < issued_on:
        raise ValueError("today is before the permit was issued")
    if any(day < issued_on for day in endorsed_on):
        raise ValueError("an endorsement is dated before the permit was issued")
    n = 1
    due = anniversary(issued_on, n)
    since = issued_on
    unused: list[date] = []
    for day in sorted({day for day in endorsed_on if day <= today}):
        late = day > due
        if late:
            since = day
            while due < day:
                n += 1
                due = anniversary(issued_on, n)
        if window_opening(due) <= day:
            n += 1
            due = anniversary(issued_on, n)
        elif not late:
            unused.append(day)
    opens = window_opening(due)
    if today > due:
        state, suspended_since = PermitState.SUSPENDED, due + _DAY
    else:
        state = PermitState.WINDOW if today >= opens else PermitState.VALID
        suspended_since = None
    return PermitStatus(
        state=state,
        residence_since=since,
        due_anniversary=due,
        window_opens=opens,
        suspended_since=suspended_since,
        unused=tuple(unused),
    )
