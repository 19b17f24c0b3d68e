"""ListBook: screening a call against every list kind; contains and hits for the API."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dce.compliance.lists import ListBook, ListKind, NumberList, check_scope, number_key
from dce.compliance.numberset import NumberSet
from dce.compliance.verdict import Action, ReasonCode, Verdict

CALLER = "+12125550100"
OTHER = "+13105550100"
DID = "+18005550199"


def nl(list_id: str, kind: ListKind, *numbers: str, scope: str | None = None) -> NumberList:
    return NumberList(list_id, kind, scope, NumberSet.from_e164(numbers))


def book() -> ListBook:
    return ListBook([
        nl("nat", ListKind.DNC_NATIONAL, CALLER),
        nl("ca", ListKind.DNC_STATE, CALLER, scope="CA"),
        nl("tx", ListKind.DNC_STATE, OTHER, scope="TX"),
        nl("int", ListKind.DNC_INTERNAL, OTHER),
        nl("lit", ListKind.LITIGATOR, CALLER),
        nl("bani", ListKind.BLOCKED_ANI, "+14155550100"),
        nl("bdid", ListKind.BLOCKED_DID, DID),
        nl("sup1", ListKind.SUPPRESSION, CALLER, OTHER, scope="buyer-1"),
        nl("sup2", ListKind.SUPPRESSION, CALLER, scope="buyer-2"),
        nl("empty", ListKind.DNC_INTERNAL),
    ])


def test_screen_reports_every_reject_and_the_suppressing_buyers() -> None:
    findings, suppressed = book().screen(CALLER, "+18885550100", "CA")
    codes = [f.code for f in findings]
    assert codes == [ReasonCode.LITIGATOR, ReasonCode.DNC_NATIONAL, ReasonCode.DNC_STATE]
    assert all(f.action is Action.REJECT for f in findings)
    assert suppressed == frozenset({"buyer-1", "buyer-2"})
    verdict = Verdict.of(findings, suppressed_buyers=suppressed)
    assert verdict.action is Action.REJECT
    assert verdict.reason.startswith("litigator")


def test_state_dnc_applies_to_the_callers_state_only() -> None:
    b = book()
    assert [f.code for f in b.screen(CALLER, DID.replace("9", "8"), "TX")[0]] == [
        ReasonCode.LITIGATOR, ReasonCode.DNC_NATIONAL]
    assert ReasonCode.DNC_STATE not in [f.code for f in b.screen(CALLER, "+18885550100", None)[0]]


def test_screen_blocked_did_and_ani_and_a_clean_call() -> None:
    b = book()
    assert [f.code for f in b.screen("+14155550100", DID)[0]] == [ReasonCode.BLOCKED_ANI, ReasonCode.BLOCKED_DID]
    assert b.screen("+16465550100", "+18885550100", "NY") == ([], frozenset())
    assert b.screen(None, "+18885550100") == ([], frozenset())
    assert b.screen("anonymous", "+18885550100") == ([], frozenset())


def test_screen_normalises_non_e164_numbers() -> None:
    findings, suppressed = book().screen("(310) 555-0100", "800-555-0199")
    assert [f.code for f in findings] == [ReasonCode.DNC_INTERNAL, ReasonCode.BLOCKED_DID]
    assert suppressed == {"buyer-1"}


def test_contains_and_hits() -> None:
    b = book()
    assert b.contains(ListKind.DNC_STATE, CALLER)
    assert b.contains("dnc_state", CALLER, "ca")
    assert not b.contains(ListKind.DNC_STATE, CALLER, "TX")
    assert b.contains(ListKind.SUPPRESSION, CALLER, "buyer-2")
    assert not b.contains(ListKind.BLOCKED_ANI, CALLER)
    assert not b.contains(ListKind.DNC_NATIONAL, "junk")
    assert [(h.kind, h.scope, h.list_id) for h in b.hits(CALLER)] == [
        (ListKind.DNC_NATIONAL, None, "nat"),
        (ListKind.DNC_STATE, "CA", "ca"),
        (ListKind.SUPPRESSION, "buyer-1", "sup1"),
        (ListKind.SUPPRESSION, "buyer-2", "sup2"),
        (ListKind.LITIGATOR, None, "lit"),
    ]
    assert b.hits("+19995550100") == []
    assert len(b) == 10


def test_several_lists_of_one_kind_all_count() -> None:
    b = ListBook([nl("a", ListKind.LITIGATOR, CALLER), nl("b", ListKind.LITIGATOR, OTHER)])
    assert [f.detail for f in b.screen(OTHER, DID)[0]] == ["on litigator list b"]


def test_duplicate_ids_are_refused() -> None:
    with pytest.raises(ValueError):
        ListBook([nl("a", ListKind.LITIGATOR), nl("a", ListKind.BLOCKED_ANI)])


def test_check_scope() -> None:
    assert check_scope(ListKind.DNC_STATE, "ca") == "CA"
    assert check_scope(ListKind.DNC_NATIONAL, None) is None
    assert check_scope(ListKind.SUPPRESSION, "buyer-1") == "buyer-1"
    for kind, scope in ((ListKind.DNC_STATE, None), (ListKind.DNC_STATE, "CAL"), (ListKind.SUPPRESSION, ""),
                        (ListKind.LITIGATOR, "x"), (ListKind.SUPPRESSION, "a b")):
        with pytest.raises(ValueError):
            check_scope(kind, scope)


@given(st.sets(st.integers(12_000_000_000, 19_999_999_999), max_size=50),
       st.sets(st.integers(12_000_000_000, 19_999_999_999), max_size=50),
       st.integers(12_000_000_000, 19_999_999_999))
def test_suppression_merge_matches_per_list_membership(a: set[int], b: set[int], probe: int) -> None:
    lists = [NumberList("a", ListKind.SUPPRESSION, "A", NumberSet(a)),
             NumberList("b", ListKind.SUPPRESSION, "B", NumberSet(b))]
    for value in [probe, *a, *b]:
        _findings, suppressed = ListBook(lists).screen(f"+{value}", DID)
        assert suppressed == {name for name, s in (("A", a), ("B", b)) if value in s}


def test_number_key() -> None:
    assert number_key("+12125550100") == 12125550100
    assert number_key("212-555-0100") == 12125550100
    assert number_key("+442079460000") == 442079460000
    assert number_key("abc") is None
    assert number_key("12") is None
