"""``lockgw-sim lock`` / ``lockgw-sim keysafe``: a carelock device served over loopback GATT
or, with ``--bluez``, as a BlueZ peripheral.

The device model (:mod:`simulators.carelock_device`) behind the carelock GATT table
(``protocols/carelock``) on a :class:`~simulators.gatt_server.GattServer`. Each
connection gets its own :class:`~protocols.carelock.PeripheralSession`; every status
change goes as a sealed EVENT to the *other* open sessions (the commanding one hears the
RESPONSE), every battery change as a Battery Level notification.

Run-time switches (``--control``; ``lockgw-sim switch --control H:Q NAME [VALUE]``): the
device's own (:data:`~simulators.carelock_device.SWITCHES`), the link's (``delay_ms``, ``reply_delay_ms``,
``corrupt``, ``refuse``, ``drop``, ``clear``, ``faults``) and ``state``.

The button while a pairing code is shown: ``lockgw-sim switch --control H:Q press confirm``
(the code matches the one ``lockgw pair`` shows: store the pairing) or ``press reject``.
The code shown is printed, logged and in ``state`` (``pending_code``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from protocols.carelock import (
    CONFIRM_TIMEOUT,
    AuthenticationFailed,
    DevicePairing,
    ErrorFrame,
    Kind,
    Opcode,
    PairDone,
    PairingEntry,
    PairNonce,
    PairRequest,
    PeripheralSession,
    Refused,
    RemovePairingBody,
    Replayed,
    Result,
    Sealed,
    SessionOpen,
    Status,
    decode_frame,
    gatt,
)
from protocols.carelock.frames import FrameType
from protocols.errors import FrameError
from simulators.carelock_device import BUTTON, MAX_PAIRINGS, SWITCHES, CarelockDevice
from simulators.control import ControlError, ControlServer, send_control
from simulators.gatt_server import Characteristic, Connection, GattServer
from simulators.link_faults import LinkFaults
from simulators.runner import add_device_arguments, listen_kwargs, run_device

__all__ = ["CarelockSimulator", "register"]

log = structlog.get_logger("lockgw.sim.carelock")

_SESSION = "carelock.session"
_PAIRING = "carelock.pairing"  # a pairing the device committed to on this link
_KEY_ID = "carelock.key_id"  # the pairing this link's session was opened with


class CarelockSimulator:
    """One simulated carelock lock or key safe: ``async with CarelockSimulator(Kind.LOCK) as sim``."""

    def __init__(
        self,
        kind: Kind,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        state_file: Path | None = None,
        pairing: bool = False,
        faults: LinkFaults | None = None,
        clock: Callable[[], float] = time.monotonic,
        bluez_adapter: str | None = None,
        max_pairings: int = MAX_PAIRINGS,
        confirm_timeout: float = CONFIRM_TIMEOUT,
    ) -> None:
        self.kind = kind
        self.clock = clock
        self.device = CarelockDevice(
            kind, state_file=state_file, pairing=pairing, now=clock(), max_pairings=max_pairings,
            confirm_timeout=confirm_timeout,
        )
        #: called with the six-digit code when a pairing waits for confirmation (the
        #: device's display shows it)
        self.on_code_shown: Callable[[str], None] | None = None
        #: called with the six-digit code when a pairing was confirmed and stored
        self.on_paired: Callable[[str], None] | None = None
        self.device.on_pair_done = self._on_pair_done
        name = "carelock-lock" if kind is Kind.LOCK else "carelock-keysafe"
        self.server = GattServer(
            name, host=host, port=port, faults=faults, advertised_uuids=(gatt.SERVICE,),
            bluez_adapter=bluez_adapter, on_disconnect=self._on_disconnect,
        )
        svc = self.server.add_service(gatt.SERVICE)
        self._control_point = svc.add_characteristic(
            gatt.CONTROL_POINT, write=self._on_write, write_without_response=True, notify=True
        )
        svc.add_characteristic(gatt.PROFILE, value=gatt.encode_profile(kind))
        battery = self.server.add_service(gatt.BATTERY_SERVICE)
        self._battery_char = battery.add_characteristic(
            gatt.BATTERY_LEVEL,
            read=lambda _c: gatt.encode_battery(self.device.battery),
            notify=True,
        )
        info = self.device.info
        dis = self.server.add_service(gatt.DEVICE_INFORMATION)
        for uuid, text in (
            (gatt.MANUFACTURER_NAME, info.manufacturer),
            (gatt.MODEL_NUMBER, info.model),
            (gatt.SERIAL_NUMBER, info.serial),
            (gatt.FIRMWARE_REVISION, info.firmware),
        ):
            dis.add_characteristic(uuid, value=text.encode())
        self._commanding: Connection | None = None
        #: the control channel, once :meth:`register_controls` was given one
        self.control: ControlServer | None = None
        self._battery = self.device.battery
        self._tasks: set[asyncio.Task[Any]] = set()
        self.device.listeners.append(self._on_change)

    @property
    def address(self) -> str:
        return self.server.address

    @property
    def faults(self) -> LinkFaults:
        return self.server.faults

    # -- lifecycle --------------------------------------------------------------------------
    async def __aenter__(self) -> CarelockSimulator:
        await self.server.start()
        self._spawn(self._ticker())
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.server.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ticker(self) -> None:
        """Time passes for the device: unlatch spring-back, auto-relock, drain."""
        while True:
            await asyncio.sleep(0.1)
            self.device.tick(self.clock())

    # -- the control point ------------------------------------------------------------------
    async def _send(self, conn: Connection, frame: bytes) -> None:
        if (
            self.device.faults.tamper
            and frame[0] in (FrameType.RESPONSE, FrameType.EVENT, FrameType.SESSION_ACCEPT)
            and len(frame) > 2
        ):
            frame = frame[:-1] + bytes([frame[-1] ^ 0x01])
        await conn.notify(self._control_point, frame)

    async def _on_write(self, conn: Connection, data: bytes) -> None:
        if self.device.faults.slow_ms:
            await asyncio.sleep(self.device.faults.slow_ms / 1000)
        now = self.clock()
        try:
            frame = decode_frame(data)
        except FrameError as exc:
            log.warning("carelock frame refused", link=conn.id, detail=exc.detail)
            await self._send(conn, ErrorFrame(Status.MALFORMED).encode())
            return
        if isinstance(frame, PairRequest):
            answer, pending = self.device.pair(frame, now)
            conn.state[_PAIRING] = pending  # committed: waits for the central's nonce
            await self._send(conn, answer)
            return
        if isinstance(frame, PairNonce):
            pending = conn.state.pop(_PAIRING, None)
            if not isinstance(pending, DevicePairing):
                await self._send(conn, ErrorFrame(Status.MALFORMED).encode())
                return
            answer, pairing = self.device.reveal(pending, frame, now, link=conn)
            await self._send(conn, answer)
            if pairing is not None:
                log.info("carelock pairing code shown, waiting for confirmation on the device",
                         link=conn.id, code=pairing.code)  # fmt: skip
                if self.on_code_shown is not None:
                    self.on_code_shown(pairing.code)
            return
        if isinstance(frame, SessionOpen):
            session = PeripheralSession()
            answer = session.accept(frame, self.device.key_for(frame.key_id), self.device.status())
            conn.state[_SESSION] = session if session.is_open else None
            conn.state[_KEY_ID] = frame.key_id
            await self._send(conn, answer)
            return
        if not isinstance(frame, Sealed) or frame.type not in (
            FrameType.COMMAND,
            FrameType.REMOVE_PAIRING,
        ):
            await self._send(conn, ErrorFrame(Status.MALFORMED).encode())
            return
        current = conn.state.get(_SESSION)
        if not isinstance(current, PeripheralSession):
            await self._send(conn, ErrorFrame(Status.NO_SESSION).encode())
            return
        try:
            counter, body = current.open_command(frame)
        except FrameError as exc:
            status = (
                exc.status
                if isinstance(exc, Refused)
                else Status.REPLAYED
                if isinstance(exc, Replayed)
                else Status.AUTH_FAILED
                if isinstance(exc, AuthenticationFailed)
                else Status.MALFORMED
            )
            log.warning(
                "carelock command refused", link=conn.id, status=status.name, detail=exc.detail
            )
            await self._send(conn, ErrorFrame(status).encode())
            return
        if isinstance(body, RemovePairingBody):
            removed = self.device.remove_pairing(body.key_id)
            log.info("carelock pairing removed", link=conn.id, key_id=body.key_id.hex(), ok=removed)
            for other in self.server.connections:  # its sessions end with it
                if other is not conn and other.state.get(_KEY_ID) == body.key_id:
                    other.state[_SESSION] = None
            result = Result.OK if removed else Result.BAD_ARGUMENT
            await self._send(conn, current.response(counter, result, self.device.status()))
            return
        if body.op is Opcode.LIST_PAIRINGS:
            await self._send(conn, current.pairing_entry(self._entry(conn, counter, body.arg)))
            return
        self._commanding = conn
        try:
            result = self.device.command(body, now)
        finally:
            self._commanding = None
        log.debug("carelock command", link=conn.id, op=body.op.name, result=result.name)
        await self._send(conn, current.response(counter, result, self.device.status()))

    def _on_pair_done(self, link: object, frame: bytes, code: str) -> None:
        """A pending pairing ended (confirmed, rejected, timed out): tell its central."""
        done = decode_frame(frame)
        stored = isinstance(done, PairDone) and done.status is Status.OK
        conn_id = link.id if isinstance(link, Connection) else None
        if isinstance(done, PairDone):
            log.info("carelock pairing done", link=conn_id, code=code,
                     outcome=done.reason.name.lower())  # fmt: skip
        if isinstance(link, Connection) and link.is_open:
            self._spawn(self._send(link, frame))
        if stored and self.on_paired is not None:
            self.on_paired(code)

    def _on_disconnect(self, conn: Connection) -> None:
        self.device.link_lost(conn)

    def press(self, button: Any) -> dict[str, Any]:
        """The device's button while a pairing code is shown: confirm or reject."""
        if not isinstance(button, str):
            raise ValueError(f"press {BUTTON}")
        did = self.device.press(button, self.clock())
        return self.snapshot() | {"pressed": did}

    def _entry(self, conn: Connection, counter: int, index: int) -> PairingEntry:
        """Pairing ``index`` (clamped to the last one held) for LIST_PAIRINGS."""
        ids = self.device.pairing_ids()
        if not ids:
            return PairingEntry(counter, 0, 0, bytes(8))
        i = min(index, len(ids) - 1)
        mine = conn.state.get(_KEY_ID) == ids[i]
        return PairingEntry(counter, i, len(ids), ids[i], this_session=mine)

    def _on_change(self) -> None:
        """The device changed: sealed EVENTs to the other sessions, battery notifications."""
        for conn in self.server.connections:
            session = conn.state.get(_SESSION)
            if conn is not self._commanding and isinstance(session, PeripheralSession):
                self._spawn(self._send_event(conn))
        if self.device.battery != self._battery:
            self._battery = self.device.battery
            self._spawn(self._notify_battery(self._battery_char, self._battery))

    async def _send_event(self, conn: Connection) -> None:
        # sealed and queued with no await in between, so a link's frames leave in counter order
        session = conn.state.get(_SESSION)
        if isinstance(session, PeripheralSession) and conn.is_open:
            await self._send(conn, session.event(self.device.status()))

    async def _notify_battery(self, char: Characteristic, level: int) -> None:
        await self.server.notify(char, gatt.encode_battery(level))

    # -- switches ---------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        d = self.device
        s = d.status()
        out: dict[str, Any] = {
            "kind": self.kind.name.lower(),
            "serial": d.info.serial,
            "address": self.address,
            "pairing_mode": d.pairing_mode,
            #: the code on the display while a pairing waits for the button (else None)
            "pending_code": d.pending_code,
            "confirm_timeout": d.confirm_timeout,
            "paired_centrals": len(d._state.pairings),
            "battery": d.battery,
            "battery_critical": s.battery_critical,
        }
        if self.kind is Kind.LOCK:
            out |= {"lock": s.lock, "door": s.door, "auto_relock": d._state.auto_relock}
        else:
            out |= {"compartment": s.compartment, "key": s.key}
        f = d.faults
        out["faults"] = {
            "jam": f.jam,
            "drain": f.drain,
            "refuse_pairing": f.refuse_pairing,
            "slow_ms": f.slow_ms,
            "tamper": f.tamper,
        } | self.faults.snapshot()
        return out

    def switch(self, name: str, value: Any) -> dict[str, Any]:
        """One device switch; ``ValueError`` with a technician's message when refused."""
        if value is True:
            text = "on"
        elif value is False:
            text = "off"
        elif value is None:
            raise ValueError(f"{name} needs a value: {SWITCHES.get(name, 'see help')}")
        else:
            text = str(value)
        self.device.switch(name, text, self.clock())
        return self.snapshot()

    def register_controls(self, control: ControlServer) -> None:
        self.control = control
        control.register_faults(self.faults)

        def handler(name: str) -> Callable[[Any], dict[str, Any]]:
            return lambda value: self.switch(name, value)

        for name, help in SWITCHES.items():
            control.register(name, handler(name), help)
        control.register("press", self.press, f"the button while a pairing code is shown: {BUTTON}")
        control.register("state", lambda _v: self.snapshot(), "the device's state and faults")


# -- command line ---------------------------------------------------------------------------
def _print(text: str) -> None:
    print(text, flush=True)


async def _serve(kind: Kind, args: argparse.Namespace) -> int:
    try:
        sim = CarelockSimulator(
            kind,
            state_file=args.state,
            pairing=args.pairing,
            max_pairings=args.max_pairings,
            confirm_timeout=args.confirm_timeout,
            **listen_kwargs(args),
        )
    except ValueError as exc:
        print(f"lockgw-sim {args.command}: {exc}", file=sys.stderr)
        return 2

    def shown(code: str) -> None:
        try:
            control = sim.control.address if sim.control is not None else "HOST:PORT"
        except RuntimeError:  # not listening (yet)
            control = "HOST:PORT"
        _print(
            f"pairing code {code}: if lockgw pair shows the same code, confirm it on the device "
            f"(lockgw-sim switch --control {control} press confirm; press reject if it differs)"
        )

    sim.on_code_shown = shown
    sim.on_paired = lambda code: _print(f"paired: code {code} confirmed on the device")
    async with sim:
        print(
            f"carelock {kind.name.lower()} serial {sim.device.info.serial}"
            + (" in pairing mode" if sim.device.pairing_mode else ""),
            file=sys.stderr,
            flush=True,
        )
        return await run_device(sim.server, args, controls=sim.register_controls)


async def _lock(args: argparse.Namespace) -> int:
    return await _serve(Kind.LOCK, args)


async def _keysafe(args: argparse.Namespace) -> int:
    return await _serve(Kind.KEYSAFE, args)


async def _switch(args: argparse.Namespace) -> int:
    name = args.name or "state"
    try:
        result = await send_control(args.control, name, args.value, timeout=args.timeout)
    except ControlError as exc:
        print(f"lockgw-sim switch: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2, default=str))
    return 0


def _delay(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 60_000:
        raise argparse.ArgumentTypeError("a delay is 0..60000 ms")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError("seconds are more than 0, at most 3600")
    return value


def register(subparsers: Any) -> None:
    for command, handler, what, port in (
        ("lock", _lock, "a carelock electromechanical lock", 47001),
        ("keysafe", _keysafe, "a carelock electronic key safe", 47002),
    ):
        p = subparsers.add_parser(
            command,
            help=f"simulate {what}",
            description=f"Simulate {what} reachable through the loopback BLE transport, "
            "or (--bluez) as a BLE peripheral through BlueZ.",
        )
        add_device_arguments(p, default_port=port)
        p.add_argument(
            "--delay", dest="delay_ms", type=_delay, metavar="MS", help="the same as --delay-ms"
        )
        p.add_argument("--pairing", action="store_true", help="start in pairing mode")
        p.add_argument(
            "--max-pairings",
            type=int,
            default=MAX_PAIRINGS,
            metavar="N",
            help=f"pairings the device keeps at most; more are refused (default {MAX_PAIRINGS})",
        )
        p.add_argument(
            "--confirm-timeout",
            type=_seconds,
            default=CONFIRM_TIMEOUT,
            metavar="S",
            help="seconds a pairing code is shown waiting for `press confirm` before the "
            f"device refuses the pairing (default {CONFIRM_TIMEOUT:g})",
        )
        p.add_argument(
            "--state", type=Path, metavar="FILE", help="persist the device's state here (mode 0600)"
        )
        p.set_defaults(handler=handler)
    p = subparsers.add_parser(
        "switch",
        help="switch a device state or fault of a running carelock simulator",
        description="Switch a device state or fault: pairing on|off, jam on|off, battery N, "
        "drain on|off, door open|close, key take|return, tamper on|off, delay_ms N, drop, ... "
        "Press the device's button while a pairing code is shown: press confirm|reject. "
        "Without NAME: the device's state.",
    )
    p.add_argument(
        "--control", required=True, metavar="HOST:PORT", help="the simulator's control address"
    )
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the answer")
    p.add_argument("name", nargs="?", metavar="NAME", help="help lists every switch")
    p.add_argument("value", nargs="?", metavar="VALUE")
    p.set_defaults(handler=_switch)
