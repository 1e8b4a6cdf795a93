"""``lockgw clock show|set-floor --config F``: the time floor, for a technician.

The gateway never lets its clock go back past the time floor (``docs/credentials.md``
§6). A clock once set far *ahead* and then corrected leaves the floor ahead, and the
gateway reports an untrusted clock until real time passes it. Deleting
``time_floor.json`` does not help: the floor is then taken from the journal's newest
event, on purpose (a clock set back must not revive expired tokens). A technician who
is sure the clock is right now sets the floor to now with ``set-floor`` — while the
service is stopped, and only to a time at or before the clock.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from gateway.access.state import StateDir
from gateway.cli._conventions import add_config_option
from gateway.config import load_config
from gateway.health import running_daemon

__all__ = ["register"]

_FILE = "time_floor.json"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _state(data_dir: Path) -> StateDir:
    return StateDir(data_dir / "access")


async def _show(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    path = cfg.site.data_dir / "access" / _FILE
    if not path.exists():
        print(f"{path}: no time floor on file (the gateway has not run yet)")
        return 0
    loaded = _state(cfg.site.data_dir).read(_FILE)
    value = loaded.value
    if loaded.problem is not None or not isinstance(value, dict) or "floor" not in value:
        print(
            f"lockgw clock: {path} is damaged ({loaded.detail or 'no floor in it'}); it was "
            "set aside, and the gateway takes the floor from its journal at the next start",
            file=sys.stderr,
        )
        return 1
    floor, now = float(value["floor"]), time.time()
    where = "behind" if now < floor else "at or after"
    print(f"time floor {_iso(floor)}; this machine's clock {_iso(now)} is {where} it")
    return 0


async def _set_floor(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    pid = running_daemon(cfg.site.data_dir)
    if pid is not None:
        print(
            f"lockgw clock: the gateway is running (pid {pid}) and keeps its own floor; stop "
            "it first (systemctl stop lockgw)",
            file=sys.stderr,
        )
        return 1
    now = time.time()
    if not args.yes:
        print(
            f"lockgw clock: this sets the time floor to this machine's clock, {_iso(now)}. "
            "Only do so when that clock is right (check against a time server); add --yes",
            file=sys.stderr,
        )
        return 1
    if not _state(cfg.site.data_dir).save(_FILE, {"floor": now, "set_by": "lockgw clock"}):
        print(f"lockgw clock: cannot write {cfg.site.data_dir / 'access' / _FILE}", file=sys.stderr)
        return 1
    print(f"time floor set to {_iso(now)}")
    return 0


def register(subs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subs.add_parser("clock", help="show or set the time floor (technician)")
    csubs = p.add_subparsers(dest="clock_command", required=True, metavar="ACTION")
    show = csubs.add_parser("show", help="the time floor and this machine's clock")
    add_config_option(show)
    show.set_defaults(handler=_show)
    setf = csubs.add_parser(
        "set-floor", help="set the time floor to this machine's clock (service stopped)"
    )
    add_config_option(setf)
    setf.add_argument("--yes", action="store_true", help="the clock is right: do it")
    setf.set_defaults(handler=_set_floor)
