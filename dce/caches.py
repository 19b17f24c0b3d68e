"""Bounded caches whose sizes the configuration sets (``caches`` section), one kind for every per-key cache.

``@bounded("numbers")`` wraps a pure function in a ``functools.lru_cache`` (C, ~0.1 µs a hit) of the group's
size; :func:`resize` rebuilds every cache of a group at start (the composition root applies
``caches.numbers``, ...). A cache per caller number must be bounded: every distinct caller is a new key, and a
real exchange sees millions a month. Size 0 turns a group's caches off.

A leaf module (stdlib only), so every room can use it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import _CacheInfo, lru_cache
from typing import Generic, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_SIZES: dict[str, int] = {
    "numbers": 8192,  # per phone number: E.164 form, geography, time zones, fraud class, list key
    "stir_identities": 4096,  # parsed Identity headers
}


class BoundedCache(Generic[P, R]):
    """``func`` behind an LRU cache of its group's size (``resize`` replaces the cache, emptying it)."""

    def __init__(self, group: str, func: Callable[P, R]) -> None:
        self.group = group
        self.func = func
        self.__name__ = func.__name__
        self.__qualname__ = func.__qualname__
        self.__doc__ = func.__doc__
        self.__wrapped__ = func
        self._cached: Callable[P, R] = lru_cache(maxsize=_sizes[group])(func)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._cached(*args, **kwargs)

    @property
    def maxsize(self) -> int:
        return _sizes[self.group]

    def resize(self, maxsize: int) -> None:
        self._cached = lru_cache(maxsize=maxsize)(self.func)

    def cache_info(self) -> _CacheInfo:
        return self._cached.cache_info()  # type: ignore[attr-defined]

    def cache_clear(self) -> None:
        self._cached.cache_clear()  # type: ignore[attr-defined]


_sizes: dict[str, int] = dict(DEFAULT_SIZES)
_caches: list[BoundedCache] = []  # type: ignore[type-arg]


def bounded(group: str) -> Callable[[Callable[P, R]], BoundedCache[P, R]]:
    """Decorator: cache ``func`` in an LRU cache sized by ``group`` (a key of :data:`DEFAULT_SIZES`)."""
    if group not in _sizes:
        raise KeyError(f"unknown cache group {group!r}")

    def wrap(func: Callable[P, R]) -> BoundedCache[P, R]:
        cache = BoundedCache(group, func)
        _caches.append(cache)
        return cache

    return wrap


def resize(sizes: dict[str, int]) -> None:
    """Set the sizes of the named groups (unknown names are an error) and rebuild their caches, empty."""
    unknown = set(sizes) - set(_sizes)
    if unknown:
        raise KeyError(f"unknown cache groups: {', '.join(sorted(unknown))}")
    for group, size in sizes.items():
        if size < 0:
            raise ValueError(f"cache {group} size must be >= 0, got {size}")
    _sizes.update(sizes)
    for cache in _caches:
        if cache.group in sizes:
            cache.resize(sizes[cache.group])


def entries() -> dict[str, int]:
    """Entries held per group, every cache of the group summed (for tests and debugging)."""
    held = dict.fromkeys(_sizes, 0)
    for cache in _caches:
        held[cache.group] += cache.cache_info().currsize
    return held
