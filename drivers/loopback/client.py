"""bleak client backend for ``loopback://host:port``: GATT over TCP to a simulator.

Behaves as bleak's BlueZ backend does, so a driver cannot tell the difference:

* ``connect()`` opens the link and discovers services into bleak's own
  :class:`BleakGATTServiceCollection`; a connect timeout is :class:`TimeoutError`,
  nobody listening is :class:`BleakDeviceNotFoundError`, a refused link is
  :class:`BleakError`.
* An ATT error answer is :class:`BleakGATTProtocolError` (its ``code``); any
  operation on a link that is down, or that drops while waiting, is :class:`BleakError`.
* The disconnected callback runs exactly once per connection whenever the link goes
  down — dropped, closed by the device, or ``disconnect()`` — as BlueZ does.
* A malformed frame from the device drops the link (:class:`FrameError` is logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable
from typing import Any

from bleak.args import SizedBuffer
from bleak.assigned_numbers import CHARACTERISTIC_PROPERTIES, CharacteristicPropertyName
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import (
    BleakDeviceNotFoundError,
    BleakError,
    BleakGATTProtocolError,
    BleakGATTProtocolErrorCode,
)

from protocols import gattlink as gl
from protocols.errors import FrameError

__all__ = ["LoopbackClientBackend"]

logger = logging.getLogger(__name__)


class LoopbackClientBackend(BaseBleakClient):
    """``BleakClient(address, backend=LoopbackClientBackend)``; see :mod:`drivers.ble`."""

    #: ATT's transaction timeout: an unanswered request drops the link (Core Vol 3 F 3.3.3)
    att_timeout: float = 30.0

    def __init__(
        self,
        address_or_ble_device: BLEDevice | str,
        *,
        disconnected_callback: Callable[[], None] | None = None,
        timeout: float = 10.0,
        services: set[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            address_or_ble_device,
            disconnected_callback=disconnected_callback,
            timeout=timeout,
            **kwargs,
        )
        try:
            self._host, self._port = gl.parse_address(self.address)
        except ValueError as exc:
            raise BleakError(str(exc)) from None
        self._wanted_services = services
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._connected = False
        #: connect() completed: only then does losing the link call the disconnected callback
        self._established = False
        self._hello: gl.Hello | None = None
        self._ids = itertools.count(1)
        self._last_id = 0
        self._pending: dict[int, asyncio.Future[gl.PeripheralFrame]] = {}
        self._callbacks: dict[int, NotifyCallback] = {}
        self._cache: dict[int, bytes] = {}
        self._lost_reason = ""
        #: which link a reader task serves: a stale reader never tears down a newer link
        self._generation = 0

    # -- properties ---------------------------------------------------------------------
    @property
    def name(self) -> str:
        if self._hello is None:
            raise BleakError("Not connected")
        return self._hello.name

    @property
    def mtu_size(self) -> int:
        return self._hello.mtu if self._hello is not None else gl.MIN_MTU

    @property
    def is_connected(self) -> bool:
        return self._connected

    # -- connecting ---------------------------------------------------------------------
    async def connect(self, pair: bool = False, **kwargs: Any) -> None:
        if self._connected:
            raise BleakError("Client is already connected")
        if pair:
            logger.debug("%s: pairing is not part of the loopback transport; ignored", self.address)
        timeout = float(kwargs.get("timeout", self._timeout))
        try:
            async with asyncio.timeout(timeout):
                await self._open()
                self.services = await self._discover()
            if not self._connected:  # the link died between the last answer and now
                raise BleakError(
                    f"{self.address}: disconnected while connecting ({self._lost_reason})"
                )
            self._established = True
        except BaseException:
            self._teardown("connect failed", fire=False)
            task, self._reader_task = self._reader_task, None
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            raise

    async def _open(self) -> None:
        try:
            reader, writer = await asyncio.open_connection(self._host, self._port)
        except OSError as exc:
            raise BleakDeviceNotFoundError(
                self.address, f"Device with address {self.address} was not found: {exc}"
            ) from exc
        self._reader, self._writer = reader, writer
        writer.write(gl.pack(gl.Connect()))
        try:
            first = await _read_frame(reader)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise BleakError(
                f"{self.address}: the device closed the link before the GATT handshake "
                "(connection refused)"
            ) from exc
        except FrameError as exc:
            raise BleakError(f"{self.address}: malformed handshake: {exc.detail}") from exc
        if isinstance(first, gl.Disconnect):
            raise BleakError(f"{self.address}: connection refused: {first.reason}")
        if not isinstance(first, gl.Hello):
            raise BleakError(f"{self.address}: expected hello, got {type(first).__name__}")
        if first.version != gl.PROTOCOL_VERSION:
            raise BleakError(f"{self.address}: unsupported loopback GATT version {first.version}")
        self._hello = first
        self._connected = True
        self._lost_reason = ""
        self._generation += 1
        self._reader_task = asyncio.create_task(self._read_loop(reader, self._generation))

    async def _discover(self) -> BleakGATTServiceCollection:
        reply = await self._request(gl.Discover(self._new_id()), gl.Services)
        assert isinstance(reply, gl.Services)
        collection = BleakGATTServiceCollection()
        mtu = self.mtu_size
        for s in reply.services:
            if self._wanted_services is not None and s.uuid not in self._wanted_services:
                continue
            service = BleakGATTService(s, s.handle, s.uuid)
            collection.add_service(service)
            for c in s.characteristics:
                props: list[CharacteristicPropertyName] = [
                    name for bit, name in CHARACTERISTIC_PROPERTIES.items() if c.properties & bit
                ]
                char = BleakGATTCharacteristic(c, c.handle, c.uuid, props, lambda: mtu - 3, service)
                collection.add_characteristic(char)
                for d in c.descriptors:
                    collection.add_descriptor(BleakGATTDescriptor(d, d.handle, d.uuid, char))
        return collection

    async def disconnect(self) -> None:
        if not self._connected:
            self._teardown("disconnected", fire=False)
            return
        writer = self._writer
        if writer is not None:
            with contextlib.suppress(ConnectionError, OSError, RuntimeError):
                writer.write(gl.pack(gl.Disconnect("central disconnected")))
                async with asyncio.timeout(1.0):
                    await writer.drain()
        self._teardown("disconnected by the gateway", fire=True)
        task = self._reader_task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(
            "OS-level pairing does not exist on the loopback transport; "
            "lockgw devices pair at the application layer (lockgw pair)"
        )

    async def unpair(self) -> None:
        raise NotImplementedError("OS-level pairing does not exist on the loopback transport")

    # -- the link -----------------------------------------------------------------------
    def _teardown(self, reason: str, *, fire: bool) -> None:
        """The link is down: fail waiters, close the stream, call back once."""
        was_established = self._connected and self._established
        self._connected = self._established = False
        if reason and not self._lost_reason:
            self._lost_reason = reason
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(BleakError(f"{self.address}: disconnected ({reason})"))
        self._pending.clear()
        self._callbacks.clear()
        if self._writer is not None:
            self._writer.transport.abort()
            self._writer = None
        task = self._reader_task
        if task is not None and task is not asyncio.current_task() and not task.done():
            task.cancel()  # it ends at once; disconnect()/connect() await it where they can
        self._reader = None
        self.services = None
        if was_established and fire and self._disconnected_callback is not None:
            try:
                self._disconnected_callback()
            except Exception:
                logger.exception("%s: disconnected callback failed", self.address)

    async def _read_loop(self, reader: asyncio.StreamReader, generation: int) -> None:
        reason = "link lost"
        try:
            while generation == self._generation:
                frame = await _read_frame(reader)
                if generation != self._generation:
                    return
                if not self._dispatch(frame):
                    reason = f"protocol violation: unexpected {type(frame).__name__}"
                    break
                if isinstance(frame, gl.Disconnect):
                    reason = f"device disconnected: {frame.reason}"
                    break
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            reason = "link lost"
        except FrameError as exc:
            logger.warning("%s: malformed frame from device: %s", self.address, exc.detail)
            reason = f"malformed frame: {exc.detail}"
        if generation == self._generation:
            self._teardown(reason, fire=True)

    def _dispatch(self, frame: gl.PeripheralFrame) -> bool:
        """Route one frame; False for a protocol violation."""
        if isinstance(frame, gl.Notification):
            self._cache[frame.handle] = frame.value
            callback = self._callbacks.get(frame.handle)
            if callback is not None:
                try:
                    callback(bytearray(frame.value))
                except Exception:
                    logger.exception("%s: notification callback failed", self.address)
            return True
        if isinstance(frame, gl.Disconnect):
            return True
        if isinstance(frame, gl.Services | gl.Value | gl.Ok | gl.ErrorReply):
            fut = self._pending.get(frame.id)
            if fut is not None:
                if not fut.done():
                    fut.set_result(frame)
                return True
            return 0 < frame.id <= self._last_id  # an answer to an abandoned request
        return False  # hello / advertisement mid-link

    def _new_id(self) -> int:
        self._last_id = next(self._ids)
        return self._last_id

    async def _send(self, frame: gl.CentralFrame) -> None:
        writer = self._writer
        if not self._connected or writer is None:
            raise BleakError("Not connected")
        try:
            writer.write(gl.pack(frame))
            await writer.drain()
        except (ConnectionError, OSError) as exc:
            self._teardown("link lost", fire=True)
            raise BleakError(f"{self.address}: disconnected (link lost)") from exc

    async def _request(
        self,
        frame: gl.Discover | gl.Read | gl.Write | gl.Subscribe | gl.Unsubscribe,
        expect: type[gl.Services] | type[gl.Value] | type[gl.Ok],
    ) -> gl.PeripheralFrame:
        if not self._connected:
            raise BleakError("Not connected")
        fut: asyncio.Future[gl.PeripheralFrame] = asyncio.get_running_loop().create_future()
        self._pending[frame.id] = fut
        try:
            await self._send(frame)
            try:
                async with asyncio.timeout(self.att_timeout):
                    reply = await fut
            except TimeoutError:
                self._teardown("ATT transaction timeout", fire=True)
                raise BleakError(
                    f"{self.address}: no answer in {self.att_timeout:g} s; link dropped"
                ) from None
        finally:
            self._pending.pop(frame.id, None)
        if isinstance(reply, gl.ErrorReply):
            raise BleakGATTProtocolError(BleakGATTProtocolErrorCode(reply.code))
        if not isinstance(reply, expect):
            self._teardown("protocol violation", fire=True)
            raise BleakError(
                f"{self.address}: expected {expect.__name__}, got {type(reply).__name__}"
            )
        return reply

    # -- I/O ------------------------------------------------------------------------------
    async def read_gatt_char(
        self, characteristic: BleakGATTCharacteristic, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        if not self._connected:
            raise BleakError("Not connected")
        if use_cached and characteristic.handle in self._cache:
            return bytearray(self._cache[characteristic.handle])
        reply = await self._request(gl.Read(self._new_id(), characteristic.handle), gl.Value)
        assert isinstance(reply, gl.Value)
        self._cache[characteristic.handle] = reply.value
        return bytearray(reply.value)

    async def read_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        reply = await self._request(gl.Read(self._new_id(), descriptor.handle), gl.Value)
        assert isinstance(reply, gl.Value)
        return bytearray(reply.value)

    async def write_gatt_char(
        self, characteristic: BleakGATTCharacteristic, data: SizedBuffer, response: bool
    ) -> None:
        if not self._connected:
            raise BleakError("Not connected")
        value = bytes(data)
        if response:
            if len(value) > gl.MAX_VALUE:
                raise BleakGATTProtocolError(
                    BleakGATTProtocolErrorCode.INVALID_ATTRIBUTE_VALUE_LENGTH
                )
            await self._request(gl.Write(self._new_id(), characteristic.handle, value), gl.Ok)
            return
        if "write-without-response" not in characteristic.properties:
            raise BleakError(f"{characteristic.uuid} does not support write without response")
        limit = characteristic.max_write_without_response_size
        if len(value) > limit:
            raise BleakError(
                f"write without response of {len(value)} bytes exceeds "
                f"max_write_without_response_size ({limit})"
            )
        await self._send(gl.WriteCommand(characteristic.handle, value))

    async def write_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, data: SizedBuffer
    ) -> None:
        value = bytes(data)
        if len(value) > gl.MAX_VALUE:
            raise BleakGATTProtocolError(BleakGATTProtocolErrorCode.INVALID_ATTRIBUTE_VALUE_LENGTH)
        await self._request(gl.Write(self._new_id(), descriptor.handle, value), gl.Ok)

    async def start_notify(
        self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback, **kwargs: Any
    ) -> None:
        if not self._connected:
            raise BleakError("Not connected")
        handle = characteristic.handle
        self._callbacks[handle] = callback  # before subscribing: no early notification is lost
        try:
            await self._request(gl.Subscribe(self._new_id(), handle), gl.Ok)
        except BaseException:
            self._callbacks.pop(handle, None)
            raise

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        if not self._connected:
            raise BleakError("Not connected")
        await self._request(gl.Unsubscribe(self._new_id(), characteristic.handle), gl.Ok)
        self._callbacks.pop(characteristic.handle, None)


async def _read_frame(reader: asyncio.StreamReader) -> gl.PeripheralFrame:
    header = await reader.readexactly(gl.FrameBuffer.HEADER)
    body = await reader.readexactly(gl.FrameBuffer.body_length(header))
    return gl.decode_from_peripheral(body)
