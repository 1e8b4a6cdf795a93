"""``lockgw-sim nuki``: a simulated Nuki Smart Lock on the loopback GATT transport.

The lock's GATT table as Nuki publishes it — Keyturner Pairing Service with its GDIO
characteristic, Keyturner Service with GDIO and USDIO (write + indicate) — served by
``simulators/gatt_server.py``; the protocol is :mod:`simulators.nuki_lock`. A Lock Action
is answered at once with Status ACCEPTED and the moving state; the final state and
Status COMPLETE follow after the motor time (``motor_ms``), as a real lock does.

Device faults (besides the link faults of every simulator): ``jam`` (the motor blocks:
``K_ERROR_MOTOR_BLOCKED``, lock state MOTOR_BLOCKED), ``door`` open/closed, ``battery``
percent and ``critical``, ``pairing`` mode on/off.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from pathlib import Path
from typing import Any

import structlog

from protocols.nuki import (
    KEYTURNER_GDIO,
    KEYTURNER_SERVICE,
    PAIRING_GDIO,
    PAIRING_SERVICE,
    USDIO,
    DoorSensorState,
)
from simulators.control import ControlServer
from simulators.gatt_server import Characteristic, Connection, GattServer
from simulators.link_faults import LinkFaults
from simulators.nuki_lock import NukiLock, NukiSession, Outgoing
from simulators.runner import add_device_arguments, listen_kwargs, run_device

__all__ = ["NukiSimulator", "main", "register"]

log = structlog.get_logger("lockgw.sim.nuki")


class NukiSimulator:
    """A Nuki lock served over the loopback GATT transport. ``async with`` starts it."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        pairing: bool = False,
        state_file: Path | None = None,
        motor_ms: float = 150.0,
        faults: LinkFaults | None = None,
        name: str = "Nuki_SIM",
        bluez_adapter: str | None = None,
        beacon: bool = True,
    ) -> None:
        self.lock = NukiLock(name=name, pairing=pairing, state_file=state_file)
        self.motor_ms = motor_ms
        self.server = GattServer(
            name,
            host=host,
            port=port,
            faults=faults,
            advertised_uuids=(KEYTURNER_SERVICE,),
            on_connect=self._on_connect,
            on_disconnect=self._on_disconnect,
            bluez_adapter=bluez_adapter,
        )
        pairing_service = self.server.add_service(PAIRING_SERVICE)
        self._chars: dict[str, Characteristic] = {
            PAIRING_GDIO: pairing_service.add_characteristic(
                PAIRING_GDIO, write=self._writer(PAIRING_GDIO), indicate=True
            )
        }
        keyturner = self.server.add_service(KEYTURNER_SERVICE)
        self._chars[KEYTURNER_GDIO] = keyturner.add_characteristic(
            KEYTURNER_GDIO, write=self._writer(KEYTURNER_GDIO), indicate=True
        )
        self._chars[USDIO] = keyturner.add_characteristic(
            USDIO, write=self._writer(USDIO), indicate=True
        )
        self._links: dict[NukiSession, Connection] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        #: advertise Nuki's iBeacon (off: name and service UUID only)
        self.beacon = beacon
        self._update_beacon()

    def _update_beacon(self) -> None:
        """Advertise as a Nuki does: an iBeacon (Apple company id 0x004C) with the Keyturner
        Service UUID, the Nuki ID as major/minor, and bit 0 of the TX-power byte set while the
        lock has a state change no client has read yet (clients poll when they see it)."""
        if not self.beacon:
            return
        beacon = (
            b"\x02\x15"
            + uuid.UUID(KEYTURNER_SERVICE).bytes
            + self.lock.nuki_id.to_bytes(4, "big")
            + bytes([0xC4 | int(self.lock.changed)])
        )
        self.server.set_manufacturer_data(0x004C, beacon)

    @property
    def address(self) -> str:
        return self.server.address

    @property
    def faults(self) -> LinkFaults:
        return self.server.faults

    async def __aenter__(self) -> NukiSimulator:
        await self.server.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_motor()
        await self.server.close()

    async def stop_motor(self) -> None:
        """Cancel motor movements still under way (shutdown)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- links -----------------------------------------------------------------------------
    def _on_connect(self, conn: Connection) -> None:
        session = self.lock.session()
        conn.state["nuki"] = session
        self._links[session] = conn

    def _on_disconnect(self, conn: Connection) -> None:
        session: NukiSession | None = conn.state.pop("nuki", None)
        if session is not None:
            session.close()
            self._links.pop(session, None)

    def _writer(self, char_uuid: str) -> Any:
        async def write(conn: Connection, data: bytes) -> None:
            session: NukiSession = conn.state["nuki"]
            out = session.handle(char_uuid, data)
            self._update_beacon()
            first_motor = next((i for i, o in enumerate(out) if o.motor), len(out))
            await self._send(conn, out[:first_motor])
            if first_motor < len(out):
                # the motor turns after the write is acknowledged: Status ACCEPTED already left
                self.lock.busy = True
                task = asyncio.create_task(self._after_motor(conn, out[first_motor:]))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

        return write

    async def _send(self, conn: Connection, out: list[Outgoing]) -> None:
        for o in out:
            await conn.notify(self._chars[o.char], o.data)

    async def _after_motor(self, conn: Connection, out: list[Outgoing]) -> None:
        try:
            await asyncio.sleep(self.motor_ms / 1000)
        finally:
            self.lock.busy = False
        await self._send(conn, out)

    # -- device faults (control channel, tests) ------------------------------------------
    async def _push_state(self) -> None:
        self.lock.changed = True
        self._update_beacon()
        for session, o in self.lock.broadcast_state():
            conn = self._links.get(session)
            if conn is not None:
                await self._send(conn, [o])

    async def set_door(self, is_open: bool) -> None:
        self.lock.door = DoorSensorState.DOOR_OPENED if is_open else DoorSensorState.DOOR_CLOSED
        await self._push_state()

    async def set_battery(self, percent: int, *, critical: bool | None = None) -> None:
        if not 0 <= percent <= 100:
            raise ValueError("battery percent is 0..100")
        self.lock.battery_percent = percent
        self.lock.battery_critical = percent <= 10 if critical is None else critical
        await self._push_state()

    async def set_jammed(self, jammed: bool) -> None:
        self.lock.jammed = jammed

    def set_pairing(self, on: bool) -> None:
        self.lock.pairing_mode = on

    def snapshot(self) -> dict[str, Any]:
        lock = self.lock
        return {
            "lock_state": lock.lock_state.name,
            "door": lock.door.name,
            "battery": lock.battery_percent,
            "critical": lock.battery_critical,
            "jammed": lock.jammed,
            "pairing": lock.pairing_mode,
            "authorizations": len(lock.authorizations),
        }

    def register_controls(self, control: ControlServer) -> None:
        """Link faults plus this lock's device faults on a control channel."""
        control.register_faults(self.faults)
        self.register_device_controls(control)

    def register_device_controls(self, control: ControlServer) -> None:
        """This lock's device faults: jam, door, battery, critical, pairing, state."""
        control.register(
            "jam", self._jam, "the motor blocks on the next actions: true/false (default true)"
        )
        control.register("door", self._door, "door sensor: open/close(d)")
        control.register(
            "battery", self._battery, "battery percent 0..100 (critical at 10 or less)"
        )
        control.register(
            "critical", self._critical, "critical-battery flag: true/false (default true)"
        )
        control.register(
            "pairing", self._pairing, "pairing mode (button held 5 s): true/false (default true)"
        )
        control.register("state", lambda _v: self.snapshot(), "show the lock's state")

    async def _jam(self, value: Any) -> dict[str, Any]:
        await self.set_jammed(value is None or _flag(value))
        return self.snapshot()

    async def _door(self, value: Any) -> dict[str, Any]:
        if value not in {"open", "closed", "close"}:  # "close" as for the carelock lock
            raise ValueError("door is open or closed")
        await self.set_door(value == "open")
        return self.snapshot()

    async def _battery(self, value: Any) -> dict[str, Any]:
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)  # from a command line: "8"
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("battery is a percent 0..100")
        await self.set_battery(value)
        return self.snapshot()

    async def _critical(self, value: Any) -> dict[str, Any]:
        await self.set_battery(self.lock.battery_percent, critical=value is None or _flag(value))
        return self.snapshot()

    def _pairing(self, value: Any) -> dict[str, Any]:
        self.set_pairing(value is None or _flag(value))
        return self.snapshot()


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text not in {"true", "on", "1", "false", "off", "0"}:
        raise ValueError(f"expected true or false, not {value!r}")
    return text in {"true", "on", "1"}


# -- command line --------------------------------------------------------------------------
def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "nuki",
        help="a simulated Nuki Smart Lock (Nuki BLE protocol over the loopback GATT transport, "
        "or --bluez: a BlueZ peripheral)",
    )
    add_device_arguments(p, default_port=47011)
    p.add_argument("--delay", dest="delay_ms", type=float, metavar="MS", help="same as --delay-ms")
    p.add_argument("--motor", type=float, default=150.0, metavar="MS", help="motor time per action")
    p.add_argument("--pairing", action="store_true", help="start in pairing mode")
    p.add_argument(
        "--state", type=Path, default=None, metavar="FILE", help="keep keys and state here (0600)"
    )
    p.add_argument(
        "--no-beacon",
        dest="beacon",
        action="store_false",
        help="advertise the name and service UUID only, without Nuki's iBeacon manufacturer "
        "data (BlueZoo 1.0.2, the tests' BlueZ mock, cannot carry manufacturer data)",
    )
    p.set_defaults(handler=_run)


async def _run(args: argparse.Namespace) -> int:
    sim = NukiSimulator(
        **listen_kwargs(args),
        pairing=args.pairing,
        state_file=args.state,
        motor_ms=args.motor,
        beacon=args.beacon,
    )
    try:
        return await run_device(sim.server, args, controls=sim.register_device_controls)
    finally:
        await sim.stop_motor()


async def main(argv: list[str]) -> int:
    """``lockgw-sim nuki`` as a function (tests, tools)."""
    parser = argparse.ArgumentParser(prog="lockgw-sim")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["nuki", *argv])
    result: int = await args.handler(args)
    return result
