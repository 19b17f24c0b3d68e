"""``/api/v1`` conversions webhook and the ledger.

::

    POST /conversions          {call_id, revenue?}            -> 201 {call_id, source, revenue, at, state, settlement}
                               404 unknown call; 409 a second conversion; 422 a call that was not sold
    POST /ledger/deposits      {buyer_id, amount, key?, actor?, memo?}       -> 201 the entry (200: key already posted)
    POST /ledger/adjustments   {account, amount, reason, actor, key?}        -> 201 the entry
                               amount signed: > 0 credits the account (adds to a buyer's funds or a publisher's
                               payable), < 0 debits it; exchange:adjustments takes the other side
    POST /ledger/refunds       {call_id, reason, actor}       -> 201 the reversal of the call's sale
                               404 unknown call; 409 nothing to refund, or refunded already
    POST /ledger/payments      {publisher_id, amount, key?, actor?, memo?}   -> 201 the entry
    GET  /ledger/balances?account=      -> 200 {"items": [{account, balance, raw, [credit_limit, available]}]}
    GET  /ledger/entries?account=&limit=&offset=  -> 200 {"items": [entry...], total, limit, offset} newest first
    GET  /ledger/verify                 -> 200 {ok, entries, lines, total, unbalanced_entries, mismatches}

Tenants: a buyer's or seller's principal reads only its own account (``buyer:<id>`` / ``publisher:<id>``): the
balances list holds that one account, entries are those touching it with only its own lines shown (never the
other side's price), and asking for another account answers 404. ``/ledger/verify`` is admin-only.

Money in and out as decimal strings of currency units (``"12.50"``, at most 6 decimal places; a JSON number is
a 422 saying to send the string: :mod:`dce.http_api.money`). Line amounts are signed, debit positive. A balance
shows both signs on purpose: ``raw`` is the sum of the account's lines (debit positive, as the journal stores
them), ``balance`` the same amount on the account's normal side, as its owner reads it: a buyer's funds, a
publisher's payable and the exchange's revenue are credit-normal (``balance = -raw``: a deposit of 100.00 shows
``balance`` "100.00", ``raw`` "-100.00"), exchange:cash is debit-normal (``balance = raw``). Bad input -> 422
problem+json naming the field in ``invalid_params``.

Every body is one of the models below (:class:`~dce.http_api.inputs.ParameterBody`): what they accept is what the
OpenAPI document shows. After every post the exchange hears of it (:class:`~dce.http_api.changes.Changes`:
``ledger`` so the routing balance snapshot reloads, ``converted`` for a call the webhook converted at once).
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from aiohttp import web
from pydantic import BeforeValidator, Field
from sqlalchemy import select

from dce.billing import ledger
from dce.db import ledger_repository as repo
from dce.db import settlement
from dce.db.marketplace_models import BuyerRow, PublisherRow
from dce.http_api.changes import Change, announce_converted, notify
from dce.http_api.describe import PAGE_SCHEMA, Param, describe, money_out, page_of
from dce.http_api.inputs import ParameterBody, read_model, text_reader
from dce.http_api.keys import ENGINE, wall_now
from dce.http_api.money import Money, PositiveMoney, SignedMoney
from dce.http_api.paging import page, page_params
from dce.http_api.permissions import require, tenant_filter
from dce.http_api.problems import ProblemError, invalid_parameter
from dce.routing.model import format_money

log = logging.getLogger(__name__)

READ = "ledger:read"
VERIFY = "ledger:verify"
WRITE = "ledger:write"
CONVERT = "conversions:write"



# ----------------------------------------------------------------------------------------------------- input

Text = Annotated[str, BeforeValidator(text_reader())]
LongText = Annotated[str, BeforeValidator(text_reader(2000))]
OwnerId = Annotated[str, BeforeValidator(text_reader(64))]
IdempotencyKey = Annotated[str, BeforeValidator(text_reader(160)), Field(description="idempotency key")]


class ConversionIn(ParameterBody):
    call_id: Text
    revenue: Money | None = None


class DepositIn(ParameterBody):
    buyer_id: OwnerId
    amount: PositiveMoney
    key: IdempotencyKey | None = None
    actor: Text | None = None
    memo: LongText | None = None


class PaymentIn(ParameterBody):
    publisher_id: OwnerId
    amount: PositiveMoney
    key: IdempotencyKey | None = None
    actor: Text | None = None
    memo: LongText | None = None


class AdjustmentIn(ParameterBody):
    account: Annotated[str, BeforeValidator(text_reader()),
                       Field(description="buyer:<id>, publisher:<id>, exchange:revenue or exchange:cash")]
    amount: SignedMoney
    reason: LongText
    actor: Text
    key: IdempotencyKey | None = None


class RefundIn(ParameterBody):
    call_id: Text
    reason: LongText
    actor: Text


def _key(given: str | None, kind: str) -> str:
    return f"{kind}:{given}" if given is not None else f"{kind}:{uuid.uuid4().hex}"


async def _exists(request: web.Request, row: Any, key: str) -> bool:
    async with request.config_dict[ENGINE].connect() as connection:
        return (await connection.execute(select(row.id).where(row.id == key))).first() is not None


# ---------------------------------------------------------------------------------------------------- output


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def entry_json(stored: repo.StoredEntry, *, only: str | None = None) -> dict[str, Any]:
    """An entry as JSON; ``only``: show just that account's lines (what a tenant may see)."""
    entry = stored.entry
    lines = entry.lines if only is None else [line for line in entry.lines if line.account == only]
    return {
        "id": stored.id, "key": entry.key, "kind": entry.kind, "at": _time(entry.at), "actor": entry.actor,
        "memo": entry.memo,
        "lines": [{"account": line.account, "amount": format_money(line.amount)} for line in lines],
    }




async def _posted(request: web.Request, entry: ledger.JournalEntry) -> web.Response:
    stored = await repo.post(request.config_dict[ENGINE], entry)
    if stored.created:
        await notify(request, Change.LEDGER)
    return web.json_response(entry_json(stored), status=201 if stored.created else 200)


# -------------------------------------------------------------------------------------------------- handlers


_REPLAYED = {200: "OK: an entry with this idempotency key was posted already (that entry)"}


@describe("Record a conversion (buyer webhook)", body=ConversionIn, status=201, problems=(404, 409))
@require(CONVERT)
async def post_conversion(request: web.Request) -> web.Response:
    body = await read_model(request, ConversionIn, decimals=True)
    call_id, revenue = body.call_id, body.revenue
    try:
        outcome = await settlement.record_conversion(request.config_dict[ENGINE], call_id, revenue=revenue)
    except settlement.CallNotFound:
        raise ProblemError(404, f"no call {call_id!r}") from None
    except settlement.AlreadyConverted:
        raise ProblemError(409, f"call {call_id!r} already has a conversion") from None
    except settlement.NotASale:
        raise invalid_parameter("call_id", f"call {call_id!r} was not sold to a buyer") from None
    settled = outcome.settled_now
    if settled is not None and settled.entry_id is not None:
        await notify(request, Change.LEDGER)
    if settled is not None and settled.settlement.converted:
        await announce_converted(request, settled)
    return web.json_response({
        "call_id": call_id, "source": outcome.conversion.source,
        "revenue": None if revenue is None else format_money(revenue), "at": _time(outcome.conversion.at),
        "state": outcome.state,
        "settlement": None if settled is None else {
            "converted": settled.settlement.converted, "revenue": format_money(settled.settlement.revenue),
            "payout": format_money(settled.settlement.payout), "entry_id": settled.entry_id,
        },
    }, status=201)


@describe("Post a buyer deposit (200 when the key was posted already)", body=DepositIn, status=201, also=_REPLAYED)
@require(WRITE)
async def post_deposit(request: web.Request) -> web.Response:
    body = await read_model(request, DepositIn, decimals=True)
    if not await _exists(request, BuyerRow, body.buyer_id):
        raise invalid_parameter("buyer_id", f"no buyer {body.buyer_id!r}")
    entry = ledger.deposit_entry(
        body.buyer_id, body.amount, wall_now(request), key=_key(body.key, ledger.DEPOSIT), actor=body.actor,
        memo=body.memo,
    )
    return await _posted(request, entry)


@describe("Post a payment to a publisher", body=PaymentIn, status=201, also=_REPLAYED)
@require(WRITE)
async def post_payment(request: web.Request) -> web.Response:
    body = await read_model(request, PaymentIn, decimals=True)
    if not await _exists(request, PublisherRow, body.publisher_id):
        raise invalid_parameter("publisher_id", f"no publisher {body.publisher_id!r}")
    entry = ledger.publisher_payment_entry(
        body.publisher_id, body.amount, wall_now(request), key=_key(body.key, ledger.PAYMENT), actor=body.actor,
        memo=body.memo,
    )
    return await _posted(request, entry)


@describe("Post an adjustment", body=AdjustmentIn, status=201, also=_REPLAYED)
@require(WRITE)
async def post_adjustment(request: web.Request) -> web.Response:
    body = await read_model(request, AdjustmentIn, decimals=True)
    account = body.account
    if not ledger.is_valid_account(account) or account == ledger.EXCHANGE_ADJUSTMENTS:
        raise invalid_parameter("account", "expected buyer:<id>, publisher:<id>, exchange:revenue or exchange:cash")
    if account.startswith(ledger.BUYER_PREFIX):
        if not await _exists(request, BuyerRow, account.removeprefix(ledger.BUYER_PREFIX)):
            raise invalid_parameter("account", f"no buyer {account.removeprefix(ledger.BUYER_PREFIX)!r}")
    elif account.startswith(ledger.PUBLISHER_PREFIX) and not await _exists(
        request, PublisherRow, account.removeprefix(ledger.PUBLISHER_PREFIX)
    ):
        raise invalid_parameter("account", f"no publisher {account.removeprefix(ledger.PUBLISHER_PREFIX)!r}")
    entry = ledger.adjustment_entry(
        account, body.amount, actor=body.actor, reason=body.reason, at=wall_now(request),
        key=_key(body.key, ledger.ADJUSTMENT),
    )
    return await _posted(request, entry)


@describe("Refund a call's sale", body=RefundIn, status=201, problems=(404, 409))
@require(WRITE)
async def post_refund(request: web.Request) -> web.Response:
    body = await read_model(request, RefundIn, decimals=True)
    call_id = body.call_id
    try:
        stored = await settlement.refund_call(request.config_dict[ENGINE], call_id, actor=body.actor,
                                              reason=body.reason)
    except settlement.CallNotFound:
        raise ProblemError(404, f"no call {call_id!r}") from None
    except settlement.NothingToRefund:
        raise ProblemError(409, f"call {call_id!r} has no sale to refund") from None
    except settlement.AlreadyRefunded:
        raise ProblemError(409, f"call {call_id!r} was refunded already") from None
    await notify(request, Change.LEDGER)
    return web.json_response(entry_json(stored), status=201)


def _own_account(request: web.Request) -> str | None:
    """The one account a tenant's principal may read; None for admins (and with auth off)."""
    tenant = tenant_filter(request)
    if "buyer_id" in tenant:
        return ledger.buyer_account(tenant["buyer_id"])
    if "publisher_id" in tenant:
        return ledger.publisher_account(tenant["publisher_id"])
    return None


def _account_param(request: web.Request) -> tuple[str | None, str | None]:
    """(the account asked for, or the tenant's own; the tenant's own account or None for admins)."""
    account = request.query.get("account", "").strip() or None
    if account is not None and not ledger.is_valid_account(account):
        raise invalid_parameter("account", f"not an account: {account!r}")
    own = _own_account(request)
    if own is not None and account not in (None, own):
        raise ProblemError(404, f"no account {account!r} for this principal")
    return account or own, own


@describe(
    "Account balances", query=(Param("account", "one account"),),
    description="Each account's balance twice, with opposite signs for credit-normal accounts: `raw` is the "
                "sum of its journal lines (debit positive), `balance` the same amount on the account's normal "
                "side as its owner reads it. Buyers' funds, publishers' payables and exchange:revenue are "
                "credit-normal (`balance` = -`raw`: a 100.00 deposit shows balance \"100.00\", raw "
                "\"-100.00\"); exchange:cash is debit-normal (`balance` = `raw`).",
    response_schema=page_of({
        "account": {"type": "string", "description": "buyer:<id>, publisher:<id>, exchange:revenue, ..."},
        "balance": money_out("on the account's normal side (a buyer's funds, a publisher's payable)"),
        "raw": money_out("sum of the account's lines, debit positive (-balance for credit-normal accounts)"),
        "credit_limit": money_out("buyers only: the buyer's credit limit, null when not funds-checked",
                                  nullable=True),
        "available": money_out("buyers only: funds plus credit"),
    }, paged=False))
@require(READ)
async def get_balances(request: web.Request) -> web.Response:
    account, _own = _account_param(request)
    engine = request.config_dict[ENGINE]
    raw = await repo.balances(engine, None if account is None else [account])
    buyers = [a.removeprefix(ledger.BUYER_PREFIX) for a in raw if a.startswith(ledger.BUYER_PREFIX)]
    limits: dict[str, int | None] = {}
    if buyers:
        async with engine.connect() as connection:
            query = select(BuyerRow.id, BuyerRow.credit_limit).where(BuyerRow.id.in_(buyers))
            limits = {row.id: row.credit_limit for row in await connection.execute(query)}
    items = []
    for name, value in raw.items():
        item: dict[str, Any] = {
            "account": name, "balance": format_money(ledger.natural_balance(name, value)), "raw": format_money(value),
        }
        if name.startswith(ledger.BUYER_PREFIX):
            limit = limits.get(name.removeprefix(ledger.BUYER_PREFIX))
            item["credit_limit"] = None if limit is None else format_money(limit)
            item["available"] = format_money(ledger.available(value, limit))
        items.append(item)
    return web.json_response({"items": items})


@describe("Journal entries, newest first", query=page_params(Param("account", "only lines of this account")),
          response_schema=PAGE_SCHEMA)
@require(READ)
async def get_entries(request: web.Request) -> web.Response:
    account, own = _account_param(request)
    limit, offset = page(request)
    items, total = await repo.entries(request.config_dict[ENGINE], account, limit, offset)
    return web.json_response(
        {"items": [entry_json(s, only=own) for s in items], "total": total, "limit": limit, "offset": offset}
    )


@describe("Check the cached balances against the journal")
@require(VERIFY)
async def get_verify(request: web.Request) -> web.Response:
    result = await repo.verify_balances(request.config_dict[ENGINE])
    return web.json_response({
        "ok": result.ok, "entries": result.entries, "lines": result.lines, "total": format_money(result.total),
        "unbalanced_entries": result.unbalanced_entries,
        "mismatches": [
            {"account": account, "cached": None if cached is None else format_money(cached),
             "computed": format_money(computed)}
            for account, (cached, computed) in result.mismatches.items()
        ],
    })


def ledger_routes() -> list[web.RouteDef]:
    """The routes, for the ``/api/v1`` sub-app."""
    return [
        web.post("/conversions", post_conversion),
        web.post("/ledger/deposits", post_deposit),
        web.post("/ledger/adjustments", post_adjustment),
        web.post("/ledger/refunds", post_refund),
        web.post("/ledger/payments", post_payment),
        web.get("/ledger/balances", get_balances),
        web.get("/ledger/entries", get_entries),
        web.get("/ledger/verify", get_verify),
    ]
