"""``dce audit verify`` and ``dce gdpr erase|export|retention`` (registered by ``dce.exchange.cli``).

Exit codes: 0 done; 1 the audit chain is broken (``audit verify``) or the erasure was declined at the prompt;
2 bad input, configuration or a database error (e.g. an unmigrated schema).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dce.exchange.cli_args import add_config_args, settings_from_args
from dce.exchange.config import Settings
from dce.exchange.personal_data import ERASERS, EXPORTERS

log = logging.getLogger(__name__)

def pseudonym_key(settings: Settings, key_file: str | None = None) -> bytes | None:
    """The pseudonymisation key: ``key_file``'s bytes (stripped), else ``compliance.gdpr.pseudonym_key``, else
    None."""
    if key_file:
        return Path(key_file).read_bytes().strip() or None
    return settings.compliance.gdpr.key_bytes


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no login name (containers without a passwd entry)
        return "cli"


class _DatabaseFailed(Exception):
    pass


async def _with_engine(url: str, work: Any) -> Any:
    from sqlalchemy.exc import DBAPIError

    from dce.db.engine import create_engine

    engine = create_engine(url)
    try:
        return await work(engine)
    except DBAPIError as exc:
        print(f"dce: database error (is the schema migrated? `dce migrate`): {exc.orig}", file=sys.stderr)
        raise _DatabaseFailed from exc
    finally:
        await engine.dispose()


def _run(url: str, work: Any) -> Any:
    """``work(engine)`` on a fresh engine for ``url``; raises :class:`_DatabaseFailed` after saying why."""
    return asyncio.run(_with_engine(url, work))


def _number(raw: str) -> str | None:
    from dce.db.gdpr import normalise_number

    try:
        return normalise_number(raw)
    except ValueError as exc:
        print(f"dce: {exc}", file=sys.stderr)
        return None


def _audit_verify(args: argparse.Namespace) -> int:
    from dce.db.audit_repository import verify

    result = _run(settings_from_args(args).database.url, verify)
    if result.ok:
        print(f"ok: {result.checked} entries")
        return 0
    print(f"broken: entry seq {result.first_bad_seq}: {result.detail} ({result.checked} entries before it verify)")
    return 1


def _gdpr_erase(args: argparse.Namespace) -> int:
    from dce.db.gdpr import erase_number

    settings = settings_from_args(args)
    number = _number(args.number)
    if number is None:
        return 2
    erasers = ERASERS
    if not args.yes:
        tables = ", ".join(["calls", *erasers])
        answer = input(f"erase {number} from {tables}? This cannot be undone. [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("not erased")
            return 1
    key = pseudonym_key(settings, args.key_file)

    async def work(engine: Any) -> Any:
        return await erase_number(engine, number, erasers, actor=_actor(), key=key)

    report = _run(settings.database.url, work)
    counts = ", ".join(f"{name}={count}" for name, count in report.counts.items())
    print(f"erased {number}: {counts} (audit seq {report.audit_seq})")
    return 0


def _gdpr_export(args: argparse.Namespace) -> int:
    from dce.db.gdpr import export_number

    settings = settings_from_args(args)
    number = _number(args.number)
    if number is None:
        return 2
    exporters = EXPORTERS
    key = pseudonym_key(settings, args.key_file)

    async def work(engine: Any) -> Any:
        return await export_number(engine, number, exporters, actor=_actor(), key=key)

    document = _run(settings.database.url, work)
    body = json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n"
    if args.out:
        Path(args.out).write_text(body, encoding="utf-8")
        counts = ", ".join(f"{name}={len(rows)}" for name, rows in document["data"].items())
        print(f"wrote {args.out}: {counts}")
    else:
        sys.stdout.write(body)
    return 0


def _gdpr_retention(args: argparse.Namespace) -> int:
    from dce.db.gdpr import pseudonymise_old_calls, retention_cutoff

    settings = settings_from_args(args)
    days = args.days if args.days is not None else settings.compliance.gdpr.retention_days
    if days is None or days <= 0:
        print("dce: give --days N (N > 0) or set compliance.gdpr.retention_days", file=sys.stderr)
        return 2
    key = pseudonym_key(settings, args.key_file)
    if key is None:
        print("dce: no pseudonymisation key: give --key-file or set compliance.gdpr.pseudonym_key", file=sys.stderr)
        return 2
    cutoff = retention_cutoff(days)

    async def work(engine: Any) -> int:
        return await pseudonymise_old_calls(engine, cutoff, key, batch_size=args.batch_size, actor=_actor())

    count = _run(settings.database.url, work)
    print(f"pseudonymised {count} callers of calls before {cutoff.isoformat()}")
    return 0


def _exit_2_on_database_failure(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except _DatabaseFailed:
            return 2

    return run


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``audit`` and ``gdpr`` to the ``dce`` parser."""
    audit = sub.add_parser("audit", help="the hash-chained audit log")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser("verify", help="check every entry's hash chain; exit 1 naming the first bad seq")
    add_config_args(verify)
    verify.set_defaults(func=_exit_2_on_database_failure(_audit_verify))

    gdpr = sub.add_parser("gdpr", help="personal data: erasure, export, retention")
    gdpr_sub = gdpr.add_subparsers(dest="gdpr_command", required=True)
    key_help = "file holding the pseudonymisation key (default: compliance.gdpr.pseudonym_key)"

    erase = gdpr_sub.add_parser("erase", help="erase a phone number from every table holding it")
    erase.add_argument("number", help="the phone number (E.164, or national with the US as default region)")
    erase.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    erase.add_argument("--key-file", help=key_help)
    add_config_args(erase)
    erase.set_defaults(func=_exit_2_on_database_failure(_gdpr_erase))

    export = gdpr_sub.add_parser("export", help="everything held about a phone number, as JSON")
    export.add_argument("number", help="the phone number (E.164, or national with the US as default region)")
    export.add_argument("--out", metavar="FILE", help="write the JSON here (default: stdout)")
    export.add_argument("--key-file", help=key_help)
    add_config_args(export)
    export.set_defaults(func=_exit_2_on_database_failure(_gdpr_export))

    retention = gdpr_sub.add_parser("retention", help="pseudonymise callers of calls older than the retention period")
    retention.add_argument("--days", type=int, help="retention period (default: compliance.gdpr.retention_days)")
    retention.add_argument("--batch-size", type=int, default=1000, help="rows per transaction")
    retention.add_argument("--key-file", help=key_help)
    add_config_args(retention)
    retention.set_defaults(func=_exit_2_on_database_failure(_gdpr_retention))
