"""What a landlord may do with an enrolled key card, and what each operation leads to.

The operations are those of Shenzhen's rental door-access specification
(`../shared/domain.md`): extend, report lost, unblock, return, cancel. A lost
card can be unblocked when found; a returned or cancelled card stays so (a
cancelled card presented at a door raises an alert). Pure: the store applies
the status this module decides.
"""

from __future__ import annotations

from enum import StrEnum

from gateway.domain.credentials import CredentialStatus
from gateway.errors import RentgateError


class CardAction(StrEnum):
    REPORT_LOST = "report_lost"
    UNBLOCK = "unblock"
    RETURN = "return"
    CANCEL = "cancel"


class ActionRefused(RentgateError, ValueError):
    """The action does not apply to a card in this status."""


_FROM: dict[CardAction, frozenset[CredentialStatus]] = {
    CardAction.REPORT_LOST: frozenset({CredentialStatus.ACTIVE}),
    CardAction.UNBLOCK: frozenset({CredentialStatus.LOST}),
    CardAction.RETURN: frozenset({CredentialStatus.ACTIVE, CredentialStatus.LOST}),
    CardAction.CANCEL: frozenset(
        {CredentialStatus.ACTIVE, CredentialStatus.LOST, CredentialStatus.RETURNED}
    ),
}
_TO: dict[CardAction, CredentialStatus] = {
    CardAction.REPORT_LOST: CredentialStatus.LOST,
    CardAction.UNBLOCK: CredentialStatus.ACTIVE,
    CardAction.RETURN: CredentialStatus.RETURNED,
    CardAction.CANCEL: CredentialStatus.CANCELLED,
}


def next_status(current: CredentialStatus, action: CardAction) -> CredentialStatus:
    """The status `action` leads to from `current`; ActionRefused if it does not apply."""
    if current not in _FROM[action]:
        allowed = ", ".join(sorted(status.value for status in _FROM[action]))
        raise ActionRefused(
            f"cannot {action.value.replace('_', ' ')} a {current.value} card (only {allowed})"
        )
    return _TO[action]


def extendable(current: CredentialStatus) -> bool:
    """Only a card in use (or reported lost, to be found) gets a longer validity."""
    return current in (CredentialStatus.ACTIVE, CredentialStatus.LOST)


def available_actions(current: CredentialStatus) -> list[CardAction]:
    """The actions that apply to a card in `current` status, in the order a UI offers them."""
    return [action for action in CardAction if current in _FROM[action]]
