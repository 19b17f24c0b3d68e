"""The errors a repository of the side API's resources raises (the API maps them to 404, 409 and 422)."""

from __future__ import annotations


class RepositoryError(Exception):
    """Base of a repository's errors."""


class NotFound(RepositoryError):
    """No ``entity`` with ``key``."""

    def __init__(self, entity: str, key: str) -> None:
        super().__init__(f"no {entity} {key!r}")
        self.entity = entity
        self.key = key


class Conflict(RepositoryError):
    """The write clashes with what is stored (duplicate id/name/key, or a delete of something still in use)."""


class UnknownReference(RepositoryError):
    """``field`` refers to a ``entity`` ``key`` that does not exist."""

    def __init__(self, field: str, entity: str, key: str) -> None:
        super().__init__(f"{field}: no {entity} {key!r}")
        self.field = field
        self.entity = entity
        self.key = key
