"""``dce trunks ...`` subcommands (registered by ``dce.exchange.cli``): ``list``, ``add`` and ``remove``.

    dce trunks list --config dce.yaml                         # every trunk: networks, limits, credentials (no hash)
    dce trunks add carrier-a --config dce.yaml --network 192.0.2.0/24 --network 2001:db8::/32 \\
        [--publisher-id p1] [--transport udp|tcp|tls] [--max-cps 20] [--max-concurrent 100] [--disabled]
    echo "$PASSWORD" | dce trunks add carrier-b --network 198.51.100.7 --username carrier-b --password-stdin
    dce trunks remove carrier-a --config dce.yaml             # by name (or id)

They work on the configured database (migrated first with ``dce migrate``), with the API's validation rules
(:class:`dce.http_api.trunks.TrunkIn`); running exchanges pick a change up at their next poll of the trunks'
change counter (about a second). A password is read from standard input or asked for, and only its HA1s are
stored.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from typing import Any

from dce.db import trunk_repository as repo
from dce.db.engine import create_engine
from dce.exchange.cli_args import add_config_args, read_password, settings_from_args
from dce.http_api.inputs import validated
from dce.http_api.problems import ProblemError
from dce.http_api.trunks import DEFAULT_REALM, TrunkIn


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this module's subcommands to the ``dce`` parser."""
    trunks = sub.add_parser("trunks", help="inbound trunks: who may send calls (source networks, digest credentials)")
    trunks_sub = trunks.add_subparsers(dest="trunks_command", required=True)

    listing = trunks_sub.add_parser("list", help="show the trunks, ordered by name (never a password or hash)")
    add_config_args(listing)
    listing.set_defaults(func=_list)

    add = trunks_sub.add_parser("add", help="store a new trunk")
    add.add_argument("name", help="shown on CDRs, reports and metrics: letters, digits, _ . -")
    add.add_argument("--network", action="append", required=True, metavar="CIDR",
                     help="a source network (IPv4 or IPv6 CIDR, or one address); repeatable")
    add.add_argument("--id", help="the trunk's id (default: generated)")
    add.add_argument("--publisher-id", help="the publisher the trunk belongs to")
    add.add_argument("--transport", choices=repo.TRANSPORTS, help="the only transport it may use (default: any)")
    add.add_argument("--max-cps", type=float, default=0, help="calls per second (0: unlimited)")
    add.add_argument("--max-concurrent", type=int, default=0, help="calls at once (0: unlimited)")
    add.add_argument("--disabled", action="store_true", help="store it disabled (its calls are not admitted)")
    add.add_argument("--username", help="digest credentials: challenge its INVITEs (asks for the password)")
    add.add_argument("--realm", help=f"the digest realm (default: {DEFAULT_REALM})")
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from standard input (else it is asked for)")
    add_config_args(add)
    add.set_defaults(func=_add)

    remove = trunks_sub.add_parser("remove", help="delete a trunk (CDRs keep its name)")
    remove.add_argument("trunk", help="the trunk's name or id")
    add_config_args(remove)
    remove.set_defaults(func=_remove)


def _fail(message: str, status: int = 1) -> int:
    print(f"dce trunks: {message}", file=sys.stderr)
    return status



def _add(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {
        "name": args.name, "networks": args.network, "publisher_id": args.publisher_id, "transport": args.transport,
        "max_cps": args.max_cps, "max_concurrent": args.max_concurrent, "enabled": not args.disabled,
    }  # fmt: skip
    if args.realm is not None:
        body["realm"] = args.realm
    if args.username is not None:
        try:
            body["username"], body["password"] = args.username, read_password(args)
        except ValueError as exc:
            return _fail(str(exc), 2)
    elif args.password_stdin:
        return _fail("--password-stdin needs --username", 2)
    try:
        trunk = validated(TrunkIn, body).to_trunk(args.id or uuid.uuid4().hex)
    except ProblemError as exc:
        return _fail(exc.detail, 2)

    async def store() -> repo.Trunk:
        engine = create_engine(settings_from_args(args).database.url)
        try:
            return await repo.create_trunk(engine, trunk)
        finally:
            await engine.dispose()

    try:
        stored = asyncio.run(store())
    except repo.TrunkError as exc:  # a taken name or id, an unknown publisher
        return _fail(str(exc))
    credentials = f", digest user {stored.username} realm {stored.realm}" if stored.has_credentials else ""
    print(f"trunk {stored.name} (id {stored.id}) added: {', '.join(stored.networks)}{credentials}")
    return 0


_COLUMNS = ("name", "id", "networks", "transport", "max_cps", "max_concurrent", "credentials", "publisher", "enabled")


def _list(args: argparse.Namespace) -> int:
    async def listing() -> list[repo.Trunk]:
        engine = create_engine(settings_from_args(args).database.url)
        try:
            found: list[repo.Trunk] = []
            while page := (await repo.list_trunks(engine, 1000, len(found)))[0]:
                found += page
            return found
        finally:
            await engine.dispose()

    rows = [_COLUMNS] + [
        (t.name, t.id, ",".join(t.networks), t.transport or "any", f"{t.max_cps:g}", str(t.max_concurrent),
         f"{t.username}@{t.realm}" if t.has_credentials else "-", t.publisher_id or "-",
         "yes" if t.enabled else "no")
        for t in asyncio.run(listing())
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def _remove(args: argparse.Namespace) -> int:
    async def remove() -> repo.Trunk:
        engine = create_engine(settings_from_args(args).database.url)
        try:
            trunk = await repo.find_trunk(engine, args.trunk)
            await repo.delete_trunk(engine, trunk.id)
            return trunk
        finally:
            await engine.dispose()

    try:
        trunk = asyncio.run(remove())
    except repo.NotFound:
        return _fail(f"no trunk named {args.trunk!r} (nor with that id)")
    print(f"trunk {trunk.name} (id {trunk.id}) removed")
    return 0
