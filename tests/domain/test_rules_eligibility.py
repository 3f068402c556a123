"""R2/R3 pre-check: every reason, every missing document, in one answer."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.domain.eligibility import (
    GENERAL_MATERIALS,
    MINOR_MATERIALS,
    Applicant,
    Basis,
    Eligibility,
    Employment,
    EmploymentKind,
    Guardian,
    Material,
    OwnerTitle,
    OwnHome,
    Reason,
    Rental,
    SocialInsurance,
    Study,
    check_application,
    required_proofs,
)

D = date.fromisoformat
M, R = Material, Reason
TODAY = D("2024-06-15")
INSURED = SocialInsurance(since=D("2022-01-01"), paid_through=D("2024-06-30"))
JOB = Employment(EmploymentKind.LABOUR_CONTRACT, since=D("2022-01-01"), insurance=INSURED)
LEASE = Rental(
    lease_start=D("2024-01-01"),
    lease_end=D("2024-12-31"),
    owner_title=OwnerTitle.OWNERSHIP,
    police_registered=True,
    commercial_housing=False,
)
SCHOOL = Study(enrolled_since=D("2022-09-01"))
PARENT = Guardian(holds_permit=True, insurance=INSURED)
GENERAL = frozenset(GENERAL_MATERIALS)
ADULT = Applicant(
    birth_date=D("1990-05-01"),
    registered_since=D("2023-01-01"),
    employment=JOB,
    documents=GENERAL | {M.INSURANCE_RECORD, M.LABOUR_CONTRACT},
)
RENTER = replace(
    ADULT,
    employment=None,
    residence=LEASE,
    documents=GENERAL | {M.LEASE_CONTRACT, M.OWNER_TITLE_CERTIFICATE, M.RENTAL_REGISTRATION},
)
PUPIL = Applicant(
    birth_date=D("2012-03-01"),
    registered_since=D("2023-01-01"),
    study=SCHOOL,
    guardians=(PARENT, replace(PARENT, insurance=None)),
    documents=GENERAL
    | set(MINOR_MATERIALS)
    | {M.SCHOOL_ENROLMENT_CERTIFICATE, M.STUDY_CONTINUITY_PROOF},
)


@pytest.mark.parametrize("applicant", [ADULT, RENTER, PUPIL])
def test_complete_applications_are_eligible(applicant: Applicant) -> None:
    result = check_application(applicant, TODAY)
    assert (result.outcome, result.reasons, result.missing) == (Eligibility.ELIGIBLE, (), ())


# one reason at a time: the applicant, and the single reason it must give
REASONS = [
    (replace(ADULT, registered_since=None), R.NOT_REGISTERED),
    (replace(ADULT, registered_since=D("2024-01-01")), R.REGISTERED_UNDER_6_MONTHS),
    (replace(ADULT, employment=None), R.NO_BASIS),
    (replace(ADULT, employment=replace(JOB, insurance=None)), R.NO_SOCIAL_INSURANCE),
    (
        replace(ADULT, employment=replace(JOB, insurance=replace(INSURED, since=D("2023-07-01")))),
        R.INSURANCE_UNDER_1_YEAR,
    ),
    (
        replace(
            ADULT,
            employment=replace(JOB, insurance=replace(INSURED, back_paid_through=D("2023-08-31"))),
        ),
        R.INSURANCE_BACK_PAID,
    ),
    (
        replace(
            ADULT, employment=replace(JOB, insurance=replace(INSURED, paid_through=D("2024-05-31")))
        ),
        R.INSURANCE_NOT_CURRENT,
    ),
    (
        replace(
            ADULT, employment=replace(JOB, insurance=replace(INSURED, in_urban_districts=False))
        ),
        R.INSURANCE_OUTSIDE_URBAN_DISTRICTS,
    ),
    (replace(ADULT, employment=replace(JOB, since=D("2023-07-01"))), R.EMPLOYMENT_UNDER_1_YEAR),
    (replace(ADULT, employment=replace(JOB, until=D("2024-06-14"))), R.EMPLOYMENT_NOT_CURRENT),
    (
        replace(ADULT, employment=replace(JOB, in_urban_districts=False)),
        R.EMPLOYMENT_OUTSIDE_URBAN_DISTRICTS,
    ),
    (replace(RENTER, residence=replace(LEASE, lease_end=D("2024-12-30"))), R.LEASE_UNDER_1_YEAR),
    (
        replace(
            RENTER,
            residence=replace(LEASE, lease_start=D("2022-01-01"), lease_end=D("2024-06-14")),
        ),
        R.LEASE_NOT_CURRENT,
    ),
    (
        replace(RENTER, residence=replace(LEASE, owner_title=OwnerTitle.NONE)),
        R.OWNER_WITHOUT_TITLE,
    ),
    (
        replace(RENTER, residence=replace(LEASE, police_registered=False)),
        R.RENTAL_NOT_REGISTERED,
    ),
    (replace(PUPIL, study=replace(SCHOOL, enrolled_since=D("2023-09-01"))), R.STUDY_UNDER_1_YEAR),
    (replace(PUPIL, study=replace(SCHOOL, full_time=False)), R.STUDY_NOT_FULL_TIME),
    (
        replace(PUPIL, study=replace(SCHOOL, in_urban_districts=False)),
        R.SCHOOL_OUTSIDE_URBAN_DISTRICTS,
    ),
    (replace(PUPIL, guardians=()), R.NO_GUARDIAN),
    (
        replace(PUPIL, guardians=(PARENT, Guardian(holds_permit=False))),
        R.GUARDIAN_WITHOUT_PERMIT,
    ),
    (
        replace(
            PUPIL, guardians=(replace(PARENT, insurance=replace(INSURED, since=D("2023-07-01"))),)
        ),
        R.GUARDIAN_INSURANCE_UNDER_1_YEAR,
    ),
    (
        replace(
            PUPIL,
            guardians=(replace(PARENT, insurance=replace(INSURED, in_urban_districts=False)),),
        ),
        R.GUARDIAN_INSURANCE_UNDER_1_YEAR,
    ),
    (
        replace(PUPIL, guardians=(replace(PARENT, insurance=None),)),
        R.GUARDIAN_INSURANCE_UNDER_1_YEAR,
    ),
]


@pytest.mark.parametrize(("applicant", "reason"), REASONS)
def test_each_reason(applicant: Applicant, reason: Reason) -> None:
    result = check_application(applicant, TODAY)
    assert (result.outcome, result.reasons, result.missing) == (
        Eligibility.INELIGIBLE,
        (reason,),
        (),
    )


def test_every_reason_is_tested_and_described() -> None:
    assert {reason for _, reason in REASONS} == set(Reason)
    assert all(reason.description.endswith(".") for reason in Reason)
    assert all(material.description.endswith(".") for material in Material)
    assert Reason.NOT_REGISTERED.value == "not_registered"  # values go into events and UIs
    assert Material.LEASE_FILING.value == "lease_filing"


def test_guardians_may_count_back_paid_insurance() -> None:
    back_paid = replace(INSURED, back_paid_through=D("2023-12-31"))
    pupil = replace(PUPIL, guardians=(replace(PARENT, insurance=back_paid),))
    assert check_application(pupil, TODAY).outcome is Eligibility.ELIGIBLE


def test_ineligible_lists_every_reason_and_still_what_is_missing() -> None:
    applicant = replace(
        ADULT,
        registered_since=D("2024-03-01"),
        employment=replace(JOB, since=D("2024-01-01"), insurance=None),
        documents=frozenset({M.PHOTO}),
    )
    result = check_application(applicant, TODAY)
    assert result.outcome is Eligibility.INELIGIBLE
    assert result.reasons == (
        R.REGISTERED_UNDER_6_MONTHS,
        R.NO_SOCIAL_INSURANCE,
        R.EMPLOYMENT_UNDER_1_YEAR,
    )
    assert result.missing == (
        M.APPLICATION_FORM,
        M.ID_DOCUMENT,
        M.INSURANCE_RECORD,
        M.LABOUR_CONTRACT,
    )
    assert result.basis is None


def test_everything_missing_comes_in_one_answer() -> None:
    pupil = replace(PUPIL, study=None, residence=replace(LEASE, commercial_housing=True))
    result = check_application(replace(pupil, documents=frozenset()), TODAY)
    assert result.outcome is Eligibility.INCOMPLETE
    assert result.reasons == ()
    assert result.basis is Basis.RESIDENCE
    assert result.minor
    assert result.missing == (
        M.APPLICATION_FORM,
        M.ID_DOCUMENT,
        M.PHOTO,
        M.LEASE_CONTRACT,
        M.OWNER_TITLE_CERTIFICATE,
        M.RENTAL_REGISTRATION,
        M.LEASE_FILING,
        M.GUARDIAN_PERMITS,
        M.GUARDIAN_INSURANCE_PROOF,
    )


def test_a_met_basis_stands_alone_and_asks_for_the_fewest_documents() -> None:
    failing_job = replace(JOB, since=D("2024-01-01"))
    both = replace(RENTER, employment=failing_job)
    result = check_application(both, TODAY)
    assert (result.outcome, result.basis, result.reasons) == (
        Eligibility.ELIGIBLE,
        Basis.RESIDENCE,
        (),
    )
    # both met, the residence proofs brought: residence is chosen, nothing missing
    assert check_application(replace(RENTER, employment=JOB), TODAY).outcome is Eligibility.ELIGIBLE
    # both met, nothing brought: employment (2 proofs) before residence (3)
    bare = replace(RENTER, employment=JOB, documents=GENERAL)
    result = check_application(bare, TODAY)
    assert (result.basis, result.missing) == (
        Basis.EMPLOYMENT,
        (M.INSURANCE_RECORD, M.LABOUR_CONTRACT),
    )


@pytest.mark.parametrize(
    ("kind", "proof"),
    [
        (EmploymentKind.LABOUR_CONTRACT, M.LABOUR_CONTRACT),
        (EmploymentKind.OWN_COMPANY, M.BUSINESS_LICENCE),
        (EmploymentKind.INDIVIDUAL_BUSINESS, M.INDIVIDUAL_BUSINESS_LICENCE),
        (EmploymentKind.FARM_LEASE, M.FARM_LEASE_CONTRACT),
        (EmploymentKind.OTHER_SELF_EMPLOYMENT, M.SELF_EMPLOYMENT_PROOF),
    ],
)
def test_each_kind_of_employment_needs_its_own_proof(kind: EmploymentKind, proof: Material) -> None:
    applicant = replace(ADULT, employment=replace(JOB, kind=kind), documents=GENERAL)
    result = check_application(applicant, TODAY)
    assert (result.outcome, result.missing) == (Eligibility.INCOMPLETE, (M.INSURANCE_RECORD, proof))


def test_own_home_needs_its_certificate() -> None:
    owner = replace(ADULT, employment=None, residence=OwnHome(), documents=GENERAL)
    assert check_application(owner, TODAY).missing == (M.PROPERTY_CERTIFICATE,)


LEAP_WORKER = replace(
    ADULT,
    registered_since=D("2019-01-01"),
    employment=replace(
        JOB, since=D("2020-02-29"), insurance=replace(INSURED, since=D("2019-01-01"))
    ),
)
# boundaries: (applicant, today, outcome)
BOUNDARIES = [
    # 6 months of registration, from 31 August: met on 29 February in a leap year
    (replace(ADULT, registered_since=D("2023-08-31")), "2024-02-28", Eligibility.INELIGIBLE),
    (replace(ADULT, registered_since=D("2023-08-31")), "2024-02-29", Eligibility.ELIGIBLE),
    (replace(ADULT, registered_since=D("2023-12-15")), "2024-06-14", Eligibility.INELIGIBLE),
    (replace(ADULT, registered_since=D("2023-12-15")), "2024-06-15", Eligibility.ELIGIBLE),
    # 1 year of work from 29 February: met on 28 February of a common year
    (LEAP_WORKER, "2021-02-27", Eligibility.INELIGIBLE),
    (LEAP_WORKER, "2021-02-28", Eligibility.ELIGIBLE),
    # 1 year of insurance from 1 March across a leap February
    (
        replace(ADULT, employment=replace(JOB, insurance=replace(INSURED, since=D("2023-03-01")))),
        "2024-02-29",
        Eligibility.INELIGIBLE,
    ),
    (
        replace(ADULT, employment=replace(JOB, insurance=replace(INSURED, since=D("2023-03-01")))),
        "2024-03-01",
        Eligibility.ELIGIBLE,
    ),
    # a lease of one year ends the day before the anniversary of its start
    (
        replace(
            RENTER, residence=replace(LEASE, lease_start=D("2024-02-29"), lease_end=D("2025-02-27"))
        ),
        "2024-06-15",
        Eligibility.ELIGIBLE,
    ),
    (
        replace(
            RENTER, residence=replace(LEASE, lease_start=D("2024-02-29"), lease_end=D("2025-02-26"))
        ),
        "2024-06-15",
        Eligibility.INELIGIBLE,
    ),
    (
        replace(
            RENTER, residence=replace(LEASE, lease_start=D("2023-03-01"), lease_end=D("2024-02-29"))
        ),
        "2024-02-01",
        Eligibility.ELIGIBLE,
    ),
    (
        replace(
            RENTER, residence=replace(LEASE, lease_start=D("2023-03-01"), lease_end=D("2024-02-28"))
        ),
        "2024-02-01",
        Eligibility.INELIGIBLE,
    ),
    # 1 year of study
    (
        replace(PUPIL, study=replace(SCHOOL, enrolled_since=D("2023-06-15"))),
        "2024-06-14",
        Eligibility.INELIGIBLE,
    ),
    (
        replace(PUPIL, study=replace(SCHOOL, enrolled_since=D("2023-06-15"))),
        "2024-06-15",
        Eligibility.ELIGIBLE,
    ),
]


@pytest.mark.parametrize(("applicant", "today", "outcome"), BOUNDARIES)
def test_period_boundaries(applicant: Applicant, today: str, outcome: Eligibility) -> None:
    assert check_application(applicant, D(today)).outcome is outcome


@pytest.mark.parametrize(
    ("birth", "today", "minor"),
    [
        ("2008-02-29", "2024-02-28", True),
        ("2008-02-29", "2024-02-29", False),
        ("2007-03-01", "2023-02-28", True),
        ("2007-03-01", "2023-03-01", False),
        ("2024-06-15", "2024-06-15", True),
    ],
)
def test_under_16_is_a_minor(birth: str, today: str, minor: bool) -> None:
    applicant = replace(PUPIL, birth_date=D(birth), registered_since=D("2020-01-01"))
    result = check_application(applicant, D(today))
    assert result.minor is minor


def test_an_adult_needs_no_guardian_documents() -> None:
    adult = replace(PUPIL, birth_date=D("2000-01-01"), guardians=())
    result = check_application(
        replace(adult, documents=adult.documents - set(MINOR_MATERIALS)), TODAY
    )
    assert (result.outcome, result.minor) == (Eligibility.ELIGIBLE, False)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown document"):
        Applicant(D("1990-01-01"), None, documents=frozenset({"passport"}))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="before the applicant's birth"):
        check_application(ADULT, D("1980-01-01"))
    with pytest.raises(ValueError, match="lease ends before"):
        replace(LEASE, lease_end=D("2023-12-31"))
    with pytest.raises(ValueError, match="employment ends before"):
        replace(JOB, until=D("2021-12-31"))
    with pytest.raises(ValueError, match="social insurance ends before"):
        replace(INSURED, paid_through=D("2021-12-31"))


def test_documents_given_as_strings_become_materials() -> None:
    as_text = frozenset(str(m) for m in ADULT.documents)
    applicant = replace(ADULT, documents=as_text)  # type: ignore[arg-type]
    assert all(type(m) is Material for m in applicant.documents)
    assert check_application(applicant, TODAY).outcome is Eligibility.ELIGIBLE


# --- properties -------------------------------------------------------------------------

bases = st.one_of(
    st.builds(
        lambda kind: {"employment": replace(JOB, kind=kind)}, st.sampled_from(EmploymentKind)
    ),
    st.just({"residence": OwnHome()}),
    st.builds(lambda c: {"residence": replace(LEASE, commercial_housing=c)}, st.booleans()),
    st.just({"study": SCHOOL}),
)


@st.composite
def eligible_facts(draw: st.DrawFn) -> tuple[Applicant, frozenset[Material]]:
    """An applicant whose facts pass, on one basis, and exactly the documents it needs."""
    minor = draw(st.booleans())
    applicant = Applicant(
        birth_date=D("2012-03-01") if minor else D("1990-05-01"),
        registered_since=D("2023-01-01"),
        guardians=(PARENT,) if minor else (),
        **draw(bases),
    )
    (proofs,) = required_proofs(applicant).values()
    needed = GENERAL | set(proofs) | (set(MINOR_MATERIALS) if minor else set())
    return applicant, frozenset(needed)


@given(eligible_facts(), st.data())
def test_removing_any_one_document_lists_exactly_it(
    case: tuple[Applicant, frozenset[Material]], data: st.DataObject
) -> None:
    applicant, needed = case
    assert (
        check_application(replace(applicant, documents=needed), TODAY).outcome
        is Eligibility.ELIGIBLE
    )
    gone = data.draw(st.sampled_from(sorted(needed)))
    result = check_application(replace(applicant, documents=needed - {gone}), TODAY)
    assert (result.outcome, result.missing, result.reasons) == (Eligibility.INCOMPLETE, (gone,), ())


@given(eligible_facts(), st.frozensets(st.sampled_from(Material)))
def test_missing_is_exactly_what_is_needed_and_not_brought(
    case: tuple[Applicant, frozenset[Material]], brought: frozenset[Material]
) -> None:
    applicant, needed = case
    result = check_application(replace(applicant, documents=brought), TODAY)
    assert set(result.missing) == needed - brought
    assert list(result.missing) == sorted(result.missing, key=list(Material).index)
    assert (result.outcome is Eligibility.ELIGIBLE) == (needed <= brought)
