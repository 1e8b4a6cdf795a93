"""``lockgw run --config F``: the daemon, in the foreground (systemd ``Type=notify``).

A config with problems (core, or an unusable data directory) is refused before anything
starts: the problems go to stderr, one per line, and the exit status is EX_CONFIG (78),
which the unit's ``RestartPreventExitStatus=78`` keeps systemd from restarting into.
With ``[phone_link] ble = true``, BlueZ and ``[bluetooth] adapter`` are checked first:
without them ``run`` stops with one line and exit status 69 (EX_UNAVAILABLE; systemd
retries, so an adapter plugged in late heals). Problems only in the ``[mqtt]`` section do not stop it: the gateway runs without the
broker (doors work offline, events are kept) and says why in the log and in health.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Final

import structlog

from gateway.cli._conventions import add_config_option
from gateway.config import load_config, start_problems
from gateway.logs import configure_logging
from protocols.errors import ConfigError

__all__ = ["EX_CONFIG", "register"]

#: sysexits.h: configuration error
EX_CONFIG: Final = 78


def _refuse(path: str, problems: list[str]) -> int:
    print(
        f"lockgw run: {path}: {len(problems)} problem(s); not started "
        "(lockgw check-config lists everything):",
        file=sys.stderr,
    )
    for p in problems:
        print(f"  - {p}", file=sys.stderr)
    return EX_CONFIG


async def _run(args: argparse.Namespace) -> int:
    from gateway.app import serve

    configure_logging(args.log_level)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        return _refuse(exc.path, exc.problems)
    if problems := start_problems(cfg):
        return _refuse(args.config, problems)
    if cfg.phone_link.ble:
        from gateway.phone_ble import EX_UNAVAILABLE, bluez_problems

        if ble := await bluez_problems(cfg.bluetooth.adapter):
            print(f"lockgw run: not started: {ble[0]}", file=sys.stderr)
            return EX_UNAVAILABLE
    if cfg.broker_problems:
        structlog.get_logger("lockgw.app").error(
            "mqtt.config_problems",
            problems=cfg.broker_problems,
            detail="running without the broker: doors work, events are kept until it is fixed",
        )
    return await serve(cfg)


def register(subs: Any) -> None:
    p = subs.add_parser("run", help="the gateway daemon (foreground; systemd Type=notify)")
    add_config_option(p)
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(handler=_run)
