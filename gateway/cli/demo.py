"""``lockgw demo``: the whole system on one machine, no set-up (CONTRACT §6).

The demo is a conductor of real processes — a private mosquitto, simulated lock and
key safe, the gateway (``lockgw run``), a platform and phones — so it lives with the
simulators (``simulators/demo.py``), which import only ``protocols/``. This command
hands over to it in the same Python.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

__all__ = ["register"]


async def _demo(args: argparse.Namespace) -> int:
    argv = [sys.executable, "-m", "simulators.cli", "demo"]
    if args.fast:
        argv.append("--fast")
    if args.keep:
        argv += ["--keep", args.keep]
    if args.lang:
        argv += ["--lang", args.lang]
    if args.bluez:
        argv.append("--bluez")
    sys.stdout.flush()
    os.execv(sys.executable, argv)
    return 0  # pragma: no cover - execv does not return


def register(subs: Any) -> None:
    p = subs.add_parser("demo", help="the whole system on one machine, narrated; no set-up")
    p.add_argument("--fast", action="store_true", help="shorter pauses (tests, CI)")
    p.add_argument(
        "--keep",
        metavar="DIR",
        help="keep the demo's files (config, keys, journal) in DIR, and the gateway and the "
        "resident's page running until Ctrl-C",
    )
    p.add_argument("--lang", choices=("nl", "en"), default=None,
                   help="nl (default) or en: the narration, the page and audit show")
    p.add_argument(
        "--bluez", action="store_true",
        help="tell the same day over BlueZ's D-Bus API (BlueZoo's virtual adapters; from a "
        "source checkout after scripts/bootstrap.sh): phones, gateway, lock and key safe "
        "over Bluetooth as on a hub",
    )
    p.set_defaults(handler=_demo)
