"""``dce gdpr ...`` subcommands (registered by ``dce.exchange.cli``)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this module's subcommands to the ``dce`` parser."""
