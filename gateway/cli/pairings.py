"""``lockgw devices pairings DEVICE [--remove KEY_ID]``: what a device's pairings are.

A device keeps a few pairings (carelock: 4 by default, more are refused). Whoever pairs
during an open pairing window gets one — the gateway, or a stranger at the door while
the installer's window was open. The gateway journals a pairing it did not make as
``device.pairing_unknown`` (and health warns); this command lists them and removes one.
It talks to the device directly, so the service must be stopped (one BLE connection,
like ``lockgw pair``). The gateway's own pairing cannot be removed here: pair anew
with ``lockgw pair`` (which removes the old one itself).
"""

from __future__ import annotations

import argparse
import contextlib
import sys

from drivers.base import Driver
from gateway.config import Config, DeviceConfig, load_config
from gateway.devices.manager import DriverLookup, make_driver
from gateway.devices.secrets import FileSecretStore
from gateway.health import running_daemon
from protocols.errors import ConfigError, DeviceError

__all__ = ["pairings_command"]


def _device(cfg: Config, device_id: str) -> DeviceConfig:
    dev = cfg.device(device_id)
    if dev is None:
        known = ", ".join(d.id for d in cfg.devices) or "none"
        raise ConfigError(
            str(cfg.source), [f"no device {device_id!r} in [[devices]] (configured: {known})"]
        )
    return dev


async def pairings_command(args: argparse.Namespace, drivers: DriverLookup | None) -> int:
    if not args.target:
        print(
            "lockgw devices pairings: name the device: lockgw devices pairings --config F DEVICE",
            file=sys.stderr,
        )
        return 2
    cfg = load_config(args.config)
    dev = _device(cfg, args.target)
    pid = running_daemon(cfg.site.data_dir)
    if pid is not None:
        print(
            f"lockgw devices pairings: the gateway service is running (pid {pid}) and holds "
            "the device's connection; stop it first (systemctl stop lockgw), then start it again",
            file=sys.stderr,
        )
        return 1
    store = FileSecretStore(cfg.site.data_dir)
    driver = make_driver(dev, store, drivers, adapter=cfg.bluetooth.adapter)
    try:
        return await _run(args, dev, driver)
    except DeviceError as exc:
        print(f"lockgw devices pairings: {dev.id}: {exc}", file=sys.stderr)
        return 1
    finally:
        with contextlib.suppress(DeviceError):
            await driver.disconnect()


async def _run(args: argparse.Namespace, dev: DeviceConfig, driver: Driver) -> int:
    slots = await driver.pairings()
    if slots is None:
        print(f"lockgw devices pairings: a {dev.driver} device cannot list its pairings",
              file=sys.stderr)  # fmt: skip
        return 1
    remove: str | None = args.remove
    if remove is not None:
        remove = remove.strip().lower()
        match = [s for s in slots if s.key_id == remove]
        if not match:
            held = ", ".join(s.key_id for s in slots) or "none"
            print(f"lockgw devices pairings: {dev.id} holds no pairing {remove} (it holds: {held})",
                  file=sys.stderr)  # fmt: skip
            return 1
        if match[0].own:
            print(
                f"lockgw devices pairings: {remove} is this gateway's own pairing; removing it "
                f"would lock the gateway out. To make new keys run: lockgw pair {dev.id}",
                file=sys.stderr,
            )
            return 1
        await driver.remove_pairing(remove)
        print(f"Removed pairing {remove} from {dev.id}; the gateway journals it when it starts.")
        slots = await driver.pairings() or []
    print(f"{dev.id} holds {len(slots)} pairing(s):")
    for s in slots:
        if s.own:
            print(f"  {s.key_id}  this gateway")
        else:
            print(
                f"  {s.key_id}  NOT this gateway: if nobody you know paired it, remove it: "
                f"lockgw devices pairings {dev.id} --remove {s.key_id}"
            )
    return 0
