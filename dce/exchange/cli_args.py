"""What every ``dce`` subcommand shares: the ``--config``/``--database-url`` flags and settings built from them."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from dce.exchange.config import Settings, load_settings


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` and ``--database-url URL`` (overrides database.url)."""
    parser.add_argument("--config", help="YAML configuration file")
    parser.add_argument("--database-url", help="overrides database.url")


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """CLI flags as a nested settings dict (they beat the file and the environment)."""
    out: dict[str, Any] = {}
    if getattr(args, "sip_listen", None):
        out.setdefault("sip", {})["listen"] = args.sip_listen
    if getattr(args, "http_listen", None):
        out.setdefault("http", {})["listen"] = args.http_listen
    if getattr(args, "media_mode", None):
        out.setdefault("media", {})["mode"] = args.media_mode
    if getattr(args, "database_url", None):
        out.setdefault("database", {})["url"] = args.database_url
    return out


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The settings of ``--config`` (and the environment) with the command line's overrides."""
    return load_settings(getattr(args, "config", None), overrides(args))


def read_password(args: argparse.Namespace) -> str:
    """One line from stdin with ``--password-stdin``, else typed twice at a prompt (ValueError when they differ)."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise ValueError("the passwords differ")
    return first
