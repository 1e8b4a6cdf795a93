"""carelock lock and key-safe drivers, through the ordinary bleak API only.

Connect: subscribe to the control point and to Battery Level, open a session (one
write, one notification; the sealed accept carries the device's status and kind, so a
device of the other kind is refused). Pairing first reads the plain profile characteristic. A command is
then one write without response and one notification, the minimum a BLE
request/answer can take. Unsolicited events and battery notifications become
:class:`DeviceState` snapshots on :meth:`Driver.events`.

The driver connects on demand: ``execute``/``refresh`` on a disconnected driver
connect first, so a supervisor may keep the link or drop it between commands.

Pairing (installer's step, device in pairing mode) stores in the secret store
``{"profile": "carelock-v1", "key_id": hex, "pair_key": hex, "paired_at": ISO}`` and
logs the 6-digit pairing code the device also shows; :attr:`pairing_code` keeps it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

import structlog
from bleak import BleakClient
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.exc import BleakError, BleakGATTProtocolError

from drivers.base import Driver, PairingSlot, unavailable
from protocols.carelock import (
    CentralPairing,
    CentralSession,
    EventBody,
    Kind,
    Opcode,
    PairingEntry,
    Refused,
    ResponseBody,
    Result,
    Status,
    StatusBlock,
    gatt,
)
from protocols.device import Action, Capability, DeviceInfo, DeviceKind, DeviceState, DoorState
from protocols.errors import (
    DeviceFailed,
    DeviceUnavailable,
    FrameError,
    PairingError,
    Unreachable,
)

__all__ = ["CarelockKeysafeDriver", "CarelockLockDriver"]

log = structlog.get_logger("lockgw.drivers.carelock")
T = TypeVar("T")

PROFILE_NAME = "carelock-v1"
_OPCODES = {
    Action.LOCK: Opcode.LOCK,
    Action.UNLOCK: Opcode.UNLOCK,
    Action.UNLATCH: Opcode.UNLATCH,
    Action.OPEN: Opcode.OPEN,
}
_RESULT_WORDS = {
    Result.JAMMED: "jammed: the bolt or compartment is blocked; check the door",
    Result.NOT_SUPPORTED: "not supported by this device",
    Result.BATTERY_EMPTY: "battery empty: replace the batteries",
    Result.DOOR_OPEN: "the door is open: close it before locking",
    Result.BAD_ARGUMENT: "the device refused the argument",
}


class _CarelockDriver(Driver):
    device_kind: ClassVar[Kind]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._client: BleakClient | None = None
        self._session: CentralSession | None = None
        self._plain: asyncio.Future[bytes] | None = None  # pair response / session accept
        self._pending: tuple[int, asyncio.Future[ResponseBody | PairingEntry]] | None = None
        self._status: StatusBlock | None = None
        self._battery: int | None = None
        self._info: DeviceInfo | None = None
        #: the 6-digit code of the last pairing, for the installer to compare with the device
        self.pairing_code: str | None = None
        self._log = log.bind(device=self.device_id)

    # -- link -----------------------------------------------------------------------------
    @property
    def is_connected(self) -> bool:
        return self._client is not None and self._client.is_connected and self._session is not None

    async def _guard(self, what: str, aw: Awaitable[T]) -> T:
        """The base's guard, plus the two error families this driver meets at its edge."""
        return await super()._guard(what, self._bleak(what, aw))

    async def _bleak(self, what: str, aw: Awaitable[T]) -> T:
        try:
            return await aw
        except BleakGATTProtocolError as exc:  # the device answered with an ATT error
            raise DeviceFailed(self.device_id, f"{what}: {exc}") from exc
        except BleakError as exc:
            raise unavailable(self.device_id, what, exc) from exc
        except FrameError as exc:
            raise DeviceFailed(self.device_id, f"{what}: {exc.detail}") from exc

    def _check_kind(self, kind: Kind) -> None:
        if kind is not self.device_kind:
            raise DeviceFailed(
                self.device_id,
                f"the device at {self.address} is a carelock {kind.name.lower()}, not a "
                f"{self.device_kind.name.lower()}: check the driver in the config",
            )

    async def _link(self, *, pairing: bool = False) -> BleakClient:
        """Connect the transport and subscribe; no session yet. Before pairing the plain
        profile characteristic is checked; afterwards the sealed session accept says the
        kind, so a reconnect saves that read (and the battery read, which notifications
        keep current while connected and ``refresh`` re-reads)."""
        if self._client is not None and self._client.is_connected:
            return self._client
        if self._client is not None:  # a link that dropped: let bleak close what it holds
            await self._close(self._client)
        client = await self._bleak(
            "connect",
            self._open_link(
                disconnected_callback=self._on_disconnect,
                required=(gatt.CONTROL_POINT, gatt.BATTERY_LEVEL),
            ),
        )
        try:
            if pairing:
                raw = await self._bleak("profile", client.read_gatt_char(gatt.PROFILE))
                self._check_kind(gatt.decode_profile(bytes(raw)))
            await self._bleak("subscribe", client.start_notify(gatt.CONTROL_POINT, self._on_frame))
            await self._bleak(
                "subscribe", client.start_notify(gatt.BATTERY_LEVEL, self._on_battery)
            )
            if self._battery is None:
                self._battery = gatt.decode_battery(
                    bytes(await self._bleak("battery", client.read_gatt_char(gatt.BATTERY_LEVEL)))
                )
        except BaseException:
            await self._close(client)
            raise
        self._client = client
        return client

    async def _connect(self) -> None:
        if self.is_connected:
            return
        secrets = self.secrets.load(self.device_id)
        if secrets is None:
            raise PairingError(
                self.device_id, "not paired: put the device in pairing mode and run lockgw pair"
            )
        try:
            key_id, pair_key = bytes.fromhex(secrets["key_id"]), bytes.fromhex(secrets["pair_key"])
        except (KeyError, ValueError, TypeError) as exc:
            raise PairingError(
                self.device_id, f"stored pairing is unusable ({exc}): pair again"
            ) from None
        client = await self._link()
        session = CentralSession(pair_key, key_id)
        try:
            answer = await self._plain_exchange(client, session.open_frame())
            status = session.accept(answer)
            self._check_kind(status.kind)
            self._status = status
        except Refused as exc:
            await self._close(client)
            if exc.status is Status.UNKNOWN_KEY:
                raise PairingError(
                    self.device_id, "the device does not know this gateway: pair again"
                ) from exc
            raise DeviceFailed(
                self.device_id, f"session refused: {exc.status.name.lower()}"
            ) from exc
        except BaseException:
            await self._close(client)
            raise
        self._session = session
        relock = self.options.get("auto_relock")
        if relock is not None and self.device_kind is Kind.LOCK:
            await self._call(Opcode.SET_AUTO_RELOCK, int(relock))
        self._log.info("carelock.connected", battery=self._battery)

    async def _plain_exchange(self, client: BleakClient, frame: bytes) -> bytes:
        self._plain = asyncio.get_running_loop().create_future()
        try:
            await self._bleak(
                "write", client.write_gatt_char(gatt.CONTROL_POINT, frame, response=False)
            )
            return await self._plain
        finally:
            self._plain = None

    async def _close(self, client: BleakClient) -> None:
        self._session = None
        self._client = None
        try:
            await client.disconnect()
        except BleakError as exc:
            self._log.warning("carelock.disconnect_failed", error=str(exc))

    async def _disconnect(self) -> None:
        if self._client is not None:
            await self._close(self._client)

    def _on_disconnect(self, client: BleakClient) -> None:
        if client is not self._client:
            return
        self._session = None
        self._fail(DeviceUnavailable(self.device_id, "link lost", Unreachable.LINK_LOST))
        self._log.info("carelock.link_lost")
        self._link_lost()

    def _fail(self, exc: Exception) -> None:
        if self._pending is not None and not self._pending[1].done():
            self._pending[1].set_exception(exc)
        if self._plain is not None and not self._plain.done():
            self._plain.set_exception(exc)

    # -- notifications --------------------------------------------------------------------
    def _on_frame(self, _char: BleakGATTCharacteristic, data: bytearray) -> None:
        if self._plain is not None and not self._plain.done():
            self._plain.set_result(bytes(data))
            return
        if self._session is None:
            self._log.warning("carelock.frame_without_session", size=len(data))
            return
        try:
            body = self._session.receive(bytes(data))
        except Refused as exc:
            self._fail(
                DeviceFailed(
                    self.device_id, f"the device refused the command: {exc.status.name.lower()}"
                )
            )
            return
        except FrameError as exc:  # tampered, replayed, truncated: refused, never acted on
            self._log.warning("carelock.frame_refused", detail=exc.detail)
            self._fail(DeviceFailed(self.device_id, f"answer refused: {exc.detail}"))
            return
        if isinstance(body, EventBody):
            self._status = body.status
            self._publish(self._state())
        elif self._pending is not None and body.reply_to == self._pending[0]:
            if not self._pending[1].done():
                self._pending[1].set_result(body)
        else:
            self._log.warning("carelock.unexpected_response", reply_to=body.reply_to)

    def _on_battery(self, _char: BleakGATTCharacteristic, data: bytearray) -> None:
        try:
            level = gatt.decode_battery(bytes(data))
        except FrameError as exc:
            self._log.warning("carelock.battery_refused", detail=exc.detail)
            return
        if level != self._battery:
            self._battery = level
            if self._status is not None:
                self._publish(self._state())

    # -- commands ---------------------------------------------------------------------------
    async def _send_sealed(self, counter: int, frame: bytes) -> ResponseBody | PairingEntry:
        """Write one sealed frame; the device's answer to it (RESPONSE, or PAIRING)."""
        assert self._client is not None
        fut: asyncio.Future[ResponseBody | PairingEntry] = (
            asyncio.get_running_loop().create_future()
        )
        self._pending = (counter, fut)
        try:
            await self._bleak(
                "write", self._client.write_gatt_char(gatt.CONTROL_POINT, frame, response=False)
            )
            return await fut
        finally:
            self._pending = None

    async def _call(self, op: Opcode, arg: int = 0) -> ResponseBody:
        if not self.is_connected:
            await self._connect()
        assert self._session is not None and self._client is not None
        body = await self._send_sealed(*self._session.command(op, arg))
        if not isinstance(body, ResponseBody):
            raise DeviceFailed(self.device_id, f"{op.name.lower()}: answered with a pairing entry")
        self._status = body.status
        if body.result is not Result.OK:
            self._publish(self._state())  # a jam is news for the supervisor, not only a failure
            raise DeviceFailed(self.device_id, f"{op.name.lower()}: {_RESULT_WORDS[body.result]}")
        return body

    async def _execute(self, action: Action) -> DeviceState:
        if Capability(action.value) not in self.capabilities:
            raise DeviceFailed(
                self.device_id, f"a carelock {self.device_kind.name.lower()} cannot {action.value}"
            )
        await self._call(_OPCODES[action])
        return self._state()

    async def _refresh(self) -> DeviceState:
        await self._call(Opcode.STATUS)
        assert self._client is not None
        self._battery = gatt.decode_battery(
            bytes(await self._bleak("battery", self._client.read_gatt_char(gatt.BATTERY_LEVEL)))
        )
        return self._state()

    async def _pair(self) -> None:
        previous = self.secrets.load(self.device_id)
        await self._disconnect()  # a fresh link: the profile is checked before pairing
        client = await self._link(pairing=True)
        pairing = CentralPairing()
        try:
            nonce = pairing.committed(await self._plain_exchange(client, pairing.request()))
            result = pairing.finish(await self._plain_exchange(client, nonce))
        except Refused as exc:
            words = {
                Status.NOT_IN_PAIRING_MODE: "the device is not in pairing mode: put it in pairing mode and try again",
                Status.PAIRING_REFUSED: "the device refused pairing",
            }.get(exc.status, f"pairing refused: {exc.status.name.lower()}")
            raise PairingError(self.device_id, words) from exc
        except FrameError as exc:
            raise PairingError(self.device_id, f"pairing exchange broken: {exc.detail}") from exc
        self.secrets.save(
            self.device_id,
            {
                "profile": PROFILE_NAME,
                "key_id": result.key_id.hex(),
                "pair_key": result.pair_key.hex(),
                "paired_at": datetime.now(UTC).isoformat(timespec="seconds"),
            },
        )
        self.pairing_code = result.code
        self._log.info("carelock.paired", code=result.code, key_id=result.key_id.hex())
        await self._connect()
        if previous is not None and previous.get("key_id") != result.key_id.hex():
            # the gateway's old pairing is of no use now: it does not take a place on the
            # device (which keeps only a few)
            try:
                await self._remove_pairing(bytes.fromhex(str(previous["key_id"])))
            except (DeviceFailed, ValueError, KeyError) as exc:
                self._log.info("carelock.old_pairing_kept", why=str(exc))

    # -- the device's pairings ----------------------------------------------------------------
    async def pairings(self) -> list[PairingSlot]:
        """Every pairing the device holds (``own``: the one this gateway's session uses)."""
        async with self._lock:
            entries = await self._guard("list pairings", self._pairings())
        return [PairingSlot(e.key_id.hex(), e.this_session) for e in entries]

    async def _pairings(self) -> list[PairingEntry]:
        out: list[PairingEntry] = []
        index = 0
        while True:
            if not self.is_connected:
                await self._connect()
            assert self._session is not None
            entry = await self._send_sealed(*self._session.command(Opcode.LIST_PAIRINGS, index))
            if not isinstance(entry, PairingEntry):
                raise DeviceFailed(self.device_id, "list pairings: answered with a response")
            if entry.total == 0:
                return out
            if entry.index != index:  # the device holds fewer now than when we began
                return out
            out.append(entry)
            index += 1
            if index >= entry.total:
                return out

    async def remove_pairing(self, key_id: str) -> None:
        """Make the device forget one pairing. DeviceFailed when it holds no such one."""
        try:
            raw = bytes.fromhex(key_id)
        except ValueError:
            raise DeviceFailed(self.device_id, f"{key_id!r} is not a key id (hex)") from None
        async with self._lock:
            await self._guard("remove pairing", self._remove_pairing(raw))

    async def _remove_pairing(self, key_id: bytes) -> None:
        if not self.is_connected:
            await self._connect()
        assert self._session is not None
        body = await self._send_sealed(*self._session.remove_pairing(key_id))
        if not isinstance(body, ResponseBody):
            raise DeviceFailed(self.device_id, "remove pairing: answered with a pairing entry")
        if body.result is not Result.OK:
            raise DeviceFailed(
                self.device_id, f"remove pairing: the device holds no pairing {key_id.hex()}"
            )
        self._log.warning("carelock.pairing_removed", key_id=key_id.hex())

    async def device_info(self) -> DeviceInfo:
        async with self._lock:
            return await self._guard("device_info", self._read_info())

    async def _read_info(self) -> DeviceInfo:
        if self._info is None:
            client = await self._link()

            async def text(uuid: str) -> str:
                return gatt.decode_text(
                    bytes(await self._bleak("device information", client.read_gatt_char(uuid)))
                )

            self._info = DeviceInfo(
                manufacturer=await text(gatt.MANUFACTURER_NAME),
                model=await text(gatt.MODEL_NUMBER),
                serial=await text(gatt.SERIAL_NUMBER),
                firmware=await text(gatt.FIRMWARE_REVISION),
            )
        return self._info

    # -- values -----------------------------------------------------------------------------
    def _state(self) -> DeviceState:
        s = self._status
        assert s is not None
        if self.device_kind is Kind.LOCK:
            return DeviceState(
                kind=DeviceKind.LOCK,
                lock=s.lock,
                door=s.door or DoorState.UNKNOWN,
                battery=self._battery,
                battery_critical=s.battery_critical,
            )
        return DeviceState(
            kind=DeviceKind.KEYSAFE,
            compartment=s.compartment,
            key=s.key,
            battery=self._battery,
            battery_critical=s.battery_critical,
        )


class CarelockLockDriver(_CarelockDriver):
    """The carelock electromechanical lock: lock, unlock, unlatch; bolt, door contact, auto-relock."""

    name = "carelock-lock"
    kind = DeviceKind.LOCK
    device_kind = Kind.LOCK
    capabilities = frozenset(
        {
            Capability.LOCK,
            Capability.UNLOCK,
            Capability.UNLATCH,
            Capability.DOOR_SENSOR,
            Capability.BATTERY,
            Capability.AUTO_RELOCK,
        }
    )


class CarelockKeysafeDriver(_CarelockDriver):
    """The carelock electronic key safe: open the compartment; compartment contact, key sensor."""

    name = "carelock-keysafe"
    kind = DeviceKind.KEYSAFE
    device_kind = Kind.KEYSAFE
    capabilities = frozenset({Capability.OPEN, Capability.KEY_SENSOR, Capability.BATTERY})
