"""``lockgw check-config --config F``: everything ``lockgw run`` needs, every problem at
once, exit 0 (none) or 1.

Checked: the TOML and its schema (an unknown key does not hide the problems after it),
the files it names (issuer and command-signer keys; the broker's CA, certificate, key and
password file — secrets must not be readable by group or others; special files such as
``/dev/zero`` are refused without being read), ports and addresses, and that the data
directory is a directory this user can write (or can become one: systemd makes it).
"""

from __future__ import annotations

import argparse
import sys

from gateway.cli._conventions import add_config_option
from gateway.config import check_config
from protocols.errors import ConfigError


def register(subs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subs.add_parser("check-config", help="validate a config file and list every problem")
    add_config_option(p)
    p.set_defaults(handler=_check)


async def _check(args: argparse.Namespace) -> int:
    try:
        cfg, problems = check_config(args.config)
    except ConfigError as exc:  # the file cannot be read or parsed at all
        print(f"{exc.path}: {len(exc.problems)} problem(s):", file=sys.stderr)
        for p in exc.problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    if cfg is not None and not cfg.broker_problems:
        from gateway.mqtt import load_secrets

        try:  # the certificates and key as TLS will load them (PEM, matching key)
            load_secrets(cfg.mqtt)
        except ValueError as exc:
            problems.append(f"mqtt: {exc}")
    if problems or cfg is None:
        print(f"{args.config}: {len(problems)} problem(s):", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    print(
        f"{cfg.source}: OK — site {cfg.site.id}, {len(cfg.issuers)} issuer(s), "
        f"{len(cfg.command_signers)} command signer(s), {len(cfg.devices)} device(s)"
    )
    return 0
