"""carelock lock and key-safe drivers, through the ordinary bleak API only.

Connect: subscribe to the control point and to Battery Level, open a session (one
write, one notification; the sealed accept carries the device's status and kind, so a
device of the other kind is refused). Pairing first reads the plain profile characteristic. A command is
then one write without response and one notification, the minimum a BLE
request/answer can take. Unsolicited events and battery notifications become
:class:`DeviceState` snapshots on :meth:`Driver.events`.

The driver connects on demand: ``execute``/``refresh`` on a disconnected driver
connect first, so a supervisor may keep the link or drop it between commands.

Pairing (installer's step, device in pairing mode): after the exchange both sides show
the 6-digit code (:attr:`pairing_code`; :attr:`~drivers.base.Driver.on_pairing_code`
hears it at once). The device holds the pairing pending until a person confirms the code
on the device; only its PAIR_DONE "stored" makes the driver keep
``{"profile": "carelock-v1", "key_id": hex, "pair_key": hex, "paired_at": ISO}`` in the
secret store. Rejected on the device, timed out there (:data:`CONFIRM_TIMEOUT`), or no
answer in :data:`CONFIRM_GRACE` seconds more: :class:`PairingError`, nothing kept.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Iterator
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

import structlog
from bleak import BleakClient
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.exc import BleakError, BleakGATTProtocolError

from drivers.base import Driver, PairingSlot, unavailable
from protocols.carelock import (
    CONFIRM_TIMEOUT,
    CentralPairing,
    CentralSession,
    EventBody,
    Kind,
    NotConfirmed,
    Opcode,
    PairDoneReason,
    PairingEntry,
    Refused,
    ResponseBody,
    Result,
    Status,
    StatusBlock,
    gatt,
)
from protocols.carelock.crypto import Pairing
from protocols.device import Action, Capability, DeviceInfo, DeviceKind, DeviceState, DoorState
from protocols.errors import (
    DeviceError,
    DeviceFailed,
    DeviceUnavailable,
    FrameError,
    PairingError,
    PairingNotConfirmed,
    Unreachable,
)

__all__ = ["CarelockKeysafeDriver", "CarelockLockDriver"]

log = structlog.get_logger("lockgw.drivers.carelock")
T = TypeVar("T")

PROFILE_NAME = "carelock-v1"
#: seconds the driver waits for PAIR_DONE beyond the device's own confirm timeout
CONFIRM_GRACE = 15.0
_NOT_CONFIRMED = {
    PairDoneReason.REJECTED: "the code was rejected on the device: nothing stored. If the "
    "codes matched, pair again and press confirm; if not, something else answered",
    PairDoneReason.TIMED_OUT: "nobody confirmed the code on the device in time (it waits "
    f"{CONFIRM_TIMEOUT:g} s): nothing stored; pair again and confirm it on the device",
    PairDoneReason.WINDOW_CLOSED: "the device's pairing mode ended before the code was "
    "confirmed: nothing stored; put it in pairing mode and pair again",
    PairDoneReason.FULL: "the device holds all the pairings it can: remove one "
    "(lockgw devices pairings) and pair again",
}
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
    shows_pairing_code: ClassVar[bool] = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._client: BleakClient | None = None
        self._session: CentralSession | None = None
        #: plain frames (pairing, session accept) while an exchange waits for them
        self._plain: asyncio.Queue[bytes | DeviceError] | None = None
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

    async def _guard(self, what: str, aw: Awaitable[T], *, timeout: float | None = None) -> T:
        """The base's guard, plus the two error families this driver meets at its edge."""
        return await super()._guard(what, self._bleak(what, aw), timeout=timeout)

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
            with self._plain_frames():
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

    @contextlib.contextmanager
    def _plain_frames(self) -> Iterator[None]:
        """While inside, every frame before a session goes to :meth:`_plain_next`, in order."""
        self._plain = asyncio.Queue()
        try:
            yield
        finally:
            self._plain = None

    async def _plain_next(self) -> bytes:
        assert self._plain is not None
        item = await self._plain.get()
        if isinstance(item, DeviceError):
            raise item
        return item

    async def _plain_exchange(self, client: BleakClient, frame: bytes) -> bytes:
        await self._bleak(
            "write", client.write_gatt_char(gatt.CONTROL_POINT, frame, response=False)
        )
        return await self._plain_next()

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

    def _fail(self, exc: DeviceError) -> None:
        if self._pending is not None and not self._pending[1].done():
            self._pending[1].set_exception(exc)
        if self._plain is not None:
            self._plain.put_nowait(exc)

    # -- notifications --------------------------------------------------------------------
    def _on_frame(self, _char: BleakGATTCharacteristic, data: bytearray) -> None:
        if self._plain is not None and self._session is None:
            self._plain.put_nowait(bytes(data))
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

    @property
    def pair_timeout(self) -> float:
        return 2 * self.timeout + CONFIRM_TIMEOUT + CONFIRM_GRACE

    async def _pair(self) -> None:
        previous = self.secrets.load(self.device_id)
        await self._disconnect()  # a fresh link: the profile is checked before pairing
        with self._plain_frames():
            result = await self._pair_exchange()
        self.secrets.save(
            self.device_id,
            {
                "profile": PROFILE_NAME,
                "key_id": result.key_id.hex(),
                "pair_key": result.pair_key.hex(),
                "paired_at": datetime.now(UTC).isoformat(timespec="seconds"),
            },
        )
        self._log.info("carelock.paired", code=result.code, key_id=result.key_id.hex())
        await self._connect()
        if previous is not None and previous.get("key_id") != result.key_id.hex():
            # the gateway's old pairing is of no use now: it does not take a place on the
            # device (which keeps only a few)
            try:
                await self._remove_pairing(bytes.fromhex(str(previous["key_id"])))
            except (DeviceFailed, ValueError, KeyError) as exc:
                self._log.info("carelock.old_pairing_kept", why=str(exc))

    async def _pair_exchange(self) -> Pairing:
        """Request, nonce, reveal (under the command timeout), then the device's PAIR_DONE
        once a person confirmed the code there (or did not)."""
        pairing = CentralPairing()
        self.pairing_code = None
        try:
            try:
                async with asyncio.timeout(self.timeout):
                    client = await self._link(pairing=True)
                    request = pairing.request()
                    nonce = pairing.committed(await self._plain_exchange(client, request))
                    result = pairing.finish(await self._plain_exchange(client, nonce))
            except TimeoutError:
                raise DeviceUnavailable(
                    self.device_id, f"pair: no answer in {self.timeout:g} s", Unreachable.NO_ANSWER
                ) from None
            self.pairing_code = result.code
            self._log.info("carelock.pairing_code", code=result.code)
            if self.on_pairing_code is not None:
                self.on_pairing_code(result.code)
            wait = CONFIRM_TIMEOUT + CONFIRM_GRACE
            try:
                async with asyncio.timeout(wait):
                    pairing.done(await self._plain_next())
            except TimeoutError:
                raise PairingNotConfirmed(
                    self.device_id,
                    f"the device did not say in {wait:g} s whether its code was confirmed: "
                    "nothing stored; pair again",
                ) from None
        except NotConfirmed as exc:
            raise PairingNotConfirmed(self.device_id, _NOT_CONFIRMED[exc.outcome]) from exc
        except Refused as exc:
            words = {
                Status.NOT_IN_PAIRING_MODE: "the device is not in pairing mode: put it in pairing mode and try again",
                Status.PAIRING_REFUSED: "the device refused pairing (another pairing may be "
                "waiting for confirmation on it: press reject there, then try again)",
            }.get(exc.status, f"pairing refused: {exc.status.name.lower()}")
            raise PairingError(self.device_id, words) from exc
        except FrameError as exc:
            raise PairingError(self.device_id, f"pairing exchange broken: {exc.detail}") from exc
        return result

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
