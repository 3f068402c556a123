"""R2/R3: pre-check of a residence-permit application (居住证申领), in one answer.

Notice §二(一)2-3. The applicant's facts decide eligibility; the documents they
brought decide completeness. How the two interact, as decided:

- `INELIGIBLE` when the facts fail: `reasons` lists every reason at once, and
  `missing` still lists what would be needed, so the terminal can show both.
- `INCOMPLETE` when the facts pass but documents are missing: `missing` is the
  complete list (一次性告知), never a first item only.
- `ELIGIBLE` when the facts pass and nothing is missing.

A basis (employment, residence, study) that is met stands on its own: failures
of other bases claimed alongside it are not reasons. The documents asked for
are those of the met basis with the fewest still missing (ties: employment,
residence, study); when no basis is met, those of every basis claimed.

Periods: "≥ 1 year" from a start date is reached on the same month and day a
year on (29 Feb → 28 Feb in a common year); "≥ 6 months" on the same day six
calendar months on, clamped to month end (31 Aug → 28/29 Feb). A lease of one
year runs to the day before that (1 Mar 2024 - 28 Feb 2025). The applicant is a
minor on every day before their 16th birthday. Back-paid social insurance (补缴)
does not count for the employment basis; the notice does not exclude it for a
minor's guardians, so it counts there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from enum import StrEnum

from gateway.domain.rules import add_months, add_years

MINOR_UNDER_AGE = 16


class Basis(StrEnum):
    EMPLOYMENT = "employment"
    RESIDENCE = "residence"
    STUDY = "study"


class Eligibility(StrEnum):
    ELIGIBLE = "eligible"
    INCOMPLETE = "incomplete"
    INELIGIBLE = "ineligible"


class EmploymentKind(StrEnum):
    LABOUR_CONTRACT = "labour_contract"
    OWN_COMPANY = "own_company"
    INDIVIDUAL_BUSINESS = "individual_business"
    FARM_LEASE = "farm_lease"
    OTHER_SELF_EMPLOYMENT = "other_self_employment"


class OwnerTitle(StrEnum):
    """What the landlord holds over a rented home."""

    OWNERSHIP = "ownership"
    HOMESTEAD = "homestead"
    NONE = "none"


class Reason(StrEnum):
    """Why facts make an application ineligible. Values are stable: events and UIs use them."""

    NOT_REGISTERED = "not_registered"
    REGISTERED_UNDER_6_MONTHS = "registered_under_6_months"
    NO_BASIS = "no_basis"
    NO_SOCIAL_INSURANCE = "no_social_insurance"
    INSURANCE_UNDER_1_YEAR = "insurance_under_1_year"
    INSURANCE_BACK_PAID = "insurance_back_paid"
    INSURANCE_NOT_CURRENT = "insurance_not_current"
    INSURANCE_OUTSIDE_URBAN_DISTRICTS = "insurance_outside_urban_districts"
    EMPLOYMENT_UNDER_1_YEAR = "employment_under_1_year"
    EMPLOYMENT_NOT_CURRENT = "employment_not_current"
    EMPLOYMENT_OUTSIDE_URBAN_DISTRICTS = "employment_outside_urban_districts"
    LEASE_UNDER_1_YEAR = "lease_under_1_year"
    LEASE_NOT_CURRENT = "lease_not_current"
    OWNER_WITHOUT_TITLE = "owner_without_title"
    RENTAL_NOT_REGISTERED = "rental_not_registered"
    STUDY_UNDER_1_YEAR = "study_under_1_year"
    STUDY_NOT_FULL_TIME = "study_not_full_time"
    SCHOOL_OUTSIDE_URBAN_DISTRICTS = "school_outside_urban_districts"
    NO_GUARDIAN = "no_guardian"
    GUARDIAN_WITHOUT_PERMIT = "guardian_without_permit"
    GUARDIAN_INSURANCE_UNDER_1_YEAR = "guardian_insurance_under_1_year"

    @property
    def description(self) -> str:
        return _REASON_TEXT[self]


_REASON_TEXT: dict[Reason, str] = {
    Reason.NOT_REGISTERED: "No residence registration in the urban districts.",
    Reason.REGISTERED_UNDER_6_MONTHS: "Registered and living here for less than 6 months.",
    Reason.NO_BASIS: "No employment, residence or study claimed.",
    Reason.NO_SOCIAL_INSURANCE: "Employment claimed without social insurance.",
    Reason.INSURANCE_UNDER_1_YEAR: "Social insurance paid continuously for less than 1 year.",
    Reason.INSURANCE_BACK_PAID: "Social insurance reaches 1 year only with back payments.",
    Reason.INSURANCE_NOT_CURRENT: "Social insurance not paid for the month of application.",
    Reason.INSURANCE_OUTSIDE_URBAN_DISTRICTS: "Social insurance not paid in the urban districts.",
    Reason.EMPLOYMENT_UNDER_1_YEAR: "Employment or business for less than 1 year.",
    Reason.EMPLOYMENT_NOT_CURRENT: "Not employed on the day of application.",
    Reason.EMPLOYMENT_OUTSIDE_URBAN_DISTRICTS: "Employment not in the urban districts.",
    Reason.LEASE_UNDER_1_YEAR: "Lease shorter than 1 year.",
    Reason.LEASE_NOT_CURRENT: "Lease not in force on the day of application.",
    Reason.OWNER_WITHOUT_TITLE: "Landlord holds neither ownership nor homestead right.",
    Reason.RENTAL_NOT_REGISTERED: "Rental not registered with the police.",
    Reason.STUDY_UNDER_1_YEAR: "Enrolled for less than 1 year.",
    Reason.STUDY_NOT_FULL_TIME: "Study is not full-time.",
    Reason.SCHOOL_OUTSIDE_URBAN_DISTRICTS: "School not in the urban districts.",
    Reason.NO_GUARDIAN: "Applicant under 16 without a guardian on record.",
    Reason.GUARDIAN_WITHOUT_PERMIT: "A parent or guardian holds no residence permit.",
    Reason.GUARDIAN_INSURANCE_UNDER_1_YEAR: (
        "No parent or guardian paid social insurance here for 1 year."
    ),
}


class Material(StrEnum):
    """A document the application carries. Values are stable: events and UIs use them."""

    APPLICATION_FORM = "application_form"
    ID_DOCUMENT = "id_document"
    PHOTO = "photo"
    INSURANCE_RECORD = "insurance_record"
    LABOUR_CONTRACT = "labour_contract"
    BUSINESS_LICENCE = "business_licence"
    INDIVIDUAL_BUSINESS_LICENCE = "individual_business_licence"
    FARM_LEASE_CONTRACT = "farm_lease_contract"
    SELF_EMPLOYMENT_PROOF = "self_employment_proof"
    PROPERTY_CERTIFICATE = "property_certificate"
    LEASE_CONTRACT = "lease_contract"
    OWNER_TITLE_CERTIFICATE = "owner_title_certificate"
    RENTAL_REGISTRATION = "rental_registration"
    LEASE_FILING = "lease_filing"
    SCHOOL_ENROLMENT_CERTIFICATE = "school_enrolment_certificate"
    STUDY_CONTINUITY_PROOF = "study_continuity_proof"
    GUARDIAN_PERMITS = "guardian_permits"
    GUARDIAN_INSURANCE_PROOF = "guardian_insurance_proof"

    @property
    def description(self) -> str:
        return _MATERIAL_TEXT[self]


_MATERIAL_TEXT: dict[Material, str] = {
    Material.APPLICATION_FORM: "Residence permit application form (申领表).",
    Material.ID_DOCUMENT: "Valid identity document.",
    Material.PHOTO: "Photo.",
    Material.INSURANCE_RECORD: "Social insurance record: 1 year continuous, this month paid.",
    Material.LABOUR_CONTRACT: "Labour contract.",
    Material.BUSINESS_LICENCE: "Business licence of the applicant's company.",
    Material.INDIVIDUAL_BUSINESS_LICENCE: "Individual business licence.",
    Material.FARM_LEASE_CONTRACT: "Farm contract or land lease.",
    Material.SELF_EMPLOYMENT_PROOF: "Proof of self-employment.",
    Material.PROPERTY_CERTIFICATE: "Ownership or use-right certificate of the home.",
    Material.LEASE_CONTRACT: "Lease of 1 year or more.",
    Material.OWNER_TITLE_CERTIFICATE: "Landlord's ownership or homestead certificate.",
    Material.RENTAL_REGISTRATION: "Police rental registration.",
    Material.LEASE_FILING: "Housing authority lease filing (commercial housing).",
    Material.SCHOOL_ENROLMENT_CERTIFICATE: "School enrolment certificate (学籍证明).",
    Material.STUDY_CONTINUITY_PROOF: "Proof of 1 year of continuous study.",
    Material.GUARDIAN_PERMITS: "Parents' or guardians' residence permits.",
    Material.GUARDIAN_INSURANCE_PROOF: "Proof a parent paid social insurance here for 1 year.",
}

GENERAL_MATERIALS = (Material.APPLICATION_FORM, Material.ID_DOCUMENT, Material.PHOTO)
MINOR_MATERIALS = (Material.GUARDIAN_PERMITS, Material.GUARDIAN_INSURANCE_PROOF)
_EMPLOYMENT_PROOF = {
    EmploymentKind.LABOUR_CONTRACT: Material.LABOUR_CONTRACT,
    EmploymentKind.OWN_COMPANY: Material.BUSINESS_LICENCE,
    EmploymentKind.INDIVIDUAL_BUSINESS: Material.INDIVIDUAL_BUSINESS_LICENCE,
    EmploymentKind.FARM_LEASE: Material.FARM_LEASE_CONTRACT,
    EmploymentKind.OTHER_SELF_EMPLOYMENT: Material.SELF_EMPLOYMENT_PROOF,
}


def _ordered(start: date, end: date | None, what: str) -> None:
    if end is not None and end < start:
        raise ValueError(f"{what} ends before it starts")


@dataclass(frozen=True, slots=True)
class SocialInsurance:
    """One unbroken run of contributions."""

    since: date
    """First day of the run."""
    paid_through: date
    """Last day contributions cover; current when it falls in the month of application."""
    back_paid_through: date | None = None
    """Contributions up to this day were back-paid (补缴)."""
    in_urban_districts: bool = True

    def __post_init__(self) -> None:
        _ordered(self.since, self.paid_through, "social insurance")


@dataclass(frozen=True, slots=True)
class Employment:
    kind: EmploymentKind
    since: date
    """Start of continuous work or operation."""
    insurance: SocialInsurance | None
    until: date | None = None
    """Last day of work, if it ended."""
    in_urban_districts: bool = True

    def __post_init__(self) -> None:
        _ordered(self.since, self.until, "employment")


@dataclass(frozen=True, slots=True)
class OwnHome:
    """A home the applicant owns or holds the use right of."""


@dataclass(frozen=True, slots=True)
class Rental:
    lease_start: date
    lease_end: date
    """Last day of the lease."""
    owner_title: OwnerTitle
    police_registered: bool
    """Registered for rental with the police (出租登记)."""
    commercial_housing: bool
    """商品房: also needs the housing authority's lease filing."""

    def __post_init__(self) -> None:
        _ordered(self.lease_start, self.lease_end, "lease")


@dataclass(frozen=True, slots=True)
class Study:
    enrolled_since: date
    full_time: bool = True
    in_urban_districts: bool = True


@dataclass(frozen=True, slots=True)
class Guardian:
    """A parent or legal guardian of a minor applicant."""

    holds_permit: bool
    insurance: SocialInsurance | None = None


@dataclass(frozen=True, slots=True)
class Applicant:
    """The facts an application rests on and the documents brought (no ID number needed)."""

    birth_date: date
    registered_since: date | None
    """Registered and living continuously in the urban districts since."""
    employment: Employment | None = None
    residence: OwnHome | Rental | None = None
    study: Study | None = None
    guardians: tuple[Guardian, ...] = ()
    documents: frozenset[Material] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        try:
            documents = frozenset(Material(item) for item in self.documents)
        except ValueError as exc:
            raise ValueError(f"unknown document: {exc}") from exc
        object.__setattr__(self, "documents", documents)


@dataclass(frozen=True, slots=True)
class Precheck:
    outcome: Eligibility
    reasons: tuple[Reason, ...]
    """Every reason the facts fail, in `Reason` order; empty unless ineligible."""
    missing: tuple[Material, ...]
    """Every document still needed, in `Material` order."""
    basis: Basis | None
    """The basis the application stands on; None when none is met."""
    minor: bool


def _met(start: date, today: date) -> bool:
    return add_years(start, 1) <= today


def _employment(job: Employment, today: date) -> set[Reason]:
    reasons: set[Reason] = set()
    if not _met(job.since, today):
        reasons.add(Reason.EMPLOYMENT_UNDER_1_YEAR)
    if job.until is not None and job.until < today:
        reasons.add(Reason.EMPLOYMENT_NOT_CURRENT)
    if not job.in_urban_districts:
        reasons.add(Reason.EMPLOYMENT_OUTSIDE_URBAN_DISTRICTS)
    cover = job.insurance
    if cover is None:
        return reasons | {Reason.NO_SOCIAL_INSURANCE}
    on_time = cover.since
    if cover.back_paid_through is not None:
        on_time = max(on_time, cover.back_paid_through + timedelta(days=1))
    if not _met(on_time, today):
        back_paid = _met(cover.since, today)
        reasons.add(Reason.INSURANCE_BACK_PAID if back_paid else Reason.INSURANCE_UNDER_1_YEAR)
    if (cover.paid_through.year, cover.paid_through.month) < (today.year, today.month):
        reasons.add(Reason.INSURANCE_NOT_CURRENT)
    if not cover.in_urban_districts:
        reasons.add(Reason.INSURANCE_OUTSIDE_URBAN_DISTRICTS)
    return reasons


def _residence(home: OwnHome | Rental, today: date) -> set[Reason]:
    if isinstance(home, OwnHome):
        return set()
    reasons: set[Reason] = set()
    if home.lease_end < add_years(home.lease_start, 1) - timedelta(days=1):
        reasons.add(Reason.LEASE_UNDER_1_YEAR)
    if not home.lease_start <= today <= home.lease_end:
        reasons.add(Reason.LEASE_NOT_CURRENT)
    if home.owner_title is OwnerTitle.NONE:
        reasons.add(Reason.OWNER_WITHOUT_TITLE)
    if not home.police_registered:
        reasons.add(Reason.RENTAL_NOT_REGISTERED)
    return reasons


def _study(study: Study, today: date) -> set[Reason]:
    reasons: set[Reason] = set()
    if not _met(study.enrolled_since, today):
        reasons.add(Reason.STUDY_UNDER_1_YEAR)
    if not study.full_time:
        reasons.add(Reason.STUDY_NOT_FULL_TIME)
    if not study.in_urban_districts:
        reasons.add(Reason.SCHOOL_OUTSIDE_URBAN_DISTRICTS)
    return reasons


def _guardians(guardians: tuple[Guardian, ...], today: date) -> set[Reason]:
    if not guardians:
        return {Reason.NO_GUARDIAN}
    reasons: set[Reason] = set()
    if not all(guardian.holds_permit for guardian in guardians):
        reasons.add(Reason.GUARDIAN_WITHOUT_PERMIT)
    if not any(
        guardian.insurance is not None
        and guardian.insurance.in_urban_districts
        and _met(guardian.insurance.since, today)
        for guardian in guardians
    ):
        reasons.add(Reason.GUARDIAN_INSURANCE_UNDER_1_YEAR)
    return reasons


def _basis_failures(applicant: Applicant, today: date) -> dict[Basis, set[Reason]]:
    """For each basis claimed, why it is not met (an empty set: met)."""
    failures: dict[Basis, set[Reason]] = {}
    if applicant.employment is not None:
        failures[Basis.EMPLOYMENT] = _employment(applicant.employment, today)
    if applicant.residence is not None:
        failures[Basis.RESIDENCE] = _residence(applicant.residence, today)
    if applicant.study is not None:
        failures[Basis.STUDY] = _study(applicant.study, today)
    return failures


def required_proofs(applicant: Applicant) -> dict[Basis, tuple[Material, ...]]:
    """The documents proving each basis the applicant claims."""
    proofs: dict[Basis, tuple[Material, ...]] = {}
    if applicant.employment is not None:
        kind = applicant.employment.kind
        proofs[Basis.EMPLOYMENT] = (Material.INSURANCE_RECORD, _EMPLOYMENT_PROOF[kind])
    home = applicant.residence
    if isinstance(home, OwnHome):
        proofs[Basis.RESIDENCE] = (Material.PROPERTY_CERTIFICATE,)
    elif home is not None:
        filing = (Material.LEASE_FILING,) if home.commercial_housing else ()
        proofs[Basis.RESIDENCE] = (
            Material.LEASE_CONTRACT,
            Material.OWNER_TITLE_CERTIFICATE,
            Material.RENTAL_REGISTRATION,
            *filing,
        )
    if applicant.study is not None:
        proofs[Basis.STUDY] = (
            Material.SCHOOL_ENROLMENT_CERTIFICATE,
            Material.STUDY_CONTINUITY_PROOF,
        )
    return proofs


def check_application(applicant: Applicant, today: date) -> Precheck:
    """Eligible, incomplete or ineligible, with every reason and every missing document."""
    if today < applicant.birth_date:
        raise ValueError("application dated before the applicant's birth")
    minor = today < add_years(applicant.birth_date, MINOR_UNDER_AGE)
    common: set[Reason] = set()
    if applicant.registered_since is None:
        common.add(Reason.NOT_REGISTERED)
    elif add_months(applicant.registered_since, 6) > today:
        common.add(Reason.REGISTERED_UNDER_6_MONTHS)
    if minor:
        common |= _guardians(applicant.guardians, today)

    failures = _basis_failures(applicant, today)
    proofs = required_proofs(applicant)
    brought = applicant.documents
    met = [basis for basis, reasons in failures.items() if not reasons]
    needed = set(GENERAL_MATERIALS) | (set(MINOR_MATERIALS) if minor else set())
    basis: Basis | None = None
    if met:
        basis = min(met, key=lambda b: (len(set(proofs[b]) - brought), list(Basis).index(b)))
        needed |= set(proofs[basis])
        reasons = common
    else:
        needed |= {material for claimed in proofs.values() for material in claimed}
        reasons = common | {r for rs in failures.values() for r in rs}
        if not failures:
            reasons.add(Reason.NO_BASIS)

    missing = tuple(material for material in Material if material in needed - brought)
    ordered = tuple(reason for reason in Reason if reason in reasons)
    if ordered:
        outcome = Eligibility.INELIGIBLE
    elif missing:
        outcome = Eligibility.INCOMPLETE
    else:
        outcome = Eligibility.ELIGIBLE
    return Precheck(outcome, ordered, missing, basis, minor)
