"""Targeting criteria: equals/in/regex/exists, negation, tags; the generated predicate agrees with the reference."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dce.routing.criteria import compile_criteria, compile_criterion, compile_predicate, matches, matches_all
from dce.routing.model import CallerContext, Criterion, CriterionOp

NY_CALLER = CallerContext(
    ani="+12125551234", did="+18005550100", state="NY", area_code="212", zip="10001", tags=(("source", "web"),)
)
ANON = CallerContext(ani=None, did="+18005550100")
OPS = CriterionOp


@pytest.mark.parametrize(
    ("criterion", "ny", "anon"),
    [
        (Criterion("state", OPS.EQUALS, ("NY",)), True, False),
        (Criterion("state", OPS.EQUALS, ("ny",)), True, False),
        (Criterion("state", OPS.EQUALS, ("NJ",)), False, False),
        (Criterion("state", OPS.IN, ("NJ", "NY")), True, False),
        (Criterion("state", OPS.IN, ("NJ", "CT"), negate=True), True, True),
        (Criterion("zip", OPS.REGEX, (r"^100\d\d$",)), True, False),
        (Criterion("zip", OPS.REGEX, (r"^9",)), False, False),
        (Criterion("area_code", OPS.IN, ("212", "646")), True, False),
        (Criterion("area_code", OPS.EXISTS), True, False),
        (Criterion("area_code", OPS.EXISTS, negate=True), False, True),
        (Criterion("tag:source", OPS.EQUALS, ("web",)), True, False),
        (Criterion("tag:Source", OPS.IN, ("tv", "web")), True, False),
        (Criterion("tag:source", OPS.REGEX, ("^w",)), True, False),
        (Criterion("tag:source", OPS.EXISTS), True, False),
        (Criterion("tag:vertical", OPS.EXISTS), False, False),
        (Criterion("tag:vertical", OPS.EXISTS, negate=True), True, True),
    ],
)
def test_criterion(criterion: Criterion, ny: bool, anon: bool) -> None:
    compiled = compile_criterion(criterion)
    predicate = compile_predicate((compiled,))
    assert predicate is not None
    assert matches(compiled, NY_CALLER) is ny and predicate(NY_CALLER) is ny
    assert matches(compiled, ANON) is anon and predicate(ANON) is anon


def test_all_must_match_and_none_matches_everything() -> None:
    both = compile_criteria([Criterion("state", OPS.EQUALS, ("NY",)), Criterion("zip", OPS.EQUALS, ("90210",))])
    assert not matches_all(both, NY_CALLER)
    assert matches_all((), ANON)
    assert compile_predicate(()) is None


def test_multi_valued_tag_matches_any_value() -> None:
    ctx = CallerContext(ani=None, did="x", tags=(("lang", "en"), ("lang", "es")))
    c = compile_criterion(Criterion("tag:lang", OPS.EQUALS, ("es",)))
    assert matches(c, ctx)
    assert compile_predicate((c,))(ctx)  # type: ignore[misc]


@pytest.mark.parametrize(
    "bad",
    [
        Criterion("city", OPS.EQUALS, ("x",)),
        Criterion("zip", OPS.REGEX, ("(",)),
        Criterion("zip", OPS.IN, ()),
        Criterion("tag:", OPS.EXISTS),
    ],
)
def test_invalid_criteria_rejected(bad: Criterion) -> None:
    with pytest.raises(ValueError):
        compile_criterion(bad)


_values = st.sampled_from(["NY", "CA", "212", "415", "10001", "web", "tv", ""])
_criteria = st.builds(
    Criterion,
    field=st.sampled_from(["state", "zip", "area_code", "tag:source", "tag:lang"]),
    op=st.sampled_from(list(CriterionOp)),
    values=st.lists(_values, min_size=1, max_size=3).map(tuple),
    negate=st.booleans(),
)
_contexts = st.builds(
    CallerContext,
    ani=st.none(),
    did=st.just("+18005550100"),
    state=st.sampled_from([None, "NY", "CA"]),
    area_code=st.sampled_from([None, "212", "415"]),
    zip=st.sampled_from([None, "10001", "94105"]),
    tags=st.lists(st.tuples(st.sampled_from(["source", "lang"]), _values), max_size=3).map(tuple),
)


@given(st.lists(_criteria, max_size=4), _contexts)
def test_generated_predicate_agrees_with_reference(criteria: list[Criterion], ctx: CallerContext) -> None:
    compiled = compile_criteria(criteria)
    predicate = compile_predicate(compiled)
    expected = matches_all(compiled, ctx)
    assert (predicate(ctx) if predicate is not None else True) is expected
