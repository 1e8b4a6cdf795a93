"""``lockgw check-config --config F``: every problem, in words, exit 0/1."""

from __future__ import annotations

import argparse
import sys

from gateway.cli._conventions import add_config_option
from gateway.config import load_config
from protocols.errors import ConfigError


def register(subs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subs.add_parser("check-config", help="validate a config file and list every problem")
    add_config_option(p)
    p.set_defaults(handler=_check)


async def _check(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"{exc.path}: {len(exc.problems)} problem(s):", file=sys.stderr)
        for p in exc.problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    print(
        f"{cfg.source}: OK — site {cfg.site.id}, {len(cfg.issuers)} issuer(s), "
        f"{len(cfg.command_signers)} command signer(s), {len(cfg.devices)} device(s)"
    )
    return 0
