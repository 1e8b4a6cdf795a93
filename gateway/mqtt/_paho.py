"""One MQTT connection on asyncio, owning its paho-mqtt client openly.

Why not aiomqtt here: the event stream needs paho's non-blocking ``publish()`` with the
PUBACK reported through ``on_publish`` (aiomqtt's awaitable ``publish`` costs a task and
a ``wait_for`` per message, about half the rate at 100 in flight: bench/event_pipeline.py),
and the broker's Receive Maximum from CONNACK, which aiomqtt does not expose. Reaching
into aiomqtt's private paho client for both was fragile; this module is the small part
of aiomqtt the gateway used (connect, socket callbacks on the event loop, awaitable
publish and subscribe, disconnect), on paho's public API only.

``async with PahoSession(...) as s:`` connects (``MqttLinkError`` when it cannot, with
the CONNACK reason code when the broker refused); then ``publish`` / ``publish_nowait``,
``subscribe``, ``on_message``, ``on_published`` (the stream's PUBACK hook), and
``disconnected`` (a future: the connection's end, an exception when it broke).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

__all__ = ["MqttLinkError", "PahoSession"]


class MqttLinkError(Exception):
    """The connection could not be made or broke. ``rc``: the broker's reason code
    (CONNACK, PUBACK) when it gave one."""

    def __init__(self, message: str, rc: int | None = None) -> None:
        super().__init__(message)
        self.rc = rc


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """Mark a future's exception as seen (nobody may be waiting when the link breaks)."""
    if not fut.cancelled():
        fut.exception()


def _value(rc: Any) -> int:
    return int(getattr(rc, "value", rc))


class PahoSession:
    """One connection; see the module docstring. Not reusable: make a new one to reconnect."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str,
        protocol: str = "5",
        username: str | None = None,
        password: str | None = None,
        will: tuple[str, bytes] | None = None,
        session_expiry: int = 24 * 3600,
        keepalive: int = 30,
        connect_timeout: float = 10.0,
        tls: ssl.SSLContext | None = None,
        max_packet_size: int | None = None,
    ) -> None:
        self.host, self.port = host, port
        #: MQTT 5 Maximum Packet Size sent in CONNECT: the broker sends nothing larger
        self.max_packet_size = max_packet_size
        self.v5 = protocol == "5"
        self.keepalive = keepalive
        self.connect_timeout = connect_timeout
        self.session_expiry = session_expiry
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311,
            clean_session=None if self.v5 else False,  # a persistent session either way
        )
        client = self.client
        # paho's own messages (packets at debug, its errors) join the gateway's log pipeline
        client.enable_logger(logging.getLogger("paho.mqtt"))
        client.max_inflight_messages_set(0)  # the caller bounds what is in flight
        client.max_queued_messages_set(0)
        if username is not None:
            client.username_pw_set(username, password)
        if will is not None:
            client.will_set(will[0], will[1], qos=1, retain=True)
        if tls is not None:
            client.tls_set_context(tls)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_paho_message
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write
        #: Receive Maximum the broker announced in CONNACK (MQTT 5), else None
        self.receive_maximum: int | None = None
        #: called with (topic, payload) for every message, on the event loop
        self.on_message: Callable[[str, bytes], None] | None = None
        #: called with (mid, reason code) for every PUBACK first; True = handled there
        self.on_published: Callable[[int, int], bool] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected: asyncio.Future[None] | None = None
        self.disconnected: asyncio.Future[None] | None = None
        self._publishes: dict[int, asyncio.Future[None]] = {}
        self._subscribes: dict[int, asyncio.Future[list[int]]] = {}
        self._misc: asyncio.Task[None] | None = None
        self._loop_thread: int | None = None

    # -- lifecycle ----------------------------------------------------------------------
    async def __aenter__(self) -> PahoSession:
        loop = self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._connected = loop.create_future()
        self.disconnected = loop.create_future()
        for fut in (self._connected, self.disconnected):  # read by whoever cares, or here
            fut.add_done_callback(_retrieve)
        try:
            # connect() resolves the name, opens the socket (and TLS) and sends CONNECT:
            # blocking, so in a thread; the socket callbacks hop back to the loop
            await loop.run_in_executor(None, self._connect)
        except (OSError, ValueError) as exc:
            raise MqttLinkError(f"cannot connect to {self.host}:{self.port}: {exc}") from None
        try:
            async with asyncio.timeout(self.connect_timeout):
                await asyncio.shield(self._connected)
        except TimeoutError:
            self._close_now()
            raise MqttLinkError(
                f"no CONNACK from {self.host}:{self.port} in {self.connect_timeout:g} s"
            ) from None
        except MqttLinkError:
            self._close_now()
            raise
        return self

    def _connect(self) -> None:
        props = None
        if self.v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = self.session_expiry
            if self.max_packet_size is not None:
                props.MaximumPacketSize = self.max_packet_size
        self.client.connect(
            self.host,
            self.port,
            self.keepalive,
            clean_start=False if self.v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
            properties=props,
        )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.disconnected is not None and not self.disconnected.done():
            self.client.disconnect()
            with contextlib.suppress(TimeoutError, MqttLinkError):
                async with asyncio.timeout(3):
                    await asyncio.shield(self.disconnected)
        self._close_now()

    def _close_now(self) -> None:
        sock = self.client.socket()
        if sock is not None and self._loop is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(sock.fileno())
                self._loop.remove_writer(sock.fileno())
        with contextlib.suppress(Exception):
            self.client.disconnect()
        if self._misc is not None:
            self._misc.cancel()
        self._fail_pending(MqttLinkError("the connection was closed"))

    def _fail_pending(self, exc: BaseException) -> None:
        futures: list[asyncio.Future[Any]] = [*self._publishes.values(), *self._subscribes.values()]
        for fut in futures:
            if not fut.done():
                fut.set_exception(exc)
        self._publishes.clear()
        self._subscribes.clear()

    # -- use ----------------------------------------------------------------------------
    def publish_nowait(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> int:
        """Hand a message to paho; its PUBACK comes to ``on_published``. The message id."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise MqttLinkError(f"could not publish to {topic}: {mqtt.error_string(info.rc)}", info.rc)
        return info.mid

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
        timeout: float | None = None,
    ) -> None:
        """Publish and wait for the broker's acknowledgement (QoS 1)."""
        assert self._loop is not None
        mid = self.publish_nowait(topic, payload, qos=qos, retain=retain)
        if qos == 0:
            return
        fut = self._publishes[mid] = self._loop.create_future()
        try:
            async with asyncio.timeout(timeout):
                await fut
        finally:
            self._publishes.pop(mid, None)

    async def subscribe(self, topics: Sequence[tuple[str, int]], timeout: float = 10.0) -> None:
        assert self._loop is not None
        rc, mid = self.client.subscribe(list(topics))
        if rc != mqtt.MQTT_ERR_SUCCESS or mid is None:
            raise MqttLinkError(f"could not subscribe: {mqtt.error_string(rc)}", rc)
        fut = self._subscribes[mid] = self._loop.create_future()
        try:
            async with asyncio.timeout(timeout):
                codes = await fut
        finally:
            self._subscribes.pop(mid, None)
        refused = [c for c in codes if c >= 0x80]
        if refused:
            raise MqttLinkError(f"the broker refused a subscription (reason {refused[0]})", refused[0])

    # -- paho's callbacks (on the event loop, except socket open / register write) ------
    def _on_connect(self, _c: Any, _u: Any, _flags: Any, rc: Any, props: Any = None) -> None:
        assert self._connected is not None
        if self._connected.done():
            return
        if getattr(rc, "is_failure", False):
            self._connected.set_exception(
                MqttLinkError(f"the broker refused the connection: {rc}", _value(rc))
            )
            return
        self.receive_maximum = getattr(props, "ReceiveMaximum", None) if self.v5 else None
        self._connected.set_result(None)

    def _on_disconnect(self, _c: Any, _u: Any, _flags: Any, rc: Any, _props: Any = None) -> None:
        exc = MqttLinkError(f"disconnected: {rc}", _value(rc))
        if self._connected is not None and not self._connected.done():
            self._connected.set_exception(exc)
        if self.disconnected is not None and not self.disconnected.done():
            if _value(rc) == 0:
                self.disconnected.set_result(None)
            else:
                self.disconnected.set_exception(exc)
        self._fail_pending(exc)

    def _broken(self, exc: BaseException) -> None:
        if self.disconnected is not None and not self.disconnected.done():
            self.disconnected.set_exception(MqttLinkError(f"the connection broke: {exc!r}"))
        self._fail_pending(MqttLinkError(f"the connection broke: {exc!r}"))

    def _on_publish(self, _c: Any, _u: Any, mid: int, rc: Any, _props: Any = None) -> None:
        code = _value(rc)
        hook = self.on_published
        if hook is not None and hook(mid, code):
            return
        fut = self._publishes.get(mid)
        if fut is None or fut.done():
            return
        if code >= 0x80:
            fut.set_exception(MqttLinkError(f"the broker refused message {mid}: {rc}", code))
        else:
            fut.set_result(None)

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, codes: Any, _props: Any = None) -> None:
        fut = self._subscribes.get(mid)
        if fut is not None and not fut.done():
            fut.set_result([_value(c) for c in codes])

    def _on_paho_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if self.on_message is not None:
            self.on_message(msg.topic, bytes(msg.payload))

    # -- the socket on the event loop ----------------------------------------------------
    def _call(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn`` on the loop: at once when called there, else from paho's connect thread."""
        loop = self._loop
        assert loop is not None
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        elif not loop.is_closed():
            loop.call_soon_threadsafe(fn, *args)

    def _on_socket_open(self, client: mqtt.Client, _u: Any, sock: Any) -> None:
        def readable() -> None:
            try:
                while True:
                    client.loop_read()
                    # an SSL socket may hold decoded bytes that loop_read() left
                    s = client.socket()
                    if s is not None and getattr(s, "pending", lambda: 0)() > 0:
                        continue
                    break
            except Exception as exc:  # a broken pipe, a reset: the connection is gone
                self._broken(exc)

        def start() -> None:
            assert self._loop is not None
            self._loop.add_reader(sock.fileno(), readable)
            self._misc = self._loop.create_task(self._misc_loop(), name="mqtt-misc")

        self._call(start)

    def _on_socket_close(self, _c: Any, _u: Any, sock: Any) -> None:
        fileno = sock.fileno()

        def stop() -> None:
            assert self._loop is not None
            if fileno > -1:
                self._loop.remove_reader(fileno)
                self._loop.remove_writer(fileno)
            if self._misc is not None and self._misc is not asyncio.current_task():
                self._misc.cancel()

        self._call(stop)

    def _on_socket_register_write(self, client: mqtt.Client, _u: Any, sock: Any) -> None:
        def writable() -> None:
            try:
                client.loop_write()
            except Exception as exc:
                self._broken(exc)

        assert self._loop is not None
        self._call(self._loop.add_writer, sock.fileno(), writable)

    def _on_socket_unregister_write(self, _c: Any, _u: Any, sock: Any) -> None:
        assert self._loop is not None
        self._call(self._loop.remove_writer, sock.fileno())

    async def _misc_loop(self) -> None:
        """Keepalive pings and retries: paho's loop_misc once a second."""
        while self.client.loop_misc() == mqtt.MQTT_ERR_SUCCESS:  # noqa: ASYNC110 - a timer
            await asyncio.sleep(1)
