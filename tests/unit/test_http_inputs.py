"""dce.http_api.inputs: which text can be stored, and which field of a JSON body is named when it cannot."""

from __future__ import annotations

from typing import Any

import pytest

from dce.http_api.inputs import check_strings, text_problem
from dce.http_api.problems import ProblemError


@pytest.mark.parametrize("text", ["", "plain", "ünïcödé ☎", "\U0001f4de", "tab\tnew\nline"])
def test_storable_text(text: str) -> None:
    assert text_problem(text) is None


@pytest.mark.parametrize(("text", "word"), [("a\x00b", "NUL"), ("\x00", "NUL"), ("a\ud800", "surrogate"),
                                            ("\udfff", "surrogate")])
def test_unstorable_text(text: str, word: str) -> None:
    reason = text_problem(text)
    assert reason is not None and word in reason


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ("\x00", "body"),
        (["ok", "\x00"], "body[1]"),
        ({"name": "\x00"}, "name"),
        ({"a": {"b": [1, {"c": "x\ud800"}]}}, "a.b[1].c"),
        ({"a": {"k\x00": 1}}, "a"),
        ({"\x00": 1}, "body"),
    ],
)
def test_check_strings_names_the_field(value: Any, name: str) -> None:
    with pytest.raises(ProblemError) as caught:
        check_strings(value)
    assert caught.value.status == 422
    assert caught.value.extra["invalid_params"][0]["name"] == name


def _nested(leaf: str, depth: int) -> Any:
    value: Any = leaf
    for _ in range(depth):
        value = [value]
    return value


DEPTH = 100_000  # far past the recursion limit: the walk is iterative


def test_check_strings_accepts_clean_values_of_any_depth() -> None:
    assert check_strings({"numbers": ["+13125550199"], "n": 1, "ok": True, "none": None,
                          "deep": _nested("leaf", DEPTH)}) is None


def test_check_strings_walks_to_the_deepest_leaf() -> None:
    """The walk that accepts the clean document above reaches its last level: the same depth with a NUL at the
    bottom is refused, and the field named is that leaf."""
    with pytest.raises(ProblemError) as caught:
        check_strings({"numbers": ["+13125550199"], "deep": _nested("x\x00", DEPTH)})
    assert caught.value.status == 422
    assert caught.value.extra["invalid_params"][0]["name"] == "deep" + "[0]" * DEPTH
