"""Nuki Smart Lock (generations 1–4) over BLE, through the ordinary bleak API.

The client ("bridge") side of the Nuki BLE protocol (``protocols/nuki``): the driver
subscribes to the pairing GDIO characteristic (unencrypted: pairing, and errors the lock
cannot encrypt) and to USDIO (encrypted commands). An action is two writes::

    Request Data(Challenge)  →  Challenge nonce
    Lock Action(nonce)       →  Status ACCEPTED, Keyturner States…, Status COMPLETE
                                (or Error Report, e.g. K_ERROR_MOTOR_BLOCKED)

Pairing (:meth:`NukiDriver.pair`, the installer's ``lockgw pair`` with the lock in pairing
mode) stores the authorization id, the shared key and the lock's public key through the
:class:`SecretStore`; the driver's own X25519 secret is not kept (the shared key is all a
session needs). The lock takes the gateway as its *bridge*: it keeps one bridge
authorization, so pairing the gateway pushes out a Nuki Bridge paired before (``lockgw
pair`` warns).

**Connected on demand** by default (``connection = "on_demand"``): a held BLE connection
and frequent polling drain a Nuki's batteries (nuki_hub users ask for exactly this). The
gateway connects per command and per poll (every 30 minutes unless ``health_interval``
says otherwise) and is **woken by the lock's advertisement** in between: a Nuki
advertises an iBeacon whose TX-power byte has bit 0 set while it holds a state change no
client has read (the door opened, a turn by hand, the battery); :meth:`NukiDriver.wakeups`
watches for it on the gateway's adapter and the supervisor looks at once.
``connection = "keep"`` holds the link instead (notifications arrive at once, at the
batteries' cost).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar, Final, Literal

from bleak import BleakClient
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError

from drivers.base import Driver, SecretStore, unavailable
from drivers.ble import GattTableMismatch, watch_advertisements
from protocols.device import Action, Capability, DeviceInfo, DeviceKind, DeviceState
from protocols.errors import DeviceFailed, DeviceUnavailable, PairingError, Unreachable
from protocols.events import DoorState, LockState
from protocols.nuki import (
    PAIRING_GDIO,
    USDIO,
    ClientType,
    Command,
    Config,
    DeviceType,
    DoorSensorState,
    ErrorCode,
    ErrorReport,
    KeyPair,
    KeyturnerStates,
    LockAction,
    LockActionRequest,
    Message,
    NukiFrameError,
    RequestConfig,
    RequestData,
    Status,
    StatusCode,
    decode_plain,
    encode_encrypted,
    open_envelope,
    parse_envelope,
)
from protocols.nuki import LockState as NukiLockState
from protocols.nuki.pairing import PairingClient

__all__ = ["NukiDriver", "NukiPairingRefused", "NukiRefused", "has_news"]

#: put in the inbox when the link drops
_LOST: Final = ("", b"")
_ACTIONS: Final = {
    Action.LOCK: LockAction.LOCK,
    Action.UNLOCK: LockAction.UNLOCK,
    Action.UNLATCH: LockAction.UNLATCH,
}
_LOCK_STATES: Final = {
    NukiLockState.LOCKED: LockState.LOCKED,
    NukiLockState.UNLOCKED: LockState.UNLOCKED,
    NukiLockState.UNLOCKED_LOCK_N_GO: LockState.UNLOCKED,
    NukiLockState.UNLATCHED: LockState.UNLATCHED,
    NukiLockState.MOTOR_BLOCKED: LockState.JAMMED,
}
_DOOR: Final = {
    DoorSensorState.DOOR_OPENED: DoorState.OPEN,
    DoorSensorState.DOOR_CLOSED: DoorState.CLOSED,
}
_MODELS: Final = {
    DeviceType.SMARTLOCK_1_2: "Smart Lock 1.0/2.0",
    DeviceType.SMARTLOCK_3_4: "Smart Lock 3.0/4.0",
    DeviceType.SMARTLOCK_ULTRA: "Smart Lock Ultra",
}


class NukiRefused(DeviceFailed):
    """The lock answered with an Error Report; ``code`` is Nuki's error code."""

    def __init__(self, device_id: str, code: ErrorCode | int, command: int) -> None:
        report = ErrorReport(int(code), command)
        super().__init__(device_id, f"lock refused: {report.describe()}")
        self.code = code


class NukiPairingRefused(PairingError):
    """Pairing failed; ``code`` is Nuki's error code (P_ERROR_NOT_PAIRING: press the button)."""

    def __init__(self, device_id: str, code: ErrorCode, detail: str) -> None:
        hint = (
            "; put the lock in pairing mode (hold its button 5 s until the ring lights) and retry"
            if code is ErrorCode.P_ERROR_NOT_PAIRING
            else ""
        )
        super().__init__(device_id, f"{detail}{hint}")
        self.code = code


def has_news(manufacturer_data: Mapping[int, bytes]) -> bool:
    """True when a Nuki's iBeacon (Apple's company id 0x004C, type 0x02 0x15) has bit 0 of
    its TX-power byte set: the lock holds a state change no client has read yet."""
    beacon = manufacturer_data.get(0x004C)
    return (
        beacon is not None and len(beacon) >= 23 and beacon[:2] == b"\x02\x15"
        and bool(beacon[-1] & 0x01)
    )


def to_device_state(states: KeyturnerStates) -> DeviceState:
    return DeviceState(
        kind=DeviceKind.LOCK,
        lock=_LOCK_STATES.get(states.lock_state, LockState.UNKNOWN),
        door=_DOOR.get(states.door_sensor_state, DoorState.UNKNOWN),
        battery=states.battery_percent,
        battery_critical=states.battery_critical,
    )


class NukiDriver(Driver):
    """A Nuki Smart Lock. Options: ``app_id`` (int, default random per driver), ``name``."""

    name: ClassVar[str] = "nuki"
    kind: ClassVar[DeviceKind] = DeviceKind.LOCK
    default_connection: ClassVar[Literal["keep", "on_demand"]] = "on_demand"
    #: the lock's beacon says when it has news; the poll is only a safety net (nuki_hub's
    #: default lock-state query interval is 30 minutes too)
    default_health_interval: ClassVar[float] = 1800.0
    pairing_notice: ClassVar[str | None] = (
        "the gateway pairs as this Nuki's bridge. A lock has one bridge slot: a Nuki Bridge "
        "already paired with it is pushed out (remote access and notifications through the "
        "Nuki app stop working through that Bridge). The Nuki app on phones keeps working."
    )
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {
            Capability.LOCK,
            Capability.UNLOCK,
            Capability.UNLATCH,
            Capability.DOOR_SENSOR,
            Capability.BATTERY,
        }
    )

    def __init__(
        self,
        device_id: str,
        address: str,
        *,
        secrets: SecretStore,
        options: Mapping[str, Any] | None = None,
        timeout: float = 10.0,
        adapter: str = "hci0",
    ) -> None:
        super().__init__(
            device_id, address, secrets=secrets, options=options, timeout=timeout, adapter=adapter
        )
        self.client_name = str(self.options.get("name", "lockgw"))
        self._client: BleakClient | None = None
        self._inbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._busy = False
        self._info: DeviceInfo | None = None
        self._last_states: KeyturnerStates | None = None
        #: writes sent to the lock since construction (the bench reads it)
        self.writes = 0

    # -- credentials ---------------------------------------------------------------------
    def _credentials(self) -> tuple[bytes, bytes, int]:
        stored = self.secrets.load(self.device_id)
        if stored is None:
            raise PairingError(
                self.device_id, "not paired; run `lockgw pair` with the lock in pairing mode"
            )
        try:
            return (
                bytes.fromhex(stored["auth_id"]),
                bytes.fromhex(stored["shared_key"]),
                int(stored["app_id"]),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise PairingError(
                self.device_id, f"stored credentials are damaged ({exc}); pair again"
            ) from exc

    # -- link ----------------------------------------------------------------------------
    @property
    def is_connected(self) -> bool:
        return self._client is not None and self._client.is_connected

    def _on_notify(self, char: BleakGATTCharacteristic, data: bytearray) -> None:
        uuid = char.uuid.lower()
        if self._busy or uuid == PAIRING_GDIO:
            self._inbox.put_nowait((uuid, bytes(data)))
            return
        # idle: an unsolicited Keyturner States (door opened, battery, jam)
        try:
            msg = self._decode(uuid, bytes(data))
        except (NukiFrameError, PairingError):
            return
        if msg.command == Command.KEYTURNER_STATES:
            self._publish(to_device_state(KeyturnerStates.decode(msg.payload)))

    def _on_lost(self, client: BleakClient) -> None:
        """The link went down: a waiting exchange fails now, not at its timeout."""
        if client is self._client:
            self._inbox.put_nowait(_LOST)
            self._link_lost()

    async def _connect(self) -> None:
        if self.is_connected:
            return
        if self._client is not None:  # a link that dropped: let bleak close what it holds
            await self._disconnect()
        try:
            client = await self._open_link(
                disconnected_callback=self._on_lost, required=(PAIRING_GDIO, USDIO)
            )
        except GattTableMismatch as exc:
            if exc.duplicated:
                raise unavailable(self.device_id, "connect", exc) from exc
            raise DeviceFailed(
                self.device_id,
                "no Nuki Smart Lock 1.0–4.0 pairing service (a92ee100-…) on this device; "
                "a Nuki Smart Lock Ultra, Opener or another device is not supported by the `nuki` driver",
            ) from exc
        except BleakError as exc:
            raise unavailable(self.device_id, "connect", exc) from exc
        try:
            await client.start_notify(PAIRING_GDIO, self._on_notify)
            await client.start_notify(USDIO, self._on_notify)
        except BleakError as exc:
            await self._drop(client)
            raise unavailable(self.device_id, "connect", exc) from exc
        except BaseException:
            await self._drop(client)
            raise
        self._client = client

    @staticmethod
    async def _drop(client: BleakClient) -> None:
        with contextlib.suppress(BleakError, OSError, EOFError):
            await client.disconnect()

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await self._drop(client)

    async def _write(self, char: str, frame: bytes) -> None:
        if not self.is_connected:
            await self._connect()
        assert self._client is not None
        self.writes += 1
        try:
            await self._client.write_gatt_char(char, frame, response=True)
        except BleakError as exc:
            await self._disconnect()
            raise unavailable(self.device_id, "write", exc) from exc

    # -- the lock's beacon ------------------------------------------------------------------
    async def wakeups(self) -> AsyncIterator[None]:
        """One item per advertisement that says the lock has unread news (see the module
        docstring); nothing while it has none. Scans on the gateway's adapter through the
        shared scanner (:func:`drivers.ble.watch_advertisements`)."""
        news: asyncio.Queue[None] = asyncio.Queue(maxsize=1)

        def seen(_device: BLEDevice, adv: AdvertisementData) -> None:
            if has_news(adv.manufacturer_data) and not news.full():
                news.put_nowait(None)

        async with watch_advertisements(self.address, seen, adapter=self.adapter):
            while True:
                await news.get()
                yield

    # -- messages ------------------------------------------------------------------------
    def _decode(self, char: str, data: bytes) -> Message:
        if char == PAIRING_GDIO:
            return decode_plain(data)
        _, key, _ = self._credentials()
        return open_envelope(parse_envelope(data), key)

    async def _next(self) -> tuple[str, bytes]:
        item = await self._inbox.get()
        if item is _LOST:
            raise DeviceUnavailable(
                self.device_id, "the BLE link to the lock was lost", Unreachable.LINK_LOST
            )
        return item

    async def _receive(self) -> Message:
        char, data = await self._next()
        try:
            msg = self._decode(char, data)
        except NukiFrameError as exc:
            raise DeviceFailed(
                self.device_id, f"undecodable answer from the lock: {exc.detail}"
            ) from exc
        if msg.command == Command.ERROR_REPORT:
            report = ErrorReport.decode(msg.payload)
            raise NukiRefused(self.device_id, report.error or report.code, report.command)
        return msg

    async def _expect(self, *commands: Command) -> Message:
        """The next message with one of ``commands``; Keyturner States on the way are kept."""
        while True:
            msg = await self._receive()
            if msg.command in commands:
                return msg
            if msg.command == Command.KEYTURNER_STATES:
                self._last_states = KeyturnerStates.decode(msg.payload)

    async def _request(self, command: Command, payload: bytes, *answers: Command) -> Message:
        auth_id, key, _ = self._credentials()
        await self._write(USDIO, encode_encrypted(key, auth_id, command, payload))
        return await self._expect(*answers)

    async def _challenge(self) -> bytes:
        msg = await self._request(
            Command.REQUEST_DATA, RequestData(Command.CHALLENGE).encode(), Command.CHALLENGE
        )
        return msg.payload

    async def _session(self, work: Any) -> Any:
        """Run one exchange with notifications routed to the inbox; leftovers are dropped."""
        self._busy = True
        while not self._inbox.empty():
            self._inbox.get_nowait()
        try:
            return await work
        finally:
            self._busy = False

    # -- Driver --------------------------------------------------------------------------
    async def _execute(self, action: Action) -> DeviceState:
        if action not in _ACTIONS:
            raise DeviceFailed(self.device_id, f"a Nuki lock cannot {action.value}")
        state: DeviceState = await self._session(self._lock_action(_ACTIONS[action]))
        return state

    async def _lock_action(self, action: LockAction) -> DeviceState:
        _, _, app_id = self._credentials()
        self._last_states = None
        nonce = await self._challenge()
        request = LockActionRequest(action, app_id, nonce, 0, self.client_name[:20])
        try:
            msg = await self._request(Command.LOCK_ACTION, request.encode(), Command.STATUS)
            while Status.decode(msg.payload).status is not StatusCode.COMPLETE:
                msg = await self._expect(Command.STATUS)
        except NukiRefused as exc:
            if exc.code is ErrorCode.K_ERROR_MOTOR_BLOCKED and self._last_states is not None:
                self._publish(to_device_state(self._last_states))
            raise
        if self._last_states is None:
            return await self._states()
        return to_device_state(self._last_states)

    async def _states(self) -> DeviceState:
        msg = await self._request(
            Command.REQUEST_DATA,
            RequestData(Command.KEYTURNER_STATES).encode(),
            Command.KEYTURNER_STATES,
        )
        return to_device_state(KeyturnerStates.decode(msg.payload))

    async def _refresh(self) -> DeviceState:
        state: DeviceState = await self._session(self._states())
        return state

    async def _config(self) -> Config:
        nonce = await self._challenge()
        msg = await self._request(
            Command.REQUEST_CONFIG, RequestConfig(nonce).encode(), Command.CONFIG
        )
        return Config.decode(msg.payload)

    async def device_info(self) -> DeviceInfo:
        """Model, serial (Nuki ID) and firmware from the lock's Config, read once per driver."""
        if self._info is None:
            async with self._lock:
                config: Config = await self._guard("device_info", self._session(self._config()))
            model = (
                _MODELS.get(config.device_type, "Smart Lock")
                if config.device_type is not None
                else "Smart Lock"
            )
            self._info = DeviceInfo(
                manufacturer="Nuki Home Solutions",
                model=f"Nuki {model}",
                serial=config.serial,
                firmware=config.firmware,
            )
        return self._info

    async def _pair(self) -> None:
        app_id = int(self.options.get("app_id", secrets.randbits(31)))
        client = PairingClient(
            KeyPair.generate(), app_id=app_id, name=self.client_name, id_type=ClientType.BRIDGE
        )
        self._busy = True
        while not self._inbox.empty():
            self._inbox.get_nowait()
        try:
            await self._write(PAIRING_GDIO, client.start())
            while client.result is None:
                char, data = await self._next()
                if char != PAIRING_GDIO:
                    continue
                try:
                    frame = client.receive(decode_plain(data))
                except NukiFrameError as exc:
                    raise NukiPairingRefused(self.device_id, exc.code, exc.detail) from exc
                if frame is not None:
                    await self._write(PAIRING_GDIO, frame)
        finally:
            self._busy = False
        paired = client.result
        self.secrets.save(
            self.device_id,
            {
                "auth_id": paired.auth_id.hex(),
                "shared_key": paired.shared_key.hex(),
                "lock_public_key": paired.lock_public_key.hex(),
                "lock_uuid": paired.lock_uuid.hex(),
                "app_id": app_id,
            },
        )
