"""dce.regions: one table of North American state/province codes, and routing and compliance agreeing on it."""

from __future__ import annotations

import phonenumbers
import pytest
from phonenumbers import geocoder

from dce.compliance.tcpa import number_place
from dce.regions import CODES, STATE_CODES, state_of, states_of
from dce.routing.context import caller_geo


@pytest.mark.parametrize(
    ("description", "states"),
    [
        ("Miami, FL", ("FL",)),
        ("Florida", ("FL",)),
        ("Washington State", ("WA",)),
        ("Guam", ("GU",)),
        ("Québec", ("QC",)),
        ("Nova Scotia/Prince Edward Island", ("NS", "PE")),
        ("Northwest Territories/Nunavut/Yukon", ("NT", "NU", "YT")),
        ("Jamaica", ()),
        ("Springfield, XX", ()),
        ("", ()),
    ],
)
def test_states_of_a_geocoder_description(description: str, states: tuple[str, ...]) -> None:
    assert states_of(description) == states
    assert state_of(description) == (states[0] if len(states) == 1 else None)


def test_every_code_is_two_capital_letters() -> None:
    assert all(len(code) == 2 and code.isalpha() and code.isupper() for code in CODES)
    assert set(STATE_CODES.values()) == CODES


def _one_valid_number_per_area_code() -> list[str]:
    numbers = []
    for area_code in range(200, 1000):
        for subscriber in ("2345678", "5550100", "4567890"):
            number = f"+1{area_code}{subscriber}"
            if phonenumbers.is_valid_number(phonenumbers.parse(number, None)):
                numbers.append(number)
                break
    return numbers


def test_routing_and_calling_hours_agree_on_every_area_code() -> None:
    """The caller's state (routing criteria) and the callee's state (TCPA hours) come from the same table: for
    every North American area code, routing's state is the one TCPA finds when TCPA finds exactly one."""
    numbers = _one_valid_number_per_area_code()
    assert len(numbers) > 300  # the NANP's area codes, not a handful
    disagree = []
    for number in numbers:
        routing_state = caller_geo(number)[0]
        tcpa_states = number_place(number).states
        expected = tcpa_states[0] if len(tcpa_states) == 1 else None
        if routing_state != expected:
            disagree.append((number, routing_state, tcpa_states))
    assert disagree == []


def test_every_us_and_canadian_area_code_description_is_known() -> None:
    """Every whole-area-code description the geocoder gives a US or Canadian number maps to codes."""
    unknown = set()
    for number in _one_valid_number_per_area_code():
        parsed = phonenumbers.parse(number, None)
        if phonenumbers.region_code_for_number(parsed) not in {"US", "CA", "PR", "GU", "AS", "MP", "VI"}:
            continue
        description = geocoder.description_for_number(parsed, "en")
        if description and description != "Canada" and not states_of(description):
            unknown.add(description)
    assert unknown == set()
