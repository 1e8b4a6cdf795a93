"""A GATT server for simulators: over the loopback transport (``protocols/gattlink.py``)
or, with ``bluez_adapter="hci1"``, as a BlueZ peripheral (:mod:`simulators.bluez_peripheral`).

A device simulator declares its GATT table, then serves it::

    server = GattServer("carelock-lock", port=47001)
    svc = server.add_service(0x180F)                               # Battery Service
    level = svc.add_characteristic(0x2A19, value=b"\\x64", notify=True)
    cmd = svc.add_characteristic(
        "8e5c1002-...", write=on_command, write_without_response=True,
    )
    async with server:                       # listens; server.address == "loopback://127.0.0.1:47001"
        level.value = b"\\x50"               # what the next read returns
        await server.notify(level, b"\\x50") # to every subscribed central

Handlers get the :class:`Connection` (per-link ``state`` dict for session keys and the
like) and may be plain or async; a handler raises :class:`GattError` to answer with an
ATT error. Every link honours the server's :class:`~simulators.link_faults.LinkFaults`
(delay, slow replies, corrupt frames, refused connections, drops). Requests of one link
are handled one at a time, in order, as ATT does; many links are served at once.
The same table, handlers and faults serve both transports. Imports ``protocols/`` only
(and dbus-fast for BlueZ).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog

from protocols import gattlink as gl
from protocols.errors import FrameError
from simulators.link_faults import LinkFaults

__all__ = [
    "Characteristic",
    "Connection",
    "GattError",
    "GattServer",
    "LoopbackConnection",
    "Service",
]

log = structlog.get_logger("lockgw.sim.gatt")

ReadHandler = Callable[["Connection"], bytes | Awaitable[bytes]]
WriteHandler = Callable[["Connection", bytes], Awaitable[None] | None]
ConnectionHook = Callable[["Connection"], Awaitable[None] | None]

CCCD_UUID = gl.normalize_uuid(0x2902)
#: how long a central may take to send its first frame
HANDSHAKE_TIMEOUT = 10.0
#: how long close() waits for a link to flush its goodbye
CLOSE_TIMEOUT = 2.0


class GattError(Exception):
    """Raised by a handler: the central gets an ATT error with this code."""

    def __init__(self, code: gl.AttError, message: str = "") -> None:
        super().__init__(f"ATT error {code.name}: {message}" if message else code.name)
        self.code = code
        self.message = message


def _hangup(writer: asyncio.StreamWriter) -> None:
    """Close a stream unless it is already closing (a polite close is flushing)."""
    if not writer.transport.is_closing():
        writer.transport.abort()


async def _maybe_await(result: Any) -> Any:
    return await result if inspect.isawaitable(result) else result


class Characteristic:
    """One characteristic; ``value`` is what a read returns when no read handler is given."""

    def __init__(
        self,
        service: Service,
        uuid: str,
        handle: int,
        properties: gl.Property,
        *,
        value: bytes,
        read: ReadHandler | None,
        write: WriteHandler | None,
        on_subscribe: ConnectionHook | None,
    ) -> None:
        self.service = service
        self.uuid = uuid
        self.handle = handle
        self.properties = properties
        self.value = value
        self.read_handler = read
        self.write_handler = write
        self.on_subscribe = on_subscribe
        #: descriptor handle → (uuid, static value); the CCCD's value is per connection
        self.descriptors: dict[int, tuple[str, bytes]] = {}

    def __repr__(self) -> str:
        return f"<Characteristic {self.uuid} handle={self.handle}>"


class Service:
    def __init__(self, server: GattServer, uuid: str, handle: int) -> None:
        self._server = server
        self.uuid = uuid
        self.handle = handle
        self.characteristics: list[Characteristic] = []

    def add_characteristic(
        self,
        uuid: str | int,
        *,
        value: bytes | None = None,
        read: ReadHandler | None = None,
        write: WriteHandler | None = None,
        write_with_response: bool = True,
        write_without_response: bool = False,
        notify: bool = False,
        indicate: bool = False,
        descriptors: Mapping[str | int, bytes] | None = None,
        on_subscribe: ConnectionHook | None = None,
    ) -> Characteristic:
        """Declare a characteristic. Properties follow from the arguments: readable when
        ``value`` or ``read`` is given, writable when ``write`` is given (with response
        unless ``write_with_response=False``; without response if asked), notifiable when
        ``notify``/``indicate``. Notifiable characteristics get a CCCD (0x2902)."""
        props = gl.Property(0)
        if value is not None or read is not None:
            props |= gl.Property.READ
        if write is not None:
            if write_with_response:
                props |= gl.Property.WRITE
            if write_without_response:
                props |= gl.Property.WRITE_WITHOUT_RESPONSE
        elif write_without_response:
            raise ValueError("write_without_response needs a write handler")
        if notify:
            props |= gl.Property.NOTIFY
        if indicate:
            props |= gl.Property.INDICATE
        if value is not None and len(value) > gl.MAX_VALUE:
            raise ValueError(f"a value is at most {gl.MAX_VALUE} bytes")
        server = self._server
        server._next_handle()  # the characteristic declaration
        char = Characteristic(
            self,
            gl.normalize_uuid(uuid),
            server._next_handle(),
            props,
            value=value or b"",
            read=read,
            write=write,
            on_subscribe=on_subscribe,
        )
        if notify or indicate:
            char.descriptors[server._next_handle()] = (CCCD_UUID, b"")
        for d_uuid, d_value in (descriptors or {}).items():
            char.descriptors[server._next_handle()] = (gl.normalize_uuid(d_uuid), bytes(d_value))
        if len(char.descriptors) > gl.MAX_DESCRIPTORS:
            raise ValueError(f"at most {gl.MAX_DESCRIPTORS} descriptors per characteristic")
        self.characteristics.append(char)
        server._attributes[char.handle] = char
        for h in char.descriptors:
            server._descriptor_of[h] = char
        return char


class Connection:
    """One central's link, as handlers see it. ``state`` is free for the simulator
    (session keys, counters). Over the loopback transport it is a
    :class:`LoopbackConnection`; over BlueZ a ``BluezConnection``
    (:mod:`simulators.bluez_peripheral`)."""

    def __init__(self, server: GattServer, conn_id: int, peer: str) -> None:
        self.server = server
        self.id = conn_id
        self.peer = peer
        self.state: dict[str, Any] = {}
        self.subscriptions: set[int] = set()
        self._closed = asyncio.Event()
        self.frames_received = 0
        self.frames_sent = 0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} from {self.peer}>"

    @property
    def is_open(self) -> bool:
        return not self._closed.is_set()

    def is_subscribed(self, char: Characteristic) -> bool:
        return char.handle in self.subscriptions

    async def notify(self, char: Characteristic, data: bytes) -> bool:
        """Notify this central if it subscribed to ``char``; True when sent."""
        self.server._check_notify(char, data)
        if not self.is_subscribed(char) or self._closed.is_set():
            return False
        await self._notify(char, bytes(data))
        return True

    async def _notify(self, char: Characteristic, data: bytes) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        """Drop the link at once, as a radio that went out of range."""
        raise NotImplementedError

    async def disconnect(self, reason: str = "device disconnected") -> None:
        """End the link from the device's side."""
        raise NotImplementedError


class LoopbackConnection(Connection):
    """A central on the loopback transport: frames over one TCP stream."""

    def __init__(
        self, server: GattServer, conn_id: int, peer: str, writer: asyncio.StreamWriter
    ) -> None:
        super().__init__(server, conn_id, peer)
        self._writer = writer
        self._out: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue(maxsize=1024)

    async def send(self, frame: gl.PeripheralFrame) -> None:
        """Queue one frame; it leaves after the link's current ``delay_ms``."""
        if self._closed.is_set():
            return
        loop = asyncio.get_running_loop()
        await self._out.put((loop.time() + self.server.faults.delay_ms / 1000, gl.pack(frame)))

    async def _notify(self, char: Characteristic, data: bytes) -> None:
        await self.send(gl.Notification(char.handle, data))

    def abort(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            self._writer.transport.abort()

    async def disconnect(self, reason: str = "device disconnected") -> None:
        """End the link politely: a goodbye frame, then close."""
        if self._closed.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT):  # a central that reads nothing: abort
                await self.send(gl.Disconnect(reason))
                await self._out.put((0.0, None))
                await self._closed.wait()
        self.abort()

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        faults = self.server.faults
        try:
            while True:
                due, data = await self._out.get()
                if data is None:
                    break
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if faults.take_corrupt():
                    # 0xFF is a CBOR "break" with nothing to break: never a valid frame
                    data = (
                        data[: gl.FrameBuffer.HEADER] + b"\xff" + data[gl.FrameBuffer.HEADER + 1 :]
                    )
                self._writer.write(data)
                self.frames_sent += 1
                self.server.frames_sent += 1
                await self._writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._closed.set()
            if not self._writer.transport.is_closing():
                self._writer.close()  # flushes what is queued (the goodbye), then closes



class GattServer:
    """A peripheral: services, characteristics, subscribers, links, faults."""

    def __init__(
        self,
        name: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        mtu: int = 247,
        faults: LinkFaults | None = None,
        advertised_uuids: tuple[str | int, ...] = (),
        manufacturer_data: Mapping[int, bytes] | None = None,
        on_connect: ConnectionHook | None = None,
        on_disconnect: ConnectionHook | None = None,
        bluez_adapter: str | None = None,
    ) -> None:
        if not gl.MIN_MTU <= mtu <= gl.MAX_MTU:
            raise ValueError(f"an ATT MTU is {gl.MIN_MTU}..{gl.MAX_MTU}")
        self.name = name
        self.host = host
        self._port = port
        self.mtu = mtu
        self.faults = faults if faults is not None else LinkFaults()
        self.faults._drop = self.drop_links
        self.advertised_uuids = tuple(gl.normalize_uuid(u) for u in advertised_uuids)
        #: what scans see; may be changed at run time (Nuki signals state changes this way)
        self.manufacturer_data: dict[int, bytes] = dict(manufacturer_data or {})
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        #: serve over BlueZ on this adapter (``hci0``) instead of the loopback transport
        self.bluez_adapter = bluez_adapter
        self._bluez: Any = None  # a simulators.bluez_peripheral.BluezPeripheral once started
        self.services: list[Service] = []
        self._attributes: dict[int, Characteristic] = {}
        self._descriptor_of: dict[int, Characteristic] = {}
        self._handles = itertools.count(1)
        self._conn_ids = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._links: dict[int, Connection] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._silent: set[asyncio.StreamWriter] = set()
        self.frames_received = 0
        self.frames_sent = 0

    # -- declaring ------------------------------------------------------------------------
    def _next_handle(self) -> int:
        h = next(self._handles)
        if h > gl.MAX_HANDLE:
            raise ValueError("the GATT table is full")
        return h

    def add_service(self, uuid: str | int) -> Service:
        if len(self.services) >= gl.MAX_SERVICES:
            raise ValueError(f"at most {gl.MAX_SERVICES} services")
        service = Service(self, gl.normalize_uuid(uuid), self._next_handle())
        self.services.append(service)
        return service

    def set_manufacturer_data(self, company: int, data: bytes) -> None:
        """Change what scans see for ``company`` (a Nuki signals news this way)."""
        self.manufacturer_data[company] = bytes(data)
        if self._bluez is not None:
            self._bluez.advertisement_changed()

    def adopt(self, conn: Connection) -> None:
        """A transport other than the loopback one (BlueZ) brings a new link."""
        self._links[conn.id] = conn

    def release(self, conn: Connection) -> None:
        self._links.pop(conn.id, None)

    def new_link_id(self) -> int:
        return next(self._conn_ids)

    def characteristic(self, uuid: str | int) -> Characteristic:
        """The characteristic with this UUID (first match); ``KeyError`` if none."""
        want = gl.normalize_uuid(uuid)
        for char in self._attributes.values():
            if char.uuid == want:
                return char
        raise KeyError(want)

    def table(self) -> tuple[gl.ServiceDef, ...]:
        return tuple(
            gl.ServiceDef(
                s.uuid,
                s.handle,
                tuple(
                    gl.CharacteristicDef(
                        c.uuid,
                        c.handle,
                        int(c.properties),
                        tuple(gl.DescriptorDef(u, h) for h, (u, _) in c.descriptors.items()),
                    )
                    for c in s.characteristics
                ),
            )
            for s in self.services
        )

    # -- lifecycle --------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._bluez is not None:
            raise RuntimeError("a GATT server on BlueZ has no port")
        if self._server is None:
            raise RuntimeError("the GATT server is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def address(self) -> str:
        """The address a central connects to: ``loopback://host:port``, or over BlueZ the
        adapter's BLE address (``02:00:00:00:00:01``)."""
        if self._bluez is not None:
            address: str = self._bluez.address
            return address
        return f"{gl.SCHEME}{self.host}:{self.port}"

    @property
    def connections(self) -> list[Connection]:
        return list(self._links.values())

    async def start(self) -> None:
        if self._server is not None or self._bluez is not None:
            return
        if self.bluez_adapter is not None:
            from simulators.bluez_peripheral import BluezPeripheral  # dbus-fast: Linux only

            peripheral = BluezPeripheral(self, self.bluez_adapter)
            await peripheral.start()
            self._bluez = peripheral
            log.info("gatt server on bluez", device=self.name, address=self.address)
            return
        self._server = await asyncio.start_server(self._accept, self.host, self._port)
        log.info("gatt server listening", device=self.name, address=self.address)

    async def close(self) -> None:
        """Stop accepting, say goodbye to every central, wait for the links to end."""
        if self._bluez is not None:
            peripheral, self._bluez = self._bluez, None
            await peripheral.close()
            return
        if self._server is None:
            return
        self._server.close()
        await asyncio.gather(
            *(c.disconnect("device shutting down") for c in self.connections),
            return_exceptions=True,
        )
        self.drop_links()
        for writer in list(self._silent):
            writer.transport.abort()
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=CLOSE_TIMEOUT)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> GattServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def serve_forever(self) -> None:
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.close()

    def drop_links(self) -> int:
        """Drop every link at once (the ``drop`` fault). Returns how many."""
        links = self.connections
        for link in links:
            link.abort()
        return len(links)

    # -- notifying --------------------------------------------------------------------------
    def _check_notify(self, char: Characteristic, data: bytes) -> None:
        if not char.properties & (gl.Property.NOTIFY | gl.Property.INDICATE):
            raise ValueError(f"{char} was not declared with notify=True")
        if len(data) > self.mtu - 3:
            raise ValueError(f"a notification is at most MTU - 3 = {self.mtu - 3} bytes")

    async def notify(
        self, char: Characteristic, data: bytes, *, connection: Connection | None = None
    ) -> int:
        """Notify ``data`` on ``char`` to every subscribed central (or just ``connection``).
        Returns the number of centrals notified."""
        self._check_notify(char, data)
        if connection is None and self._bluez is not None:
            # BlueZ sends a characteristic's notification to every subscribed central:
            # one emission, however many links there are
            sent_all: int = await self._bluez.notify_all(char, bytes(data))
            return sent_all
        targets = [connection] if connection is not None else self.connections
        sent = 0
        for conn in targets:
            if await conn.notify(char, data):
                sent += 1
        return sent

    # -- serving a link --------------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve_link(reader, writer)
        except asyncio.CancelledError:
            # close() cancels links that did not end in time; this task is ours and ends
            # here (asyncio's stream callback would log a cancelled task as an error)
            pass
        except Exception:  # a simulator bug must not kill the server
            log.exception("gatt link failed", device=self.name)
        finally:
            self._tasks.discard(task)
            _hangup(writer)

    async def _read_frame(self, reader: asyncio.StreamReader) -> gl.CentralFrame:
        header = await reader.readexactly(gl.FrameBuffer.HEADER)
        body = await reader.readexactly(gl.FrameBuffer.body_length(header))
        self.frames_received += 1
        return gl.decode_from_central(body)

    async def _serve_link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = str(writer.get_extra_info("peername"))
        if self.faults.out_of_range:  # nothing answers: the central's attempt times out
            self._silent.add(writer)
            try:
                with contextlib.suppress(ConnectionError):
                    while await reader.read(4096):
                        pass
            finally:
                self._silent.discard(writer)
            return
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                first = await self._read_frame(reader)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, FrameError):
            return
        if isinstance(first, gl.Scan):
            adv = gl.Advertisement(self.name, self.advertised_uuids, dict(self.manufacturer_data))
            writer.write(gl.pack(adv))
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            return
        if not isinstance(first, gl.Connect) or self.faults.refuse:
            return  # refused: the stream just closes, as a failed BLE connection
        conn = LoopbackConnection(self, next(self._conn_ids), peer, writer)
        if first.version != gl.PROTOCOL_VERSION:
            writer.write(gl.pack(gl.Disconnect(f"unsupported version {first.version}")))
            return
        self._links[conn.id] = conn
        writer_task = asyncio.create_task(conn._write_loop())
        inbox: asyncio.Queue[tuple[float, gl.CentralFrame]] = asyncio.Queue(maxsize=256)
        worker = asyncio.create_task(self._work(conn, inbox))
        log.info("central connected", device=self.name, link=conn.id, peer=peer)
        try:
            await conn.send(gl.Hello(self.name, self.mtu))
            if self.on_connect is not None:
                await _maybe_await(self.on_connect(conn))
            await self._read_loop(conn, reader, inbox)
        finally:
            conn._closed.set()
            worker.cancel()
            writer_task.cancel()
            await asyncio.gather(worker, writer_task, return_exceptions=True)
            self._links.pop(conn.id, None)
            _hangup(writer)
            log.info("central disconnected", device=self.name, link=conn.id)
            if self.on_disconnect is not None:
                try:
                    await _maybe_await(self.on_disconnect(conn))
                except Exception:
                    log.exception("on_disconnect failed", device=self.name)

    async def _read_loop(
        self,
        conn: LoopbackConnection,
        reader: asyncio.StreamReader,
        inbox: asyncio.Queue[tuple[float, gl.CentralFrame]],
    ) -> None:
        """Read until the stream ends (any close or abort of the link ends the read too)."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                frame = await self._read_frame(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            except FrameError as exc:
                log.warning("malformed frame from central", device=self.name, error=str(exc))
                await conn.disconnect(f"malformed frame: {exc.detail}")
                return
            conn.frames_received += 1
            if isinstance(frame, gl.Disconnect):
                return
            await inbox.put((loop.time() + self.faults.delay_ms / 1000, frame))

    async def _work(
        self, conn: LoopbackConnection, inbox: asyncio.Queue[tuple[float, gl.CentralFrame]]
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, frame = await inbox.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            reply = await self._handle(conn, frame)
            if isinstance(reply, gl.Disconnect):
                await conn.disconnect(reply.reason)
                return
            if reply is not None:
                if self.faults.reply_delay_ms:
                    await asyncio.sleep(self.faults.reply_delay_ms / 1000)
                await conn.send(reply)

    async def _handle(self, conn: Connection, frame: gl.CentralFrame) -> gl.PeripheralFrame | None:
        if isinstance(frame, gl.WriteCommand):
            char = self._attributes.get(frame.handle)
            if (
                char is not None
                and char.write_handler is not None
                and char.properties & gl.Property.WRITE_WITHOUT_RESPONSE
            ):
                try:
                    await _maybe_await(char.write_handler(conn, frame.value))
                except Exception as exc:  # no answer exists for a command
                    log.warning("write command failed", device=self.name, error=repr(exc))
            return None
        if not isinstance(frame, gl.Discover | gl.Read | gl.Write | gl.Subscribe | gl.Unsubscribe):
            # scan/connect after the handshake: a confused central
            return gl.Disconnect(f"unexpected {type(frame).__name__} frame")
        try:
            return await self._request(conn, frame)
        except GattError as exc:
            return gl.ErrorReply(frame.id, exc.code, exc.message[:200])
        except Exception as exc:
            log.exception("gatt handler failed", device=self.name)
            return gl.ErrorReply(frame.id, gl.AttError.UNLIKELY_ERROR, repr(exc)[:200])

    async def _request(
        self,
        conn: Connection,
        frame: gl.Discover | gl.Read | gl.Write | gl.Subscribe | gl.Unsubscribe,
    ) -> gl.PeripheralFrame:
        if isinstance(frame, gl.Discover):
            return gl.Services(frame.id, self.table())
        owner = self._descriptor_of.get(frame.handle)
        if owner is not None:
            return self._descriptor_request(conn, owner, frame)
        char = self._attributes.get(frame.handle)
        if char is None:
            raise GattError(gl.AttError.INVALID_HANDLE, f"no attribute at handle {frame.handle}")
        if isinstance(frame, gl.Read):
            if not char.properties & gl.Property.READ:
                raise GattError(gl.AttError.READ_NOT_PERMITTED)
            if char.read_handler is not None:
                value = bytes(await _maybe_await(char.read_handler(conn)))
            else:
                value = char.value
            if len(value) > gl.MAX_VALUE:
                raise GattError(gl.AttError.UNLIKELY_ERROR, "value longer than 512 bytes")
            return gl.Value(frame.id, value)
        if isinstance(frame, gl.Write):
            if not char.properties & gl.Property.WRITE or char.write_handler is None:
                raise GattError(gl.AttError.WRITE_NOT_PERMITTED)
            await _maybe_await(char.write_handler(conn, frame.value))
            return gl.Ok(frame.id)
        if not char.properties & (gl.Property.NOTIFY | gl.Property.INDICATE):
            raise GattError(gl.AttError.REQUEST_NOT_SUPPORTED, "not notifiable")
        if isinstance(frame, gl.Subscribe):
            conn.subscriptions.add(char.handle)
            if char.on_subscribe is not None:
                await _maybe_await(char.on_subscribe(conn))
        else:
            conn.subscriptions.discard(char.handle)
        return gl.Ok(frame.id)

    def _descriptor_request(
        self,
        conn: Connection,
        char: Characteristic,
        frame: gl.Read | gl.Write | gl.Subscribe | gl.Unsubscribe,
    ) -> gl.PeripheralFrame:
        d_uuid, d_value = char.descriptors[frame.handle]
        if isinstance(frame, gl.Read):
            if d_uuid == CCCD_UUID:
                return gl.Value(frame.id, b"\x01\x00" if conn.is_subscribed(char) else b"\x00\x00")
            return gl.Value(frame.id, d_value)
        if isinstance(frame, gl.Write):
            raise GattError(gl.AttError.WRITE_NOT_PERMITTED, "descriptors are read-only here")
        raise GattError(
            gl.AttError.INVALID_HANDLE, "subscribe to the characteristic, not a descriptor"
        )
