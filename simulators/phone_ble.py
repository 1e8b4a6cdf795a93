"""A carer's phone over BLE GATT through BlueZ: ``lockgw-sim phone unlock --bluez``.

What a phone app does, with bleak's BlueZ backend on one adapter (``--adapter hciN``;
bleak's default adapter otherwise):

1. find the gateway: its quiet advertisement (a service UUID that only phones holding the
   site's advertising key recognise, ``protocols.advert``; a v1 phone without site keys
   looks for the legacy name ``lockgw`` instead), or the address given with
   ``--gateway`` — one BlueZ has seen already, else a scan; connect (a failed or hanging
   attempt is tried again), find the site's RX and TX;
2. write each frame to RX in chunks (``protocols.phone.chunk``) as large as the link's
   MTU allows (BlueZ's characteristic ``MTU``; bleak's ``max_write_without_response_size``),
   each a write with response, so they arrive in order;
3. read TX for the gateway's answer, chunk by chunk: the gateway answers every read for
   this phone only; an empty value means "nothing yet", so read again.

The exchange itself (hello → challenge → proof → result) is :func:`simulators.phone.exchange`,
the same as over the loopback TCP link. Imports ``protocols/`` and bleak only.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError
from bleak_retry_connector import get_device_by_adapter
from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus

from protocols.advert import LEGACY_NAME, LEGACY_UUIDS, expected_adverts, site_uuids
from protocols.errors import FrameError
from protocols.exchange import ImpostorError
from protocols.phone import (
    PhoneFrame,
    Reassembler,
    Result,
    chunk,
    decode_frame,
    encode_frame,
)
from simulators.phone import ImpostorDetected, PhoneError, UnlockAttempt, exchange

__all__ = ["BleChannel", "Recogniser", "find_gateway", "unlock_ble"]


class Recogniser:
    """Which hub is this phone's: with the site's advertising key, its advertised UUID of
    now ± the slack, or its GATT service (in a device BlueZ has connected to before);
    without one (a v1 phone), the legacy name or service."""

    def __init__(self, advert_key: bytes | None) -> None:
        self.key = advert_key
        self.uuids = LEGACY_UUIDS if advert_key is None else site_uuids(advert_key)

    def matches(self, uuids: list[str] | tuple[str, ...], name: str | None) -> bool:
        if self.key is None:
            return name == LEGACY_NAME or LEGACY_UUIDS.service in uuids
        wanted = expected_adverts(self.key, time.time()) | {self.uuids.service}
        return any(u.lower() in wanted for u in uuids)

#: seconds one connection attempt may take
CONNECT_TIMEOUT = 10.0


async def _cached(adapter: str, address: str | None, known: Recogniser) -> BLEDevice | None:
    """A gateway BlueZ already knows on this adapter (seen before: BlueZ does not report
    a known device to a new scan until its advertisement changes), as a phone's OS
    remembers a device it has seen."""
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    try:
        reply = await bus.call(Message(
            destination="org.bluez", path="/", interface="org.freedesktop.DBus.ObjectManager",
            member="GetManagedObjects",
        ))
    finally:
        bus.disconnect()
    if reply is None or reply.message_type == MessageType.ERROR:
        return None
    for path, interfaces in reply.body[0].items():
        props = interfaces.get("org.bluez.Device1")
        if props is None or not path.startswith(f"/org/bluez/{adapter}/"):
            continue
        found = str(props["Address"].value)
        uuids = props["UUIDs"].value if "UUIDs" in props else []
        name = props["Name"].value if "Name" in props else None
        if (address is not None and found.upper() == address.upper()) or (
            address is None and known.matches(uuids, name)
        ):
            return await get_device_by_adapter(found, adapter)
    return None


async def find_gateway(
    adapter: str | None,
    address: str | None = None,
    *,
    timeout: float = 15.0,
    advert_key: bytes | None = None,
) -> BLEDevice:
    """The gateway as this phone's adapter sees it: by address, or the first whose quiet
    advertisement the site's ``advert_key`` recognises (None: the legacy name, a v1 phone);
    one BlueZ knows already, else short scans
    (after each, BlueZ's cache is looked at again: a device reported while the scanner
    was starting is there even when the scanner missed it)."""

    known = Recogniser(advert_key)

    def wanted(device: BLEDevice, adv: AdvertisementData) -> bool:
        if address is not None:
            return device.address.upper() == address.upper()
        return known.matches(adv.service_uuids, adv.local_name)

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        found = await _cached(adapter or "hci0", address, known)
        left = deadline - loop.time()
        if found is not None or left <= 0:
            break
        found = await BleakScanner.find_device_by_filter(
            wanted, timeout=min(3.0, left), bluez={"adapter": adapter} if adapter else {}
        )
        if found is not None:
            break
    if found is None:
        where = f" on {adapter}" if adapter else ""
        what = address or (
            "no lockgw gateway advertising" if advert_key is None
            else "the site's gateway (no advertisement its advertising key recognises)"
        )
        raise PhoneError(f"{what}: not seen{where} within {timeout:g} s")
    return found


class BleChannel:
    """Whole frames over the gateway's RX (write) and TX (read) characteristics."""

    def __init__(self, client: BleakClient, rx: BleakGATTCharacteristic, tx: BleakGATTCharacteristic) -> None:
        self.client = client
        self.rx, self.tx = rx, tx
        #: what BlueZ says this link's ATT MTU is (MTU − 3 = the largest single write)
        self.mtu = rx.max_write_without_response_size + 3
        self._reassembler = Reassembler()

    async def send(self, frame: PhoneFrame) -> None:
        for part in chunk(encode_frame(frame), self.mtu):
            await self.client.write_gatt_char(self.rx, part, response=True)

    async def recv(self) -> PhoneFrame:
        while True:
            part = bytes(await self.client.read_gatt_char(self.tx))
            if not part:  # nothing for us yet
                continue
            frame = self._reassembler.add(part)
            if frame is not None:
                return decode_frame(frame)


async def _connect(device: BLEDevice, attempts: int = 3) -> BleakClient:
    """Connect through the adapter that found ``device`` (not bleak-retry-connector's
    ``establish_connection``: it may move to another adapter that sees the gateway
    better, and a phone has one radio); a connection BlueZ fails or that hangs is tried
    again, as phone apps do."""
    for attempt in range(attempts):
        client = BleakClient(device, timeout=CONNECT_TIMEOUT)
        try:
            await client.connect()
            return client
        except (BleakError, TimeoutError, EOFError):
            with contextlib.suppress(BleakError, OSError, EOFError):
                await client.disconnect()
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.25 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


async def unlock_ble(
    attempt: UnlockAttempt,
    *,
    adapter: str | None = None,
    gateway: str | None = None,
    timeout: float = 30.0,
    vanish_after: str | None = None,
    nonce_out: list[bytes] | None = None,
) -> Result | None:
    """One attempt over BLE (see the module docstring). None only with ``vanish_after``:
    the phone disconnected at that point, as a phone walking out of range does."""
    advert_key = attempt.site.advert_key if attempt.site is not None else None
    if attempt.site is not None and advert_key is None:
        raise PhoneError(
            "the site keys have no advert_key: over BLE a phone needs it to find the hub "
            "(lockgw site-key show --phone; lockgw token issue --bundle)"
        )
    uuids = Recogniser(advert_key).uuids
    try:
        async with asyncio.timeout(timeout):
            device = await find_gateway(adapter, gateway, timeout=timeout, advert_key=advert_key)
            client = await _connect(device)
            try:
                rx = client.services.get_characteristic(uuids.rx)
                tx = client.services.get_characteristic(uuids.tx)
                if rx is None or tx is None:
                    raise PhoneError(f"{device.address} is not a lockgw gateway (no RX/TX)")
                return await exchange(
                    BleChannel(client, rx, tx), attempt, nonce_out=nonce_out,
                    vanish_after=vanish_after,
                )
            finally:
                with contextlib.suppress(BleakError, OSError, EOFError):
                    await client.disconnect()
    except TimeoutError:
        raise PhoneError(f"no answer from the gateway over BLE within {timeout:g} s") from None
    except BleakError as exc:
        raise PhoneError(f"BLE: {exc}") from None
    except FrameError as exc:
        raise PhoneError(f"the gateway sent a broken frame: {exc.detail}") from None
    except ImpostorError as exc:
        raise ImpostorDetected(f"the gateway over BLE: {exc.detail}") from None
