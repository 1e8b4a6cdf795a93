"""``lockgw run --config F``: the daemon, in the foreground (systemd ``Type=notify``)."""

from __future__ import annotations

import argparse
from typing import Any

from gateway.cli._conventions import add_config_option
from gateway.logs import configure_logging

__all__ = ["register"]


async def _run(args: argparse.Namespace) -> int:
    from gateway.app import serve

    configure_logging(args.log_level)
    return await serve(args.config)


def register(subs: Any) -> None:
    p = subs.add_parser("run", help="the gateway daemon (foreground; systemd Type=notify)")
    add_config_option(p)
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(handler=_run)
