"""Running one simulated device: ``--listen``, ``--control``, a ready line, orderly stop.

Every device simulator (``lockgw-sim lock``, ``keysafe``, ``nuki``) does the same::

    def register(subparsers):
        p = subparsers.add_parser("lock", help=...)
        add_device_arguments(p, default_port=47001)
        p.set_defaults(handler=_run)

    async def _run(args):
        server = GattServer("carelock-lock", **listen_kwargs(args))
        ...declare services...
        return await run_device(server, args, controls=lambda ctl: ctl.register("jam", ...))

:func:`run_device` serves until SIGINT/SIGTERM (or ``stop`` is set), with the link
faults on the control channel, and prints one JSON line when ready so scripts and tests
learn the ports::

    {"ready": true, "device": "carelock-lock", "address": "loopback://127.0.0.1:47001",
     "control": "127.0.0.1:47101"}

With ``--bluez --adapter hci1`` the device is a BlueZ peripheral on that adapter
(:mod:`simulators.bluez_peripheral`) and the ready line carries its BLE address and
``"adapter": "hci1"``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import signal
import sys
from collections.abc import Callable
from typing import Any

from simulators.control import ControlServer, parse_host_port
from simulators.gatt_server import GattServer

__all__ = ["add_device_arguments", "listen_kwargs", "run_device"]


def _host_port(spec: str) -> str:
    try:
        parse_host_port(spec)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return spec


def _adapter(name: str) -> str:
    if re.fullmatch(r"hci[0-9]{1,3}", name) is None:
        raise argparse.ArgumentTypeError(f"{name!r} is not a BlueZ adapter name (hci0, hci1, ...)")
    return name


def add_device_arguments(parser: argparse.ArgumentParser, *, default_port: int) -> None:
    """``--listen HOST:PORT`` (the loopback BLE transport) or ``--bluez [--adapter hciN]``,
    ``--control HOST:PORT``, ``--delay-ms``."""
    parser.add_argument(
        "--listen",
        type=_host_port,
        default=f"127.0.0.1:{default_port}",
        metavar="HOST:PORT",
        help=f"where the simulated BLE link listens (default 127.0.0.1:{default_port}; port 0 = any); "
        "the gateway's device address is then loopback://HOST:PORT",
    )
    parser.add_argument(
        "--bluez",
        action="store_true",
        help="be a BLE peripheral through BlueZ (a real adapter, or BlueZoo in tests) instead "
        "of the loopback transport; the device's address is then the adapter's",
    )
    parser.add_argument(
        "--adapter",
        type=_adapter,
        default="hci0",
        metavar="hciN",
        help="with --bluez: the BlueZ adapter to advertise and serve on (default hci0)",
    )
    parser.add_argument(
        "--control",
        type=_host_port,
        metavar="HOST:PORT",
        help="open a control port for `lockgw-sim fault` (faults and device states at run time)",
    )
    parser.add_argument(
        "--delay-ms",
        type=float,
        default=0.0,
        metavar="MS",
        help="start with this link delay per frame (30 = one BLE connection interval)",
    )


def listen_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``host`` and ``port`` for :class:`GattServer` from ``--listen``; with ``--bluez``
    ``bluez_adapter`` from ``--adapter``."""
    host, port = parse_host_port(args.listen)
    kwargs: dict[str, Any] = {"host": host, "port": port}
    if getattr(args, "bluez", False):
        kwargs["bluez_adapter"] = args.adapter
    return kwargs


async def run_device(
    server: GattServer,
    args: argparse.Namespace,
    *,
    controls: Callable[[ControlServer], None] | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Serve ``server`` (and its control port) until SIGINT/SIGTERM or ``stop``; returns 0."""
    stop = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    if getattr(args, "delay_ms", 0.0):
        server.faults.apply("delay_ms", args.delay_ms)
    control: ControlServer | None = None
    try:
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(server)
            if getattr(args, "control", None):
                control = ControlServer.from_spec(args.control)
                control.register_faults(server.faults)
                if controls is not None:
                    controls(control)
                await stack.enter_async_context(control)
            ready = {
                "ready": True,
                "device": server.name,
                "address": server.address,
                "control": control.address if control is not None else None,
            }
            if server.bluez_adapter is not None:
                ready["adapter"] = server.bluez_adapter
            print(json.dumps(ready), flush=True)
            where = (
                f"advertising on BlueZ adapter {server.bluez_adapter}, BLE address"
                if server.bluez_adapter is not None
                else "listening at"
            )
            print(
                f"{server.name} {where} {server.address}"
                + (f"; control at {control.address}" if control is not None else ""),
                file=sys.stderr,
                flush=True,
            )
            await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
    return 0
