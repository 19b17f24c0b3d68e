"""Keep the in-memory marketplace fresh: every marketplace write bumps ``marketplace_version`` in its own
transaction, so polling that one row is cheap and also catches writes made by other nodes."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncEngine

from dce.db.marketplace_repository import MarketplaceData, load_marketplace, marketplace_version_of
from dce.db.watcher import Watcher


class MarketplaceWatcher(Watcher[MarketplaceData]):
    """Calls ``on_snapshot(data)`` with a fresh :class:`MarketplaceData` at start and after every change."""

    def __init__(self, engine: AsyncEngine, on_snapshot: Callable[[MarketplaceData], None],
                 interval_s: float = 0.5) -> None:
        super().__init__(engine, name="marketplace", version=marketplace_version_of, load=load_marketplace,
                         on_load=on_snapshot, interval_s=interval_s)
