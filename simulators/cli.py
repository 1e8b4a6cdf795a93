"""The ``lockgw-sim`` command line: simulated devices, phones and a platform.

Each simulator module exposes ``register(subparsers)`` with an async handler.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from protocols.errors import LockgwError

__all__ = ["main", "run"]

_MODULES: tuple[str, ...] = ("demo", "carelock", "nuki", "phone", "platform", "control")

Handler = Callable[[argparse.Namespace], Awaitable[int]]


def _version() -> str:
    try:
        return version("lockgw")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lockgw-sim", description="lockgw simulators.")
    parser.add_argument("--version", action="version", version=f"lockgw-sim {_version()}")
    subs = parser.add_subparsers(dest="command", required=True, metavar="SIMULATOR")
    for name in _MODULES:
        module: Any = importlib.import_module(f"simulators.{name}")
        module.register(subs)
    return parser


async def main(argv: list[str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    handler: Handler = args.handler
    try:
        return await handler(args)
    except LockgwError as exc:
        print(f"lockgw-sim {args.command}: {exc}", file=sys.stderr)
        return 2


def run() -> None:
    try:
        sys.exit(asyncio.run(main(sys.argv[1:])))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    run()
