"""The ``dce`` command: ``serve``, ``migrate`` and ``demo``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

from dce.exchange import auth_cli, gdpr_cli, lists_cli, trunks_cli
from dce.exchange.cli_args import add_config_args, overrides, settings_from_args
from dce.exchange.config import ConfigError, Settings, load_settings
from dce.exchange.demo import demo_config, demo_howto, seed_demo_url
from dce.exchange.logging_setup import configure_logging

log = logging.getLogger("dce")

def _serve(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if settings.log.json_lines:
        configure_logging(args.log_level, json=True)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        uvloop = None
    from dce.exchange.service import StartError

    runner = uvloop.run if uvloop is not None else asyncio.run
    try:
        runner(_serve_async(settings))
    except StartError as exc:  # what it had opened is closed; a traceback only when the failure is ours
        log.error("dce could not start: %s", exc, exc_info=None if exc.expected else exc)
        return 1
    return 0


async def _serve_async(settings: Settings) -> None:
    from dce.db.migrate import upgrade_async
    from dce.exchange.service import Exchange, StartError

    if settings.database.url.startswith("sqlite"):
        try:
            await upgrade_async(settings.database.url)  # the embedded default needs no separate step
        except Exception as exc:
            raise StartError("migrate", exc) from exc
    exchange = Exchange(settings)
    await exchange.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    print(f"dce serving SIP on {exchange.sip_addresses} and HTTP on {exchange.http_address}", flush=True)
    await stop.wait()
    log.info("shutting down")
    await exchange.stop()


def _migrate(args: argparse.Namespace) -> int:
    from dce.db.migrate import upgrade

    settings = settings_from_args(args)
    upgrade(settings.database.url)
    print(f"database at {settings.database.url} is at the latest schema")
    return 0


def _demo(args: argparse.Namespace) -> int:
    path = Path(args.write)
    if not path.exists() or args.force:
        path.write_text(demo_config())
        print(f"wrote {path}")
    settings = load_settings(path, overrides(args))  # validate it
    if args.seed:
        from dce.db.migrate import upgrade

        upgrade(settings.database.url)  # a no-op when `dce migrate` already ran
        print(asyncio.run(seed_demo_url(settings.database.url)).summary())
    admin_key = settings.auth.bootstrap_admin_key
    print(demo_howto(admin_key.get_secret_value() if admin_key else None))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(prog="dce", description="Dependable Call Exchange")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--log-format", choices=["text", "json"], default="text",
                        help="json: one JSON object per line with call_id, and trace_id/span_id when a span is "
                             "active (log.json_lines in the config does the same)")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the exchange (SIP + HTTP)")
    migrate = sub.add_parser("migrate", help="bring the database schema up to date")
    for p in (serve, migrate):
        add_config_args(p)
    serve.add_argument("--sip-listen", action="append", metavar="TRANSPORT:HOST:PORT",
                       help="overrides sip.listen (repeatable), e.g. udp:127.0.0.1:5060")
    serve.add_argument("--http-listen", metavar="HOST:PORT", help="overrides http.listen")
    serve.add_argument("--media-mode", choices=["relay", "passthrough", "rtpengine"], help="overrides media.mode")
    serve.set_defaults(func=_serve)
    migrate.set_defaults(func=_migrate)

    demo = sub.add_parser("demo", help="write the demo configuration, seed the demo marketplace, print how to call it")
    demo.add_argument("--write", "--config", dest="write", default="dce-demo.yaml", metavar="FILE",
                      help="the demo config: written when missing (or with --force), then used as is")
    demo.add_argument("--force", action="store_true", help="overwrite an existing file")
    demo.add_argument("--seed", action="store_true",
                      help="migrate the config's database and store the demo marketplace (idempotent)")
    demo.add_argument("--database-url", help="overrides database.url")
    demo.set_defaults(func=_demo)
    lists_cli.register(sub)
    auth_cli.register(sub)
    gdpr_cli.register(sub)
    trunks_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dce`` console script."""
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, json=args.log_format == "json")
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"dce: bad configuration: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
