"""What the exchange hears of a write through the API, so its in-memory copies reload at once.

:class:`Changes` holds one hook per kind of change (sync or async; None: nobody listens) and sits on the app under
:data:`CHANGES`; handlers call :func:`notify` after a successful write and :func:`announce_converted` for a call
the buyer's webhook converted at once. A failing change hook is logged, never raised: the write is done, and the
pollers reload anyway.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

from aiohttp import web

from dce.db.settlement import Settled

log = logging.getLogger(__name__)

OnChange = Callable[[], Awaitable[None] | None]


class Change(StrEnum):
    """What was written (the name of its hook on :class:`Changes`)."""

    MARKETPLACE = "marketplace"
    LISTS = "lists"
    CONSENTS = "consents"
    POSTBACKS = "postbacks"
    LEDGER = "ledger"
    TRUNKS = "trunks"
    AGENTS = "agents"


@dataclass(frozen=True, slots=True)
class Changes:
    """The hooks: ``marketplace`` (live routing reloads), ``lists`` and ``consents`` (the compliance book),
    ``postbacks`` (the dispatcher's configs), ``ledger`` (the routing balance snapshot), and ``converted``, called
    with a call the buyer's webhook converted after it had settled unconverted (its postbacks go out)."""

    marketplace: OnChange | None = None
    lists: OnChange | None = None
    consents: OnChange | None = None
    postbacks: OnChange | None = None
    ledger: OnChange | None = None
    trunks: OnChange | None = None  # the INVITE path's trunks (dce.db.trunk_watcher)
    agents: OnChange | None = None  # the registrar's agents (dce.db.agent_watcher)
    converted: Callable[[Settled], Awaitable[None]] | None = None

    async def notify(self, kind: Change) -> None:
        """Call the hook of ``kind``, if any (a failure is logged)."""
        hook: OnChange | None = getattr(self, kind.value)
        if hook is None:
            return
        try:
            result = hook()
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("the %s change hook failed", kind)

    async def announce_converted(self, settled: Settled) -> None:
        """Tell ``converted`` of ``settled``, if it listens."""
        if self.converted is not None:
            await self.converted(settled)


CHANGES = web.AppKey("changes", Changes)
_NOBODY = Changes()


def _changes(request: web.Request) -> Changes:
    return request.config_dict.get(CHANGES) or _NOBODY


async def notify(request: web.Request, kind: Change) -> None:
    """After a successful write: the app's :class:`Changes` hears of ``kind``."""
    await _changes(request).notify(kind)


async def announce_converted(request: web.Request, settled: Settled) -> None:
    """A call converted at once: the app's :class:`Changes` announces it."""
    await _changes(request).announce_converted(settled)
