"""``dce lists ...`` subcommands (registered by ``dce.exchange.cli``): ``import``, ``create``, ``ls``.

``dce lists import FILE --kind dnc_national [--scope CA] [--name NAME] [--list-id ID] [--column COL] [--replace]``
reads a text or CSV file with a progress bar, stores its numbers and prints a summary: numbers imported, repeats
within the file, numbers already on the list, blank lines, and invalid lines with their line numbers (the first
20 on screen; all of them in a report file when there are more). Without ``--list-id`` the one list of that kind
and scope (and name, when given) is used, or created when there is none.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from dce.compliance.lists import ListKind
from dce.exchange.cli_args import add_config_args, settings_from_args

SHOWN_INVALID = 20


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this module's subcommands to the ``dce`` parser."""
    lists = sub.add_parser("lists", help="number lists: DNC, suppression, litigators, blocked numbers")
    lists_sub = lists.add_subparsers(dest="lists_command", required=True)
    kinds = [k.value for k in ListKind]

    imp = lists_sub.add_parser("import", help="import numbers from a text or CSV file")
    imp.add_argument("file", type=Path)
    imp.add_argument("--kind", choices=kinds, help="the list's kind (needed unless --list-id names a list)")
    imp.add_argument("--scope", help="state (dnc_state) or buyer id (suppression)")
    imp.add_argument("--name", help="the list's name (picks among lists of the kind; names a new list)")
    imp.add_argument("--list-id", help="import into this list (created with --kind when missing)")
    imp.add_argument("--column", help="CSV column: a 0-based index or a header name (default: the first)")
    imp.add_argument("--format", choices=["auto", "text", "csv"], default="auto")
    imp.add_argument("--replace", action="store_true", help="the file becomes the list (numbers not in it go)")
    imp.add_argument("--report", type=Path, help="where to write every invalid line (default: FILE.invalid.txt "
                                                 f"when more than {SHOWN_INVALID})")
    imp.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_config_args(imp)
    imp.set_defaults(func=_import)

    create = lists_sub.add_parser("create", help="create an empty list")
    create.add_argument("--kind", choices=kinds, required=True)
    create.add_argument("--scope")
    create.add_argument("--name", default="")
    create.add_argument("--list-id")
    add_config_args(create)
    create.set_defaults(func=_create)

    ls = lists_sub.add_parser("ls", help="show the lists")
    ls.add_argument("--kind", choices=kinds)
    add_config_args(ls)
    ls.set_defaults(func=_ls)


def _fail(message: str) -> int:
    print(f"dce lists: {message}", file=sys.stderr)
    return 2


def _create(args: argparse.Namespace) -> int:
    from dce.db import list_repository as repo
    from dce.db.engine import create_engine

    async def run() -> repo.ListInfo:
        engine = create_engine(settings_from_args(args).database.url)
        try:
            return await repo.create_list(engine, args.kind, args.scope, args.name, args.list_id)
        finally:
            await engine.dispose()

    try:
        info = asyncio.run(run())
    except (ValueError, repo.ListConflict) as exc:
        return _fail(str(exc))
    print(f"created list {info.id} ({info.kind}{f' {info.scope}' if info.scope else ''})")
    return 0


def _ls(args: argparse.Namespace) -> int:
    from dce.db import list_repository as repo
    from dce.db.engine import create_engine

    async def run() -> list[repo.ListInfo]:
        engine = create_engine(settings_from_args(args).database.url)
        try:
            return await repo.list_lists(engine, args.kind)
        finally:
            await engine.dispose()

    infos = asyncio.run(run())
    print(f"{'id':34} {'kind':13} {'scope':10} {'count':>10}  name")
    for info in infos:
        print(f"{info.id:34} {info.kind.value:13} {info.scope or '-':10} {info.count:>10}  {info.name}")
    return 0


async def _target_list(engine: Any, args: argparse.Namespace) -> Any:
    """The list to import into: --list-id (created when missing), or the one list of kind/scope/name."""
    from dce.db import list_repository as repo

    if args.list_id:
        try:
            info = await repo.get_list(engine, args.list_id)
        except repo.ListNotFound:
            if not args.kind:
                raise ValueError(f"no list {args.list_id!r}; give --kind to create it") from None
            return await repo.create_list(engine, args.kind, args.scope, args.name or "", args.list_id)
        if args.kind and info.kind != ListKind(args.kind):
            raise ValueError(f"list {info.id} is a {info.kind} list, not {args.kind}")
        return info
    if not args.kind:
        raise ValueError("give --kind (or --list-id)")
    from dce.compliance.lists import check_scope

    scope = check_scope(ListKind(args.kind), args.scope)
    found = await repo.list_lists(engine, args.kind, scope, args.name)
    found = [i for i in found if i.scope == scope]
    if len(found) > 1:
        ids = ", ".join(i.id for i in found)
        raise ValueError(f"several {args.kind} lists match ({ids}); pick one with --list-id")
    if found:
        return found[0]
    return await repo.create_list(engine, args.kind, scope, args.name or "")


def _import(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from dce.compliance.importer import parse_path
    from dce.db import list_repository as repo
    from dce.db.engine import create_engine

    path: Path = args.file
    if not path.is_file():
        return _fail(f"no file {path}")
    column: int | str | None = None
    if args.column:
        column = int(args.column) if args.column.isdigit() else args.column
    url = settings_from_args(args).database.url

    async def run() -> tuple[Any, Any, Any]:
        engine = create_engine(url)
        try:
            info = await _target_list(engine, args)
            with tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc="read",
                      disable=args.no_progress, file=sys.stderr) as bar:
                parsed = await asyncio.to_thread(parse_path, path, fmt=args.format, column=column,
                                                 progress=bar.update)
            with tqdm(total=int(parsed.numbers.size), unit=" numbers", unit_scale=True, desc="store",
                      disable=args.no_progress, file=sys.stderr) as bar:
                summary = await repo.import_numbers(engine, info.id, parsed.numbers, replace=args.replace,
                                                    progress=bar.update)
            return info, parsed, summary
        finally:
            await engine.dispose()

    try:
        info, parsed, summary = asyncio.run(run())
    except (ValueError, repo.ListError) as exc:
        return _fail(str(exc))
    print(f"list {info.id} ({info.kind}{f' {info.scope}' if info.scope else ''}): {summary.total} numbers")
    print(f"lines read:          {parsed.lines}" + (f" (header: {parsed.header!r})" if parsed.header else ""))
    print(f"imported:            {summary.imported}")
    print(f"duplicates in file:  {parsed.duplicates}")
    print(f"already on the list: {summary.duplicates}")
    if args.replace:
        print(f"removed (replace):   {summary.removed}")
    blank = parsed.blank
    print(f"blank lines:         {len(blank)}" + (f" (lines {_some(blank)})" if blank else ""))
    print(f"invalid lines:       {len(parsed.invalid)}")
    for bad in parsed.invalid[:SHOWN_INVALID]:
        print(f"  {bad}")
    if len(parsed.invalid) > SHOWN_INVALID or (args.report and parsed.invalid):
        report = args.report or path.with_name(path.name + ".invalid.txt")
        with report.open("w") as out:
            out.write("line\treason\ttext\n")
            for bad in parsed.invalid:
                out.write(f"{bad.line}\t{bad.reason}\t{bad.text}\n")
        more = len(parsed.invalid) - SHOWN_INVALID
        print(f"  ... {max(more, 0)} more; every invalid line is in {report}")
    return 0


def _some(lines: list[int], limit: int = SHOWN_INVALID) -> str:
    shown = ", ".join(str(n) for n in lines[:limit])
    return shown + (f", ... {len(lines) - limit} more" if len(lines) > limit else "")
