"""``lockgw check-config --config F``: everything ``lockgw run`` needs, every problem at
once, exit 0 (none) or 1.

Checked: the TOML and its schema (an unknown key does not hide the problems after it),
the files it names (issuer and command-signer keys; the broker's CA, certificate, key and
password file — secrets must not be readable by group or others; special files such as
``/dev/zero`` are refused without being read), ports and addresses, and that the data
directory is a directory this user can write (or can become one: systemd makes it).
When the config uses Bluetooth (``[phone_link] ble = true``, or a device with a BLE
address): that BlueZ answers on the system D-Bus, that this user may use it (the
``bluetooth`` group), that ``[bluetooth] adapter`` exists and — for the phone link — that
it can advertise and serve GATT (BlueZ 5.50 or later, an LE adapter).
"""

from __future__ import annotations

import argparse
import sys

from gateway.cli._conventions import add_config_option
from gateway.config import Config, check_config
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
    if cfg is not None:
        problems += await _bluetooth_problems(cfg)
    if problems or cfg is None:
        print(f"{args.config}: {len(problems)} problem(s):", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    print(
        f"{cfg.source}: OK — site {cfg.site.id}, {len(cfg.issuers)} issuer(s), "
        f"{len(cfg.command_signers)} command signer(s), {len(cfg.devices)} device(s)"
        + (f", BLE phone link on {cfg.bluetooth.adapter}" if cfg.phone_link.ble else "")
    )
    return 0


async def _bluetooth_problems(cfg: Config) -> list[str]:
    from protocols.gattlink import SCHEME

    ble_devices = [d.id for d in cfg.devices if not d.address.startswith(SCHEME)]
    if not cfg.phone_link.ble and not ble_devices:
        return []
    from gateway.phone_ble import bluez_problems

    found = await bluez_problems(cfg.bluetooth.adapter, peripheral=cfg.phone_link.ble)
    if found and not cfg.phone_link.ble:  # say who needs it
        found = [f"{p} (needed by {', '.join(ble_devices)})" for p in found]
    return found
