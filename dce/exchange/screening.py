"""The compliance gate as the CallFlow uses it: SIP and routing facts in, a ``Verdict`` out.

``CallGate`` turns an inbound call (its request headers and the routing context) into the plain
``ScreenedCall`` the compliance room reads, runs the ``Screener``, and feeds finished calls back to the checks
that learn from them (fraud's conversion-duration clusters). The checks themselves are built from
configuration in ``dce.exchange.compliance_setup``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Protocol

from dce.compliance.fraud import SharedVelocity
from dce.compliance.screen import ScreenedCall, Screener
from dce.compliance.verdict import ALLOW, Verdict
from dce.exchange.router import CallRequest, Routed
from dce.routing.model import Campaign
from dce.routing.numbers import to_e164
from dce.sip.message import header_uri, uri_user


class CompletionListener(Protocol):
    """A check that learns from answered calls (fraud clusters)."""

    def completed(self, publisher_id: str | None, billable_s: int, conversion_s: int | None, now: float) -> None: ...


def _header(headers: tuple[tuple[str, str], ...], name: str) -> str | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def _asserted_number(headers: tuple[tuple[str, str], ...]) -> str | None:
    value = _header(headers, "P-Asserted-Identity")
    if not value:
        return None
    user = uri_user(header_uri(value.split(",", 1)[0]))
    return to_e164(user) if user else None


Velocity = Callable[[ScreenedCall, float], Awaitable[SharedVelocity | None]]
"""Counts a call in the velocity counters every node shares; their counts, or None when unknown."""

Prepare = Callable[[ScreenedCall, float], Awaitable[None]]
"""Gets a signed call's STIR certificate ready (starts its fetch, waits a bounded time) before screening."""


class CallGate:
    """Screens each call before routing goes on; ``reject_status`` is what a rejected caller gets (603/403), and
    ``caller_reason`` what its Reason header tells: "generic" ("call rejected") or "detailed" (the verdict's code
    and detail, e.g. the fraud score and signals); ``dce.exchange.decision`` builds that answer.

    ``velocity``: the shared fraud velocity lookup (one bounded round trip), awaited by ``screen_shared``;
    ``prepare``: awaited by ``screen_shared`` for a call with an Identity header (the STIR certificate fetch)."""

    def __init__(self, screener: Screener, *, reject_status: int = 603, caller_reason: str = "generic",
                 campaign: Callable[[str], Campaign | None] = lambda _id: None,
                 conversion_s: Callable[[str], int | None] = lambda _id: None,
                 listeners: tuple[CompletionListener, ...] = (), velocity: Velocity | None = None,
                 prepare: Prepare | None = None) -> None:
        self.screener = screener
        self.reject_status = reject_status
        self.caller_reason = caller_reason
        self.campaign = campaign
        self.conversion_s = conversion_s
        self.listeners = listeners
        self.velocity = velocity
        self.prepare = prepare

    def screen(self, request: CallRequest, routed: Routed, now: float) -> Verdict:
        """The verdict on this call at ``now`` (epoch seconds), from this node's state alone."""
        if not self.screener.checks:
            return ALLOW
        return self.screener.screen(self._call(request, routed), now)

    async def screen_shared(self, request: CallRequest, routed: Routed, now: float) -> Verdict:
        """The verdict at ``now`` (epoch seconds, the same clock on every node), the velocity signals reading
        the counts every node shares when configured (falling back to this node's own when they are unknown)."""
        if not self.screener.checks:
            return ALLOW
        call = self._call(request, routed)
        if self.prepare is not None and call.identity:
            await self.prepare(call, now)
        if self.velocity is not None:
            call = dataclasses.replace(call, velocity=await self.velocity(call, now))
        return self.screener.screen(call, now)

    def _call(self, request: CallRequest, routed: Routed) -> ScreenedCall:
        """What the checks read about this call."""
        ctx = routed.context
        campaign = self.campaign(ctx.campaign_id) if ctx is not None and ctx.campaign_id else None
        return ScreenedCall(
            ani=ctx.ani if ctx is not None else to_e164(request.caller_user),
            did=request.did,
            state=ctx.state if ctx is not None else None,
            campaign_id=ctx.campaign_id if ctx is not None else None,
            publisher_id=ctx.publisher_id if ctx is not None else None,
            identity=_header(request.headers, "Identity"),
            asserted=_asserted_number(request.headers),
            stir_min_attestation=campaign.stir_min_attestation if campaign is not None else None,
            stir_on_failure=str(campaign.stir_action) if campaign is not None else "reject",
            stir_on_unsigned=str(campaign.stir_unsigned) if campaign is not None else "allow",
        )

    def completed(self, routed: Routed, target_id: str | None, billable_s: int, now: float) -> None:
        """An answered call ended: tell the checks that learn from call durations."""
        ctx = routed.context
        if ctx is None or not self.listeners:
            return
        conversion = self.conversion_s(target_id) if target_id else None
        for listener in self.listeners:
            listener.completed(ctx.publisher_id, billable_s, conversion, now)
