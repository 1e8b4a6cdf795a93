"""``lockgw test-open --config F --door D``: the installer's trial opening (before the service runs).

The sector's installation steps end with a test and a trial opening. This moves the real
devices at one door through their drivers — the lock unlocks, waits, and locks again; the
key safe opens its compartment — and prints what each device reported, battery included.
A step is only ok when the device is as a finished installation needs it: a key safe
that reports the house key absent, or a device that reports a critical battery, fails
the trial with the reason, though it moved. Each opening is journaled (``access.granted``, channel ``command``, actor ``installer``),
so the platform sees it as soon as the service starts and publishes the journal.

Run it while the service is stopped (``systemctl stop lockgw``): a BLE device takes one
connection, and the journal has one writer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import Any

from gateway.cli._conventions import add_config_option
from gateway.config import load_config
from gateway.devices import DeviceManager
from gateway.health import running_daemon
from gateway.journal import Journal, journal_path
from gateway.logs import configure_logging
from protocols.device import Action, Capability, DeviceState, KeyState
from protocols.errors import DeviceError, LockgwError
from protocols.events import AccessDecisionEvent, Channel

__all__ = ["register"]


def _describe(state: DeviceState) -> str:
    parts: list[str] = []
    if state.lock is not None:
        parts.append(f"bolt {state.lock.value}")
    if state.door.value != "unknown":
        parts.append(f"door {state.door.value}")
    if state.compartment is not None:
        parts.append(f"compartment {state.compartment.value}")
    if state.key is not None:
        parts.append(f"key {state.key.value}")
    if state.battery is not None:
        parts.append(f"battery {state.battery} %" + (" CRITICAL" if state.battery_critical else ""))
    return ", ".join(parts) or "no state reported"


def _problems(state: DeviceState) -> list[str]:
    """What a device reports that a finished installation must not have."""
    out: list[str] = []
    if state.key is KeyState.ABSENT:
        out.append("key absent — the house key is not in the key safe; hang it back")
    if state.battery_critical:
        out.append("battery critical — replace the batteries before leaving")
    return out


async def _step(
    devices: DeviceManager, journal: Journal, door: str, action: Action, device_id: str
) -> bool:
    problems: list[str] = []
    try:
        state = await devices.execute(door, action)
    except DeviceError as exc:
        print(f"  {device_id}: {action.value} FAILED — {exc.reason.value}: {exc.detail or exc}")
        ok, reason = False, exc.reason.value
    else:
        problems = _problems(state)
        if problems:
            print(f"  {device_id}: {action.value} done, NOT OK — {_describe(state)}")
            for p in problems:
                print(f"    ! {p}")
        else:
            print(f"  {device_id}: {action.value} ok — {_describe(state)}")
        ok, reason = True, "ok"  # the device did move: journaled as the opening it was
    if action is not Action.LOCK:
        with contextlib.suppress(LockgwError):
            await journal.emit(
                AccessDecisionEvent(
                    type="access.granted" if ok else "access.denied",
                    door=door,
                    device=device_id,
                    action=action.value,
                    channel=Channel.COMMAND,
                    reason=reason,
                    actor="installer",
                    request_id="test-open",
                )
            )
    return ok and not problems


async def _test_open(args: argparse.Namespace) -> int:
    configure_logging("warning")
    cfg = load_config(args.config)
    pid = running_daemon(cfg.site.data_dir)
    if pid is not None:
        print(
            f"lockgw test-open: the gateway service is running (pid {pid}); stop it first "
            "(systemctl stop lockgw) — a Bluetooth device takes one connection at a time",
            file=sys.stderr,
        )
        return 1
    at_door = [d for d in cfg.devices if d.door == args.door]
    if not at_door:
        doors = sorted({d.door for d in cfg.devices}) or ["none configured"]
        print(
            f"lockgw test-open: no device at door {args.door!r}; doors: {', '.join(doors)}",
            file=sys.stderr,
        )
        return 1
    only_door = cfg.model_copy(update={"devices": at_door})
    ok = True
    async with (
        Journal(journal_path(cfg.site.data_dir), cfg.site.id, retention_days=cfg.journal.retention_days) as journal,
        DeviceManager.from_config(only_door, journal) as devices,
    ):
        print(f"trial opening at door {args.door!r}:")
        for dev in at_door:
            sup = devices.supervisors[dev.id]
            caps: Any = sup.driver.capabilities
            if Capability.UNLOCK in caps:
                ok &= await _step(devices, journal, args.door, Action.UNLOCK, dev.id)
                await asyncio.sleep(args.hold)
                if Capability.LOCK in caps:
                    ok &= await _step(devices, journal, args.door, Action.LOCK, dev.id)
            elif Capability.OPEN in caps:
                ok &= await _step(devices, journal, args.door, Action.OPEN, dev.id)
    print("result: ok" if ok else "result: FAILED — see above; `lockgw devices` shows each device")
    return 0 if ok else 1


def register(subs: Any) -> None:
    p = subs.add_parser(
        "test-open", help="installer's trial opening of one door's devices (service stopped)"
    )
    add_config_option(p)
    p.add_argument("--door", required=True, help="the door id, as in [[devices]] door = ...")
    p.add_argument(
        "--hold", type=float, default=3.0, help="seconds the lock stays unlocked (default 3)"
    )
    p.set_defaults(handler=_test_open)
