"""Keep the INVITE path's trunks fresh: every trunk write bumps ``trunks_version`` in its own transaction, so
polling that one row is cheap and also catches writes made by other nodes (or by ``dce trunks`` on the command
line); an API write reloads at once through :meth:`TrunkWatcher.notify`."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncEngine

from dce.db.trunk_repository import load_trunk_rules, trunks_version
from dce.db.watcher import Watcher
from dce.sip.trunk_rule import TrunkRule


class TrunkWatcher(Watcher[tuple[TrunkRule, ...]]):
    """Calls ``on_trunks(rules)`` with the enabled trunks at start and after every change."""

    def __init__(self, engine: AsyncEngine, on_trunks: Callable[[tuple[TrunkRule, ...]], None],
                 interval_s: float = 1.0) -> None:
        super().__init__(engine, name="trunks", version=trunks_version, load=load_trunk_rules,
                         on_load=on_trunks, interval_s=interval_s)
