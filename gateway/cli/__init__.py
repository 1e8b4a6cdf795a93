"""The ``lockgw`` command line (CONTRACT §6).

Each sub-command lives in its own module of this package and exposes
``register(subparsers)``; the handler it sets is ``async def (args) -> int``.
``main(argv)`` is awaitable so tests call ``await main([...])``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.cli._conventions import config_hint, package_version
from protocols.errors import LockgwError

__all__ = ["main", "run"]

#: sub-command modules, in help order
_MODULES = (
    "run",
    "demo",
    "keys",
    "config_cmd",
    "token",
    "roster",
    "control_cmd",
    "devices",
    "test_open",
    "audit",
    "site_key",
    "resident_link",
    "health",
    "clock",
)

Handler = Callable[[argparse.Namespace], Awaitable[int]]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lockgw", description="Door-access gateway for home care."
    )
    parser.add_argument("--version", action="version", version=f"lockgw {package_version()}")
    subs = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _MODULES:
        module: Any = importlib.import_module(f"gateway.cli.{name}")
        module.register(subs)
    return parser


async def main(argv: list[str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    handler: Handler = args.handler
    try:
        return await handler(args)
    except LockgwError as exc:
        print(f"lockgw {args.command}: {exc}{config_hint(args, exc)}", file=sys.stderr)
        return 1


def _runner() -> Callable[[Awaitable[int]], int]:
    """The standard asyncio loop; ``LOCKGW_EVENT_LOOP=uvloop`` chooses uvloop.

    Measured on the same machine (docs/design.md, "The standard asyncio event loop"):
    uvloop gives ~5 % more unlocks/s at saturation and nothing at idle
    (bench/footprint.py); at the door (bench/unlock_latency.py, 20 phones) it was worse
    while the journal's writer was a thread and is no better now that it is a process."""
    if os.environ.get("LOCKGW_EVENT_LOOP", "asyncio") == "uvloop":
        try:
            import uvloop

            return uvloop.run  # type: ignore[return-value]
        except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
            pass
    return asyncio.run  # type: ignore[return-value]


def run() -> None:
    """Console-script entry point. Every file and directory a lockgw command creates —
    the journal, its -wal and -shm, health.json, state and key files, exports — is the
    owner's only (0600 / 0700), whatever the umask it was started with (systemd's unit
    sets UMask=0077 too; a shell usually has 022)."""
    os.umask(0o077)
    runner = _runner()
    try:
        code = runner(main(sys.argv[1:]))
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
