"""Keep the registrar's agents fresh: every agent or group write bumps ``agents_version`` in its own transaction,
so polling that one row is cheap and also catches writes made by other nodes; an API write reloads at once through
:meth:`AgentWatcher.notify`."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncEngine

from dce.db.agent_repository import agents_version, load_accounts
from dce.db.watcher import Watcher
from dce.sip.registrar import Account


class AgentWatcher(Watcher[tuple[Account, ...]]):
    """Calls ``on_accounts(accounts)`` with the enabled agents at start and after every change (API writes
    notify it; polling ``agents_version`` catches other nodes' writes), so REGISTER needs no database."""

    def __init__(self, engine: AsyncEngine, on_accounts: Callable[[tuple[Account, ...]], None],
                 interval_s: float = 1.0) -> None:
        super().__init__(engine, name="agents", version=agents_version, load=load_accounts,
                         on_load=on_accounts, interval_s=interval_s)
