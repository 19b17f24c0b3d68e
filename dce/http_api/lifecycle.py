"""Resources that close with the app: :func:`close_with` registers them on its ``cleanup_ctx``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from aiohttp import web


class Closeable(Protocol):
    async def aclose(self) -> None:
        """Release what the resource holds (cancel its tasks, drop its entries)."""
        ...


def close_with(app: web.Application, *resources: Closeable) -> None:
    """Close ``resources`` (the last first) when ``app`` cleans up, after it stopped serving requests."""

    async def closing(_app: web.Application) -> AsyncIterator[None]:
        yield
        for resource in reversed(resources):
            await resource.aclose()

    app.cleanup_ctx.append(closing)
