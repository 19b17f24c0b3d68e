"""The simplest routing source: a fixed map of DID -> ordered destinations (from configuration)."""

from __future__ import annotations

from collections.abc import Mapping


class StaticRoutes:
    """Ordered destinations per DID (E.164). Lookups are a dict access."""

    def __init__(self, routes: Mapping[str, list[str]]) -> None:
        self._routes = {did: list(destinations) for did, destinations in routes.items()}

    def destinations(self, did: str) -> list[str]:
        """The destinations to try in order for ``did`` (empty when the DID is unknown)."""
        return self._routes.get(did, [])

    def replace(self, routes: Mapping[str, list[str]]) -> None:
        """Swap in a new route map (atomic for readers on the event loop)."""
        self._routes = {did: list(destinations) for did, destinations in routes.items()}

    def __len__(self) -> int:
        return len(self._routes)
