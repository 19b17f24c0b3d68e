"""Postbacks, pure: matching, templating and encoding, signatures, the backoff schedule."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from dce.billing.cdr import CallDetailRecord, Disposition, SaleTerms
from dce.billing.postback import (
    EVENT_HEADER,
    SIGNATURE_HEADER,
    EventName,
    Method,
    OwnerKind,
    PostbackBook,
    PostbackConfig,
    PostbackEvent,
    backoff_delay,
    matching,
    money,
    next_attempt_at,
    render,
    sign,
    signature,
    verify,
)

AT = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
SECRET = "s3cret-key"


def event(name: EventName = EventName.CONVERTED, **overrides: object) -> PostbackEvent:
    fields: dict[str, object] = {
        "name": name, "call_id": "call-1", "at": AT, "caller": "+12125550100", "did": "+18005550199",
        "campaign_id": "camp", "publisher_id": "pub", "buyer_id": "buy", "target_id": "tgt",
        "revenue": 12_500_000, "payout": 7_000_001, "duration": 95, "disposition": "answered", "reason": None,
    }  # fmt: skip
    fields.update(overrides)
    return PostbackEvent(**fields)  # type: ignore[arg-type]


def config(**overrides: object) -> PostbackConfig:
    fields: dict[str, object] = {
        "id": "pb1", "owner_kind": OwnerKind.PUBLISHER, "owner_id": "pub",
        "events": frozenset({EventName.CONVERTED}), "url": "https://example.test/pb?cid=[call_id]",
    }
    fields.update(overrides)
    return PostbackConfig(**fields)  # type: ignore[arg-type]


def test_money_tokens() -> None:
    assert money(12_500_000) == "12.50"
    assert money(1) == "0.000001"
    assert money(0) == "0.00"
    tokens = event().tokens()
    assert tokens["revenue"] == "12.50"
    assert tokens["payout"] == "7.000001"
    assert tokens["timestamp"] == str(int(AT.timestamp()))
    assert tokens["reason"] is None


def test_matching_by_owner_and_event() -> None:
    configs = [
        config(id="a", owner_kind=OwnerKind.CAMPAIGN, owner_id="camp"),
        config(id="b", owner_kind=OwnerKind.PUBLISHER, owner_id="pub"),
        config(id="c", owner_kind=OwnerKind.BUYER, owner_id="buy", events=frozenset({EventName.CONNECTED})),
        config(id="d", owner_kind=OwnerKind.BUYER, owner_id="other"),
        config(id="e", owner_kind=OwnerKind.BUYER, owner_id="buy", enabled=False),
        config(id="f", owner_kind=OwnerKind.PUBLISHER, owner_id="camp"),  # same id, wrong kind
    ]
    assert [c.id for c in matching(configs, event())] == ["a", "b"]
    assert [c.id for c in matching(configs, event(EventName.CONNECTED))] == ["c"]
    assert [c.id for c in matching(configs, event(EventName.CONNECTED, buyer_id="x"))] == []
    assert [c.id for c in PostbackBook(configs).matching(event())] == ["a", "b"]
    assert PostbackBook(configs).matching(event(publisher_id=None, campaign_id=None, buyer_id=None)) == []


def test_get_url_tokens_are_url_encoded_and_unknown_left() -> None:
    cfg = config(url="https://example.test/pb?cid=[call_id]&ani=[caller]&r=[revenue]&e=[event]&x=[nope]&why=[reason]")
    request = render(cfg, event(call_id="a b&c=d/é"))
    assert request.method == "GET"
    assert request.body is None
    query = urlsplit(request.url).query
    assert "ani=%2B12125550100" in query
    assert "x=[nope]" in query  # unknown token untouched
    parsed = parse_qs(query, keep_blank_values=True)
    assert parsed["cid"] == ["a b&c=d/é"]
    assert parsed["r"] == ["12.50"]
    assert parsed["e"] == ["converted"]
    assert parsed["why"] == [""]
    assert request.headers[EVENT_HEADER] == "converted"
    assert SIGNATURE_HEADER not in request.headers  # no secret


def test_post_default_body_is_json_of_all_tokens() -> None:
    request = render(config(method=Method.POST), event())
    assert request.headers["Content-Type"] == "application/json"
    body = json.loads(request.body or "")
    assert body["call_id"] == "call-1"
    assert body["revenue"] == "12.50"
    assert body["duration"] == "95"
    assert body["reason"] is None
    assert set(body) >= {"event", "caller", "did", "campaign_id", "publisher_id", "buyer_id", "target_id",
                         "payout", "disposition", "timestamp"}


def test_post_json_template_is_json_escaped() -> None:
    cfg = config(method="post", body='{"id": "[call_id]", "amount": [revenue], "keep": "[unknown]"}')
    assert cfg.method is Method.POST
    request = render(cfg, event(call_id='he said "hi"\n\\'))
    body = json.loads(request.body or "")
    assert body == {"id": 'he said "hi"\n\\', "amount": 12.5, "keep": "[unknown]"}


def test_post_form_template_is_url_encoded() -> None:
    cfg = config(method=Method.POST, body="call=[call_id]&ani=[caller]")
    request = render(cfg, event(call_id="x&y"))
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert parse_qs(request.body or "") == {"call": ["x&y"], "ani": ["+12125550100"]}


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        config(url="ftp://x")
    with pytest.raises(ValueError):
        config(max_attempts=0)
    with pytest.raises(ValueError):
        config(method=Method.GET, body="x")
    with pytest.raises(ValueError):
        config(events=frozenset({"exploded"}))


def test_signature_of_post_body_verifies() -> None:
    request = render(config(method=Method.POST, secret=SECRET), event(), timestamp=1_700_000_000)
    header = request.headers[SIGNATURE_HEADER]
    assert header.startswith("t=1700000000,v1=")
    assert header.split("v1=")[1] == signature(SECRET, 1_700_000_000, request.body or "")
    assert verify(SECRET, header, request.body or "")
    assert verify(SECRET, header, request.body or "", now=1_700_000_100)
    assert not verify(SECRET, header, request.body or "", now=1_700_001_000)  # too old
    assert not verify("wrong", header, request.body or "")
    assert not verify(SECRET, header, (request.body or "") + " ")
    assert not verify(SECRET, "garbage", request.body or "")


def test_signature_of_get_covers_url_and_resigning_replaces() -> None:
    request = render(config(secret=SECRET), event())
    header = request.headers[SIGNATURE_HEADER]
    assert header.startswith(f"t={int(AT.timestamp())},")
    assert verify(SECRET, header, request.url)
    unsigned = render(config(secret=SECRET), event(), signed=False)
    assert SIGNATURE_HEADER not in unsigned.headers
    later = sign(unsigned, SECRET, 1_800_000_000)
    assert later.headers[SIGNATURE_HEADER].startswith("t=1800000000,")
    assert verify(SECRET, later.headers[SIGNATURE_HEADER], later.url)
    assert SIGNATURE_HEADER not in unsigned.headers  # sign() copies


def test_backoff_schedule_with_seeded_rng() -> None:
    rng = random.Random(42)
    delays = [backoff_delay(n, rng) for n in range(1, 16)]
    nominal = [min(2.0 ** (n - 1), 3600.0) for n in range(1, 16)]
    for delay, expected in zip(delays, nominal, strict=True):
        assert 0.8 * expected <= delay <= min(1.2 * expected, 3600.0)
    assert delays[-1] == 3600.0 or delays[-1] >= 0.8 * 3600
    assert max(delays) <= 3600.0
    again = random.Random(42)
    assert [backoff_delay(n, again) for n in range(1, 16)] == delays  # reproducible
    assert backoff_delay(1, random.Random(1), jitter=0) == 1.0
    assert backoff_delay(4, random.Random(1), jitter=0, base_s=0.05) == pytest.approx(0.4)
    assert backoff_delay(100, random.Random(1), jitter=0) == 3600.0
    when = next_attempt_at(3, AT, random.Random(7), base_s=0.05)
    assert AT + timedelta(seconds=0.16) <= when <= AT + timedelta(seconds=0.24)


def test_event_from_cdr() -> None:
    cdr = CallDetailRecord(
        call_id="c9", a_leg_call_id="a", b_leg_call_id="b", caller="+12125550100", called="+18005550199",
        did="+18005550199", destination="sip:t@x", invite_at=AT, answer_at=AT + timedelta(seconds=5),
        end_at=AT + timedelta(seconds=65), disposition=Disposition.ANSWERED, final_code=200,
        terms=SaleTerms(campaign_id="camp", publisher_id="pub", buyer_id="buy", target_id="tgt", revenue=3_000_000),
    )  # fmt: skip
    ev = PostbackEvent.from_cdr("completed", cdr, payout=1_000_000)
    assert ev.name is EventName.COMPLETED
    assert ev.at == cdr.end_at
    assert ev.duration == 60
    tokens = ev.tokens()
    assert (tokens["revenue"], tokens["payout"], tokens["disposition"]) == ("3.00", "1.00", "answered")
    assert (ev.campaign_id, ev.publisher_id, ev.buyer_id, ev.target_id) == ("camp", "pub", "buy", "tgt")
    with pytest.raises(ValueError):
        PostbackEvent(name=EventName.INCOMING, call_id="x", at=datetime(2026, 1, 1))  # naive
