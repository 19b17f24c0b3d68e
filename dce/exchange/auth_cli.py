"""``dce auth ...`` subcommands (registered by ``dce.exchange.cli``): ``create-key``, ``list-keys``, ``revoke-key``
and ``create-user``.

The way in for a fresh installation whose config has no ``auth.bootstrap_admin_key``, and for scripted setup:

    dce auth create-key --config dce.yaml --role admin --name ops        # prints the key once
    dce auth create-key --config dce.yaml --role buyer --buyer-id b1     # a buyer's machine key
    echo "$PASSWORD" | dce auth create-user --config dce.yaml --username ann --role seller --publisher-id p1
    dce auth list-keys --config dce.yaml [--all]                          # live keys (--all: revoked too)
    dce auth revoke-key --config dce.yaml KEY_ID                          # e.g. a leaked admin key

They work on the configured database (migrated first with ``dce migrate``), the same store the API uses.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
from datetime import UTC, datetime
from typing import Any

from dce.db import auth_repository as repo
from dce.db.auth_repository import AuthStoreError
from dce.db.engine import create_engine
from dce.exchange.cli_args import add_config_args, read_password, settings_from_args
from dce.http_api.auth import MIN_PASSWORD, ROLES, AuthConfig, Authenticator


def _tenant_args(parser: argparse.ArgumentParser) -> None:
    add_config_args(parser)
    parser.add_argument("--role", required=True, choices=sorted(ROLES), help="what the holder may do")
    parser.add_argument("--buyer-id", help="the buyer a buyer-role holder acts for")
    parser.add_argument("--publisher-id", help="the publisher a seller-role holder acts for")


def _tenant_error(args: argparse.Namespace) -> str | None:
    if args.role == "buyer" and not args.buyer_id:
        return "--role buyer needs --buyer-id"
    if args.role == "seller" and not args.publisher_id:
        return "--role seller needs --publisher-id"
    if args.buyer_id and args.publisher_id:
        return "give --buyer-id or --publisher-id, not both"
    return None


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this module's subcommands to the ``dce`` parser."""
    auth = sub.add_parser("auth", help="side API credentials: API keys and users")
    auth_sub = auth.add_subparsers(dest="auth_command", required=True)

    key = auth_sub.add_parser("create-key", help="store a new API key and print it (shown once)")
    _tenant_args(key)
    key.add_argument("--name", help="what the key is for (shown in listings)")
    key.set_defaults(func=_create_key)

    listing = auth_sub.add_parser("list-keys", help="list API keys, newest first (never their secrets)")
    add_config_args(listing)
    listing.add_argument("--all", action="store_true", help="revoked keys too")
    listing.set_defaults(func=_list_keys)

    revoke = auth_sub.add_parser("revoke-key", help="revoke an API key: nodes refuse it within their key cache time")
    add_config_args(revoke)
    revoke.add_argument("key_id", help="the key's id (the part after dce_ in its prefix)")
    revoke.set_defaults(func=_revoke_key)

    user = auth_sub.add_parser("create-user", help="store a user who logs in with a password")
    _tenant_args(user)
    user.add_argument("--username", required=True)
    user.add_argument("--password-stdin", action="store_true",
                      help="read the password from standard input (else it is asked for)")
    user.set_defaults(func=_create_user)


def _authenticator(url: str) -> tuple[Authenticator, Any]:
    engine = create_engine(url)
    # Only the store is used: nothing is signed, so a throwaway secret is enough.
    return Authenticator(AuthConfig(secret=secrets.token_urlsafe(48)), engine=engine), engine


def _create_key(args: argparse.Namespace) -> int:
    if error := _tenant_error(args):
        print(f"dce auth: {error}", file=sys.stderr)
        return 2

    async def create() -> tuple[str, str]:
        auth, engine = _authenticator(settings_from_args(args).database.url)
        try:
            record, key = await auth.create_api_key(
                args.role, buyer_id=args.buyer_id, publisher_id=args.publisher_id, name=args.name, created_by="cli")
        finally:
            await engine.dispose()
        return record.id, key

    try:
        key_id, key = asyncio.run(create())
    except AuthStoreError as exc:  # an unknown buyer/publisher
        print(f"dce auth: {exc}", file=sys.stderr)
        return 1
    print(f"API key {key_id} (role {args.role}); send it as X-API-Key. It is not shown again:", file=sys.stderr)
    print(key)
    return 0


_KEY_COLUMNS = ("id", "role", "tenant", "name", "created_at", "last_used_at", "revoked_at")


def _list_keys(args: argparse.Namespace) -> int:
    async def listing() -> list[repo.ApiKeyRecord]:
        engine = create_engine(settings_from_args(args).database.url)
        try:
            which = repo.Filter(revoked=None if args.all else False)
            keys: list[repo.ApiKeyRecord] = []
            while len(page := (await repo.list_api_keys(engine, which, 1000, len(keys)))[0]) > 0:
                keys += page
            return keys
        finally:
            await engine.dispose()

    rows = [_KEY_COLUMNS] + [
        (key.id, key.role, key.buyer_id or key.publisher_id or "-", key.name or "-", _when(key.created_at),
         _when(key.last_used_at), _when(key.revoked_at)) for key in asyncio.run(listing())]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_KEY_COLUMNS))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def _when(moment: Any) -> str:
    return moment.isoformat(timespec="seconds") if moment is not None else "-"


def _revoke_key(args: argparse.Namespace) -> int:
    async def revoke() -> bool:
        engine = create_engine(settings_from_args(args).database.url)
        try:
            return await repo.revoke_api_key(engine, args.key_id, datetime.now(UTC))
        finally:
            await engine.dispose()

    if not asyncio.run(revoke()):
        print(f"dce auth: no API key {args.key_id!r}", file=sys.stderr)
        return 1
    print(f"API key {args.key_id} revoked")
    return 0



def _create_user(args: argparse.Namespace) -> int:
    if error := _tenant_error(args):
        print(f"dce auth: {error}", file=sys.stderr)
        return 2
    try:
        password = read_password(args)
    except ValueError as exc:
        print(f"dce auth: {exc}", file=sys.stderr)
        return 2
    if len(password) < MIN_PASSWORD:
        print(f"dce auth: the password needs at least {MIN_PASSWORD} characters", file=sys.stderr)
        return 2

    async def create() -> None:
        auth, engine = _authenticator(settings_from_args(args).database.url)
        try:
            await auth.create_user(args.username, password, args.role, buyer_id=args.buyer_id,
                                   publisher_id=args.publisher_id)
        finally:
            await engine.dispose()

    try:
        asyncio.run(create())
    except AuthStoreError as exc:  # a taken username, an unknown buyer/publisher
        print(f"dce auth: {exc}", file=sys.stderr)
        return 1
    print(f"user {args.username} (role {args.role}) created")
    return 0
