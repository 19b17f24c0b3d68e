"""Targeting criteria: compiled once per target, evaluated against a CallerContext per call.

Fields: ``state``, ``zip``, ``area_code``, ``tag:<name>`` (a tag may have several values; a criterion matches when
any value does). Ops: ``equals`` (any of ``values``), ``in`` (frozenset), ``regex`` (``re.search`` on any of
``values`` joined as alternatives; anchor with ^$ yourself), ``exists``. A missing value fails every op except a
negated one. ``negate`` inverts the result. ``state`` comparisons are case-insensitive (values upper-cased).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from types import CodeType
from typing import TypeVar

from dce.routing.model import CallerContext, Criterion, CriterionOp

_PLAIN_FIELDS = ("state", "zip", "area_code")
T = TypeVar("T")
S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class CompiledCriterion:
    """A criterion ready to evaluate: field split, values as a frozenset, regex compiled."""

    field: str  # state | zip | area_code | tag
    tag: str | None  # lower-cased tag name for field "tag"
    op: CriterionOp
    values: frozenset[str]
    pattern: re.Pattern[str] | None
    negate: bool


def compile_criterion(c: Criterion) -> CompiledCriterion:
    """Compile one criterion; ValueError for an unknown field/op or a bad regex."""
    tag: str | None = None
    if c.field.startswith("tag:") and len(c.field) > 4:
        field, tag = "tag", c.field[4:].lower()
    elif c.field in _PLAIN_FIELDS:
        field = c.field
    else:
        raise ValueError(f"criterion field {c.field!r}: expected state, zip, area_code or tag:<name>")
    op = CriterionOp(c.op)
    values = tuple(v.upper() for v in c.values) if field == "state" else tuple(c.values)
    pattern = None
    if op is CriterionOp.REGEX:
        if not values:
            raise ValueError(f"criterion {c.field}: regex needs a pattern")
        try:
            pattern = re.compile("|".join(f"(?:{v})" for v in values))
        except re.error as exc:
            raise ValueError(f"criterion {c.field}: bad regex: {exc}") from None
    elif op in (CriterionOp.EQUALS, CriterionOp.IN) and not values:
        raise ValueError(f"criterion {c.field}: {op} needs values")
    return CompiledCriterion(field, tag, op, frozenset(values), pattern, c.negate)


def compile_criteria(criteria: Iterable[Criterion]) -> tuple[CompiledCriterion, ...]:
    """Compile a target's criteria."""
    return tuple(compile_criterion(c) for c in criteria)


def _values(c: CompiledCriterion, ctx: CallerContext) -> tuple[str, ...]:
    if c.field == "tag":
        return tuple(v for k, v in ctx.tags if k == c.tag)
    value = getattr(ctx, c.field)
    if value is None:
        return ()
    return (value.upper(),) if c.field == "state" else (value,)


def matches(c: CompiledCriterion, ctx: CallerContext) -> bool:
    """Whether ``ctx`` satisfies one compiled criterion."""
    values = _values(c, ctx)
    op = c.op
    if op is CriterionOp.EXISTS:
        hit = bool(values)
    elif op is CriterionOp.REGEX:
        pattern = c.pattern
        assert pattern is not None
        hit = any(pattern.search(v) is not None for v in values)
    else:
        allowed = c.values
        hit = any(v in allowed for v in values)
    return hit is not c.negate


def matches_all(criteria: tuple[CompiledCriterion, ...], ctx: CallerContext) -> bool:
    """Whether ``ctx`` satisfies every criterion (true when there are none)."""
    for c in criteria:  # noqa: SIM110 - a plain loop: no generator on the hot path
        if not matches(c, ctx):
            return False
    return True


Predicate = Callable[[CallerContext], bool]


def _tag_exists(tags: tuple[tuple[str, str], ...], name: str) -> bool:
    for k, _v in tags:  # noqa: SIM110 - plain loops: no generator on the hot path
        if k == name:
            return True
    return False


def _tag_in(tags: tuple[tuple[str, str], ...], name: str, allowed: frozenset[str]) -> bool:
    for k, v in tags:  # noqa: SIM110
        if k == name and v in allowed:
            return True
    return False


def _tag_search(tags: tuple[tuple[str, str], ...], name: str, search: Callable[[str], object]) -> bool:
    for k, v in tags:  # noqa: SIM110
        if k == name and search(v) is not None:
            return True
    return False


def _test(c: CompiledCriterion, name: str, namespace: dict[str, object]) -> str:
    """A Python expression (over locals ``f_state``, ``f_zip``, ``f_area_code``, ``tags``) true when ``c`` holds."""
    values = c.values
    if c.field == "state":  # build_context gives upper case; accept other producers' spelling too
        values = frozenset(v for s in values for v in (s, s.lower(), s.capitalize()))
    namespace[f"V{name}"] = values
    namespace[f"N{name}"] = c.tag
    namespace[f"S{name}"] = c.pattern.search if c.pattern is not None else None
    if c.field == "tag":
        expr = {
            CriterionOp.EXISTS: f"_tag_exists(tags, N{name})",
            CriterionOp.REGEX: f"_tag_search(tags, N{name}, S{name})",
        }.get(c.op, f"_tag_in(tags, N{name}, V{name})")
    elif c.op is CriterionOp.EXISTS:
        expr = f"f_{c.field} is not None"
    elif c.op is CriterionOp.REGEX:
        expr = f"(f_{c.field} is not None and S{name}(f_{c.field}) is not None)"
    else:
        expr = f"f_{c.field} in V{name}"
    return f"not ({expr})" if c.negate else f"({expr})"


_PROLOGUE = "    f_state = ctx.state\n    f_zip = ctx.zip\n    f_area_code = ctx.area_code\n    tags = ctx.tags\n"


@lru_cache(maxsize=4096)
def _compiled(source: str) -> CodeType:
    """Compiled generated source; campaigns with the same criteria shapes share it (constants are in globals)."""
    return compile(source, "<routing criteria>", "exec")


def _namespace() -> dict[str, object]:
    return {"_tag_exists": _tag_exists, "_tag_in": _tag_in, "_tag_search": _tag_search}


def compile_predicate(criteria: tuple[CompiledCriterion, ...]) -> Predicate | None:
    """One generated function testing every criterion (same semantics as ``matches_all``); None if there are none."""
    if not criteria:
        return None
    namespace = _namespace()
    tests = " and ".join(_test(c, str(i), namespace) for i, c in enumerate(criteria))
    source = f"def _predicate(ctx):\n{_PROLOGUE}    return {tests}\n"
    exec(_compiled(source), namespace)
    return namespace["_predicate"]  # type: ignore[return-value]


def compile_filter(
    items: Sequence[tuple[T, tuple[CompiledCriterion, ...], S | None]],
) -> Callable[[CallerContext, int], tuple[list[T], list[S]]]:
    """One generated function for a whole campaign: ``f(ctx, mask)`` -> (items whose bit is set in ``mask`` (bit
    i = item i) and whose criteria ``ctx`` satisfies, in order; the ``side`` values of those that have one).

    The hot path then pays one call per call, not one per target; every field is read from ``ctx`` once.
    """
    namespace = _namespace()
    lines = ["def _filter(ctx, mask):\n", _PROLOGUE, "    out = []\n    side = []\n"]
    for i, (item, criteria, extra) in enumerate(items):
        namespace[f"T{i}"] = item
        namespace[f"X{i}"] = extra
        tests = "".join(f" and {_test(c, f'{i}_{j}', namespace)}" for j, c in enumerate(criteria))
        also = f"\n        side.append(X{i})" if extra is not None else ""
        lines.append(f"    if mask & {1 << i}{tests}:\n        out.append(T{i}){also}\n")
    lines.append("    return out, side\n")
    exec(_compiled("".join(lines)), namespace)
    return namespace["_filter"]  # type: ignore[return-value]
