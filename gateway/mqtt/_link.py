"""The gateway's MQTT link (CONTRACT §4), on a paho-mqtt client it owns (``_paho.py``).

``async with MqttLink(cfg.mqtt, site, journal, version=...) as link:`` keeps one
connection to the broker, reconnecting with capped, jittered backoff, and:

- publishes ``status`` (retained; ``offline`` is the Last Will, and is also sent on
  an orderly stop; sent again whenever the journal's ``recording`` changes: the
  platform hears at once that events wait in the fallback), and keeps the retained
  topics it is given — each device's state and availability, the inventory, Home
  Assistant discovery — sending every one of them after each (re)connect and each
  change while connected;
- streams the journal's outbox to ``events`` at QoS 1, in ``seq`` order, with up to
  ``window`` publishes in flight; an event leaves the outbox only after the broker's
  PUBACK. After a reconnect everything not acknowledged is sent again (at least
  once: consumers drop duplicates by ``id``);
- hands every inbound command, revocation list, roster and pushed token, raw, to the
  callbacks (on the revocation and roster topics an empty message too: the retained
  copy was cleared, ``gateway.mqtt.healing``). A callback that raises is logged; the
  link carries on;
- bounds what comes in (issue 17): over MQTT 5 the CONNECT carries a Maximum Packet
  Size (``mqtt.max_packet_size``), so the broker sends nothing larger; every message is
  checked against its kind's own limit again before anything decodes it (what a 3.1.1
  broker still delivers is dropped there, counted in :attr:`MqttLink.oversize`). A kind
  with a *screen* (commands: the signature is verified on arrival) queues only what the
  screen passes, so garbage never takes a verified command's place in the queue; a
  verified message that finds its queue full goes to ``on_dropped`` (the gateway
  journals it);
- with ``owned`` (a topic filter: Home Assistant discovery under this gateway's node),
  clears every retained message under it that it does not keep — what a removed device
  or an older release left behind.

A broker config that cannot be used (``problems`` from the config check, or TLS files
and the password file that fail to load) does not stop the gateway: the link does not
connect, :attr:`MqttLink.config_problem` says why (health shows it), and the journal
keeps every event for when the config is fixed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final, Literal
from urllib.parse import urlparse

import structlog
from paho.mqtt.client import topic_matches_sub

from gateway.config import MqttConfig
from gateway.journal import Journal
from gateway.mqtt._paho import MqttLinkError, PahoSession
from protocols.control import MAX_COMMAND, MAX_REVOCATION_LIST, MAX_ROSTER
from protocols.errors import JournalError
from protocols.health import HealthReason, Overall
from protocols.journal_head import SignedHead
from protocols.mqtt import GatewayStatus
from protocols.token import MAX_TOKEN

__all__ = ["MqttLink", "Topics"]

log = structlog.get_logger("lockgw.mqtt")

CommandHandler = Callable[[bytes], Awaitable[None]]
RevocationHandler = Callable[[str, bytes], Awaitable[None]]

#: what MQTT 3.1.1 costs (bench/floods.py): no Maximum Packet Size to announce
_UNBOUNDED_311 = (
    "MQTT 3.1.1 cannot tell the broker the largest message the gateway takes; one huge "
    "message on its topics costs the hub about three times its size in memory: set the "
    "broker's message_size_limit (docs/platform.md)"
)
#: MQTT 5 CONNACK reason "Unsupported protocol version" (a 3.1.1 broker's code 1 maps here)
_UNSUPPORTED_PROTOCOL = 132
#: inbound messages waiting for a callback, per kind, before new ones are dropped
_INBOUND_QUEUE = 1000
#: the largest payload each inbound kind may have; larger ones are dropped undecoded
INBOUND_LIMITS: Final[Mapping[str, int]] = {
    "command": MAX_COMMAND,
    "credential": MAX_TOKEN,
    "revocation": MAX_REVOCATION_LIST,
    "roster": MAX_ROSTER,
}


class Topics:
    """Topic names of CONTRACT §4."""

    ROOT = "lockgw/v1"

    @staticmethod
    def site(site: str) -> str:
        return f"{Topics.ROOT}/{site}"

    @staticmethod
    def status(site: str) -> str:
        return f"{Topics.ROOT}/{site}/status"

    @staticmethod
    def events(site: str) -> str:
        return f"{Topics.ROOT}/{site}/events"

    @staticmethod
    def device_state(site: str, device: str) -> str:
        return f"{Topics.ROOT}/{site}/devices/{device}/state"

    @staticmethod
    def device_availability(site: str, device: str) -> str:
        return f"{Topics.ROOT}/{site}/devices/{device}/availability"

    @staticmethod
    def inventory(site: str) -> str:
        return f"{Topics.ROOT}/{site}/inventory"

    @staticmethod
    def commands(site: str) -> str:
        return f"{Topics.ROOT}/{site}/commands"

    @staticmethod
    def credentials(site: str) -> str:
        return f"{Topics.ROOT}/{site}/credentials"

    @staticmethod
    def revocations(issuer: str = "+") -> str:
        return f"{Topics.ROOT}/org/{issuer}/revocations"

    @staticmethod
    def rosters(site: str, issuer: str = "+") -> str:
        """An issuer's signed roster for one site (retained; an addition to CONTRACT §4)."""
        return f"{Topics.ROOT}/org/{issuer}/rosters/{site}"


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def load_secrets(cfg: MqttConfig) -> tuple[ssl.SSLContext | None, str | None]:
    """The TLS context and the password; ValueError in words when they cannot be loaded
    (a file missing or unreadable, a certificate or key that is not PEM or does not match)."""
    try:
        pw = None
        if cfg.password_file is not None:
            pw = cfg.password_file.read_text(encoding="utf-8").strip()
        return _tls_context(cfg), pw
    except ssl.SSLError as exc:
        raise ValueError(f"TLS files cannot be used: {exc.reason or exc}") from None
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        raise ValueError(f"cannot read{where}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"the password file {cfg.password_file} is not UTF-8 text") from None


def _tls_context(cfg: MqttConfig) -> ssl.SSLContext | None:
    if not cfg.url.startswith("mqtts://"):
        return None
    tls = cfg.tls
    ctx = ssl.create_default_context(
        cafile=str(tls.ca_file) if tls is not None and tls.ca_file is not None else None
    )
    if tls is not None:
        if tls.cert_file is not None:
            ctx.load_cert_chain(
                str(tls.cert_file), str(tls.key_file) if tls.key_file is not None else None
            )
        if tls.insecure_skip_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
    return ctx


class MqttLink:
    """The gateway's one MQTT connection; see the module docstring."""

    def __init__(
        self,
        config: MqttConfig,
        site: str,
        journal: Journal,
        *,
        version: str,
        on_command: Callable[[Any], Awaitable[None]] | None = None,
        on_revocation: RevocationHandler | None = None,
        on_credential: CommandHandler | None = None,
        on_roster: RevocationHandler | None = None,
        window: int = 100,
        owned: str | None = None,
        problems: Sequence[str] = (),
        screen_command: Callable[[bytes], tuple[Any, ...] | None] | None = None,
        on_dropped: Callable[[str, tuple[Any, ...]], None] | None = None,
        inbound_queue: int = _INBOUND_QUEUE,
    ) -> None:
        #: why the link does not connect (a broken [mqtt] config), or None
        self.config_problem: str | None = "; ".join(problems) or None
        u = urlparse(config.url)
        self.config = config
        self.site = site
        self.journal = journal
        self.version = version
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or (8883 if u.scheme == "mqtts" else 1883)
        self.client_id = config.client_id or f"lockgw-{site}"
        self.window = window
        self.started_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self._protocol = config.protocol  # "5", or "3.1.1" (forced, or after a refusal)
        self._handlers: dict[str, Callable[..., Awaitable[None]] | None] = {
            "command": on_command,
            "revocation": on_revocation,
            "credential": on_credential,
            "roster": on_roster,
            "stale": self._clear_stale if owned is not None else None,
        }
        self.owned = owned
        #: kind -> check on arrival: the handler's arguments to queue, or None (refused;
        #: the screen has dealt with it)
        self._screens: dict[str, Callable[..., tuple[Any, ...] | None]] = {}
        if screen_command is not None:
            self._screens["command"] = screen_command
        self.on_dropped = on_dropped
        self.inbound_queue = inbound_queue
        #: inbound messages dropped undecoded for their size, per kind
        self.oversize: dict[str, int] = {}
        self._inbound: dict[str, asyncio.Queue[tuple[Any, ...]]] = {}
        self._workers: set[asyncio.Task[None]] = set()
        #: retained topic -> payload, in the order first given; sent after every connect
        self._retained: dict[str, bytes] = {}
        self._client: PahoSession | None = None
        self._connected = asyncio.Event()
        self._stop = asyncio.Event()
        #: the event loop's time by which the orderly stop (drain, goodbye) must be done;
        #: set by the daemon's one stop deadline (``gateway.app``), None: the usual caps
        self.stop_by: float | None = None
        self._status_changed = asyncio.Event()
        #: the health the retained status carries (``set_health``)
        self._health: tuple[Overall | None, tuple[HealthReason, ...]] = (None, ())
        #: the newest signed journal head, for ``status`` (set_head)
        self.head: SignedHead | None = None
        journal.on_recording_change(self._journal_changed)
        self._task: asyncio.Task[None] | None = None
        self._tls: ssl.SSLContext | None = None
        self._password: str | None = None
        #: events in flight allowed on the current connection (window, or less when the
        #: broker's Receive Maximum is lower)
        self.window_in_use = window
        self.last_error: str | None = None
        self.published = 0
        self.connects = 0

    # -- lifecycle ------------------------------------------------------------------
    async def __aenter__(self) -> MqttLink:
        if self.config_problem is None:
            try:
                self._tls, self._password = await asyncio.to_thread(load_secrets, self.config)
            except ValueError as exc:
                self.config_problem = str(exc)
        if self.config_problem is not None:
            self.last_error = self.config_problem
            log.error(
                "mqtt.not_started",
                problem=self.config_problem,
                detail="fix the [mqtt] config and restart; doors work, events are kept",
            )
            return self
        for kind, handler in self._handlers.items():
            if handler is not None:
                q: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue(self.inbound_queue)
                self._inbound[kind] = q
                self._workers.add(asyncio.create_task(self._worker(kind, handler, q)))
        self._task = asyncio.create_task(self._run(), name="mqtt-link")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._task is not None:
            if self.connected:  # an orderly goodbye: drain what is in flight, say offline
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._task), self._left(10))
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for w in self._workers:
            w.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers.clear()

    def _status(self, state: Literal["online", "offline"], *, will: bool = False) -> bytes:
        online = state == "online"
        return (
            GatewayStatus(
                state=state,
                version=self.version,
                started_at=self.started_at,
                journal=self.journal.recording if online else "ok",
                health=self._health[0] if online else None,
                reasons=list(self._health[1]) if online else [],
                # not in the Last Will: fixed at connect, it would carry an old head
                head=None if will else self.head,
            )
            .model_dump_json(exclude_none=True)
            .encode()
        )

    def set_health(self, health: Overall, reasons: Sequence[HealthReason]) -> None:
        """The gateway's health as it is now: the retained ``status`` is sent again when
        it differs from what was last given (a reason appeared, cleared or changed)."""
        new = (health, tuple(reasons))
        if new != self._health:
            self._health = new
            self._status_changed.set()

    def set_head(self, head: SignedHead) -> None:
        """A new signed journal head: on ``status`` now (and with every later status)."""
        self.head = head
        self._status_changed.set()

    def _journal_changed(self) -> None:
        """The journal started or stopped recording normally: the platform hears it on
        ``status`` at once (events that wait are streamed only once journaled)."""
        self._status_changed.set()

    async def _status_updates(self, client: PahoSession) -> None:
        while True:
            await self._status_changed.wait()
            self._status_changed.clear()
            await client.publish(
                Topics.status(self.site), self._status("online"), qos=1, retain=True, timeout=5
            )

    def _left(self, cap: float, reserve: float = 0.0) -> float:
        """Seconds a step of the orderly stop may take: ``cap``, or less when the stop
        deadline (``stop_by``, less ``reserve`` for the steps after it) comes first."""
        if self.stop_by is None:
            return cap
        left = self.stop_by - asyncio.get_running_loop().time() - reserve
        return max(0.0, min(cap, left))

    # -- state --------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float = 10.0) -> None:
        """Return once connected; raise TimeoutError after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            await self._connected.wait()

    # -- retained state --------------------------------------------------------------------
    async def publish_device_state(self, device_id: str, state: Mapping[str, Any]) -> None:
        """The latest state of one device (retained); kept and re-sent after a reconnect."""
        await self.publish_retained(Topics.device_state(self.site, device_id), _dumps(dict(state)))

    async def publish_device_availability(
        self, device_id: str, availability: Mapping[str, Any]
    ) -> None:
        """Whether the gateway reaches one device (retained); kept and re-sent."""
        await self.publish_retained(
            Topics.device_availability(self.site, device_id), _dumps(dict(availability))
        )

    async def publish_inventory(self, items: Sequence[Mapping[str, Any]]) -> None:
        """The installed base (retained); kept and re-sent after a reconnect."""
        await self.publish_retained(Topics.inventory(self.site), _dumps([dict(i) for i in items]))

    def keep_retained(self, topic: str, payload: bytes) -> bool:
        """Keep ``payload`` as ``topic``'s retained message without sending it now (it goes
        with the next connect); True when it differs from what was kept. An empty payload
        clears the topic at the broker and is then forgotten."""
        if self._retained.get(topic) == payload:
            return False
        self._retained[topic] = payload
        return True

    async def publish_retained(self, topic: str, payload: bytes) -> None:
        """Keep ``payload`` as ``topic``'s retained message and send it now if connected
        (otherwise with the next connect). Unchanged payloads are not sent again."""
        if not self.keep_retained(topic, payload):
            return
        client = self._client
        if client is None or not self.connected:
            return  # sent on the next connection
        try:
            await client.publish(topic, payload, qos=1, retain=True, timeout=5)
        except (MqttLinkError, TimeoutError) as exc:  # the next connection sends it
            log.info("mqtt.retained_deferred", topic=topic, error=str(exc))
            return
        if not payload and self._retained.get(topic) == b"":
            del self._retained[topic]

    async def publish_once(self, topic: str, payload: bytes, *, retain: bool = True) -> bool:
        """Send one message now, not kept for later connects; True once the broker
        acknowledged it, False when not connected or it failed."""
        client = self._client
        if client is None or not self.connected:
            return False
        try:
            await client.publish(topic, payload, qos=1, retain=retain, timeout=5)
        except (MqttLinkError, TimeoutError) as exc:
            log.info("mqtt.publish_failed", topic=topic, error=str(exc))
            return False
        return True

    # -- connection loop ------------------------------------------------------------------
    def _make_client(self) -> PahoSession:
        return PahoSession(
            self.host,
            self.port,
            client_id=self.client_id,
            protocol=self._protocol,
            username=self.config.username,
            password=self._password,
            will=(Topics.status(self.site), self._status("offline", will=True)),
            keepalive=self.config.keepalive,
            connect_timeout=10,  # a TLS refusal shows only as a missing CONNACK
            tls=self._tls,
            max_packet_size=self.config.max_packet_size,
        )

    async def _run(self) -> None:
        if self._protocol == "3.1.1":
            log.warning("mqtt.protocol_311", broker=f"{self.host}:{self.port}",
                        detail=_UNBOUNDED_311)  # fmt: skip
        attempt = 0
        while not self._stop.is_set():
            client = self._make_client()
            try:
                async with client:
                    attempt = 0
                    self.connects += 1
                    self.last_error = None
                    await self._session(client)
                    return  # an orderly stop
            except MqttLinkError as exc:
                self.last_error = str(exc)
                if self._protocol == "5" and exc.rc in (_UNSUPPORTED_PROTOCOL, 1):
                    log.warning("mqtt.fallback_311", broker=f"{self.host}:{self.port}",
                                detail=_UNBOUNDED_311)  # fmt: skip
                    self._protocol = "3.1.1"
                    continue
                log.warning("mqtt.disconnected", error=str(exc), attempt=attempt)
            except Exception as exc:  # TLS files, the journal, paho state: the link never dies
                self.last_error = repr(exc)
                log.error("mqtt.failed", error=repr(exc), attempt=attempt)
            finally:
                self._client = None
                self._connected.clear()
            delay = min(self.config.reconnect_max, self.config.reconnect_min * 2**attempt)
            attempt = min(attempt + 1, 30)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay * random.uniform(0.5, 1.0)):
                    await self._stop.wait()

    async def _session(self, client: PahoSession) -> None:
        self._status_changed.clear()
        await client.publish(Topics.status(self.site), self._status("online"), qos=1, retain=True)
        # subscribed before the retained state goes out: a platform that has seen a
        # device's state can send a command and know it is heard
        subs = [
            (Topics.commands(self.site), 1),
            (Topics.credentials(self.site), 1),
            (Topics.revocations(), 1),
            (Topics.rosters(self.site), 1),
        ]
        if self.owned is not None:
            subs.append((self.owned, 1))
        client.on_message = self._receive
        await client.subscribe(subs)
        sent = await self._send_retained(client, {})
        self._client = client
        self._connected.set()
        # what changed while the first pass was under way (not sent: not yet connected)
        await self._send_retained(client, sent)
        log.info("mqtt.connected", broker=f"{self.host}:{self.port}", protocol=self._protocol)
        window = self.window
        if client.receive_maximum is not None:  # headroom for status and retained state
            window = max(1, min(window, client.receive_maximum - 10))
        self.window_in_use = window
        stream = _EventStream(client, self.journal, Topics.events(self.site), window)
        feeder = asyncio.create_task(stream.run(self._stop))
        assert client.disconnected is not None
        receiver = asyncio.ensure_future(asyncio.shield(client.disconnected))  # its end
        status = asyncio.create_task(self._status_updates(client))
        stopper = asyncio.create_task(self._stop.wait())
        tasks: tuple[asyncio.Future[Any], ...] = (feeder, receiver, status, stopper)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in (feeder, receiver, status):
                if t.done() and not t.cancelled() and (exc := t.exception()) is not None:
                    raise exc
            if receiver.done():
                raise MqttLinkError("the broker closed the connection")
            # an orderly stop: the feeder ends by itself; let what is in flight be
            # acknowledged, then say goodbye (the Last Will is not sent on DISCONNECT)
            # (each step bounded by its cap and by the stop deadline; the goodbye is kept
            # a moment: without it the broker sends the Last Will, ``offline`` as well)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(feeder, self._left(3, reserve=0.5))
            self._connected.clear()
            await stream.drain(timeout=self._left(3, reserve=0.5))
            with contextlib.suppress(MqttLinkError, TimeoutError):
                await client.publish(
                    Topics.status(self.site),
                    self._status("offline"),
                    qos=1,
                    retain=True,
                    timeout=max(0.1, self._left(3)),
                )
        finally:
            stream.abort()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.published += stream.acked

    async def _send_retained(
        self, client: PahoSession, sent: dict[str, bytes]
    ) -> dict[str, bytes]:
        """Publish every kept retained message not already in ``sent`` as it is now."""
        out = dict(sent)
        for topic in list(self._retained):
            payload = self._retained.get(topic)
            if payload is None or out.get(topic) == payload:
                continue
            await client.publish(topic, payload, qos=1, retain=True)
            out[topic] = payload
            if not payload and self._retained.get(topic) == b"":
                del self._retained[topic]  # cleared at the broker: nothing to keep
        return out

    # -- inbound -------------------------------------------------------------------------
    def _receive(self, topic: str, payload: bytes) -> None:
        """Every inbound message (on the event loop): to the queue of its kind."""
        if topic_matches_sub(Topics.revocations(), topic):
            if self._fits("revocation", payload):
                self._hand("revocation", (topic.split("/")[3], payload))
            return
        if topic_matches_sub(Topics.rosters(self.site), topic):
            if self._fits("roster", payload):
                self._hand("roster", (topic.split("/")[3], payload))
            return
        if not payload:
            return  # a cleared retained message
        if topic == Topics.commands(self.site):
            if self._fits("command", payload):
                self._hand("command", (payload,))
        elif topic == Topics.credentials(self.site):
            if self._fits("credential", payload):
                self._hand("credential", (payload,))
        elif (
            self.owned is not None
            and topic_matches_sub(self.owned, topic)
            and topic not in self._retained
        ):
            self._hand("stale", (topic,))

    async def _clear_stale(self, topic: str) -> None:
        if topic not in self._retained:  # kept meanwhile: not stale after all
            log.info("mqtt.stale_cleared", topic=topic)
            await self.publish_retained(topic, b"")

    def _fits(self, kind: str, payload: bytes) -> bool:
        """Within its kind's limit; else dropped before anything decodes it."""
        if len(payload) <= INBOUND_LIMITS[kind]:
            return True
        n = self.oversize[kind] = self.oversize.get(kind, 0) + 1
        if n & (n - 1) == 0:  # the 1st, 2nd, 4th, 8th ...: a flood does not flood the log
            log.warning(
                "mqtt.inbound_oversize",
                kind=kind,
                size=len(payload),
                limit=INBOUND_LIMITS[kind],
                dropped=n,
            )
        return False

    def _hand(self, kind: str, args: tuple[Any, ...]) -> None:
        q = self._inbound.get(kind)
        if q is None:
            log.info("mqtt.inbound_ignored", kind=kind, reason="no handler")
            return
        screen = self._screens.get(kind)
        if screen is not None:
            try:
                passed = screen(*args)
            except Exception as exc:  # runs in paho's message callback: it must not raise
                log.error("mqtt.screen_failed", kind=kind, error=repr(exc), exc_info=True)
                return  # not verified: refused, as garbage is
            if passed is None:
                return  # refused on arrival: never queued
            args = passed
        try:
            q.put_nowait(args)
        except asyncio.QueueFull:
            log.warning("mqtt.inbound_dropped", kind=kind, reason="queue full")
            if screen is not None and self.on_dropped is not None:
                try:
                    self.on_dropped(kind, args)  # a verified message: the gateway journals it
                except Exception as exc:
                    log.error("mqtt.drop_record_failed", kind=kind, error=repr(exc), exc_info=True)

    async def _worker(
        self, kind: str, handler: Callable[..., Awaitable[None]], q: asyncio.Queue[tuple[Any, ...]]
    ) -> None:
        while True:
            args = await q.get()
            try:
                await handler(*args)
            except Exception as exc:  # a callback must never take the link down
                log.error("mqtt.callback_failed", kind=kind, error=repr(exc), exc_info=True)


class _EventStream:
    """One connection's share of the outbox: publish in seq order, mark on PUBACK.

    The hot path hands each event to the session's paho client without waiting
    (``publish_nowait``); its PUBACK comes back through the session's ``on_published``
    hook on the event loop thread. An awaitable publish per event would cost a future
    and a wake-up each; bench/event_pipeline.py measures the whole pipeline.
    """

    def __init__(self, client: PahoSession, journal: Journal, topic: str, window: int) -> None:
        self.journal = journal
        self.topic = topic
        self.window = max(1, window)
        self.acked = 0
        self._session = client
        client.on_published = self._on_publish
        self._mids: dict[int, int] = {}  # paho message id -> seq, in flight
        self._order: deque[int] = deque()  # sent, oldest first
        self._done: set[int] = set()
        self._watermark = 0  # every seq sent on this connection up to here is acknowledged
        self._marked = 0
        self._mark_task: asyncio.Task[None] | None = None
        self._failed: BaseException | None = None
        self._wake = asyncio.Event()

    def _on_publish(self, mid: int, rc: int) -> bool:
        seq = self._mids.pop(mid, None)
        if seq is None:
            return False  # not an event: status or retained state, the session's own
        if rc >= 0x80:
            # the broker refused it (MQTT 5 reason code >= 0x80): not published
            self._failed = MqttLinkError(f"broker refused event seq {seq} (reason {rc})", rc)
            self._wake.set()
            return True
        self.acked += 1
        self._done.add(seq)
        order, done = self._order, self._done
        while order and order[0] in done:
            done.discard(order[0])
            self._watermark = order.popleft()
        if self._watermark > self._marked and (self._mark_task is None or self._mark_task.done()):
            self._mark_task = asyncio.create_task(self._mark())
        self._wake.set()
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Publish the outbox in order until ``stop``; then drain: everything committed
        so far goes out and is acknowledged (the caller bounds how long that may take),
        so an orderly shutdown's last events (``gateway.stopping``) reach the platform.

        It sleeps on one event (``_wake``) that commits, acknowledgements, a refusal and
        ``stop`` all set, and looks at everything again when woken: no task per wait."""
        wake = self._wake.set
        self.journal.add_listener(wake)
        relay = asyncio.create_task(self._relay(stop))
        try:
            await self._run(stop)
        finally:
            self.journal.remove_listener(wake)
            relay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relay

    async def _relay(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._wake.set()

    async def _run(self, stop: asyncio.Event) -> None:
        cursor = 0  # after a reconnect everything unacknowledged goes again
        buffer: deque[tuple[int, bytes]] = deque()
        journal = self.journal
        while True:
            if self._failed is not None:
                raise self._failed
            draining = stop.is_set()
            if not buffer:
                buffer.extend(await journal.outbox(after=cursor, limit=2 * self.window))
                if not buffer:
                    if not draining:
                        if journal.last_seq <= cursor and journal.is_open:
                            await self._sleep()  # until a commit, an ack or stop
                        continue
                    if self._mids:  # wait for the last acknowledgements
                        await self._sleep()
                        continue
                    if self._mark_task is not None:
                        await asyncio.gather(self._mark_task, return_exceptions=True)
                    return
                cursor = buffer[-1][0]
            room = self.window - len(self._mids)
            if room <= 0:
                await self._sleep()  # until an ack (or stop)
                continue
            for _ in range(min(room, len(buffer))):
                seq, payload = buffer.popleft()
                mid = self._session.publish_nowait(self.topic, payload, qos=1)
                self._mids[mid] = seq
                self._order.append(seq)

    async def _sleep(self) -> None:
        """Until ``_wake`` is set (at once if it was since the last sleep); the caller then
        looks at the state again, so a wake-up with nothing new costs one loop."""
        await self._wake.wait()
        self._wake.clear()

    def abort(self) -> None:
        """The connection is gone: what is in flight will be sent again on the next one."""
        self._mids.clear()

    async def _mark(self) -> None:
        while self._watermark > self._marked:
            w = self._watermark
            try:
                await self.journal.mark_published(w)
            except JournalError as exc:  # sent again later: duplicates, never loss
                log.warning("mqtt.mark_failed", error=str(exc))
                return
            self._marked = w

    async def drain(self, timeout: float) -> None:
        """Wait (bounded) for in-flight publishes and the last mark."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self._mids and self._failed is None:
                    self._wake.clear()
                    await self._wake.wait()
                if self._mark_task is not None:
                    await self._mark_task
                await self._mark()
