"""Keep the registrar's agents and routing's agents and groups fresh: every agent or group write bumps
``agents_version`` in its own transaction, so polling that one row is cheap and also catches writes made by other
nodes; an API write reloads at once through :meth:`AgentWatcher.notify`."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncEngine

from dce.db.agent_repository import AgentBook, agents_version, load_book
from dce.db.watcher import Watcher


class AgentWatcher(Watcher[AgentBook]):
    """Calls ``on_book(book)`` with the agents and groups at start and after every change (API writes notify it;
    polling ``agents_version`` catches other nodes' writes), so neither REGISTER nor an INVITE needs the database."""

    def __init__(self, engine: AsyncEngine, on_book: Callable[[AgentBook], None], interval_s: float = 1.0) -> None:
        super().__init__(engine, name="agents", version=agents_version, load=load_book, on_load=on_book,
                         interval_s=interval_s)
