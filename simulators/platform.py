"""A simulated care platform: subscribes to a site's stream, reports gaps and duplicates,
and sends what a platform sends (signed commands, revocation lists, rosters, held tokens).

``lockgw-sim platform watch --broker mqtt://127.0.0.1:P --site S`` prints every event
as it arrives and, on exit (Ctrl-C or ``--count N`` / ``--idle T``), a summary: events
received, duplicates removed by ``id``, gaps in ``seq``. Exit 0 when the stream was
gap-free, 1 otherwise, 2 when it could not connect. A broker over TLS takes the
gateway's own options (``[mqtt.tls]``): ``--broker mqtts://host:8883 --ca-file F
[--cert-file F --key-file F] [--insecure-skip-verify]``, and its login (``--username U
--password-file F``).

``lockgw-sim platform send --broker URL [--site S] FILE...`` publishes what the ``lockgw``
signing commands print (``revoke``, ``command``, ``roster sign``, ``token issue``) where a
platform does: a command to ``<site>/commands``, a revocation list and a roster retained on
the issuer's topics, a credential to ``<site>/credentials``. The kind is read from the
message (decoded strictly, not verified: the gateway verifies). Imports ``protocols/`` only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import ssl
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import aiomqtt

from protocols.control import Command, RevocationList, Roster
from protocols.errors import ControlMessageError, TokenError
from protocols.token import b64decode, decode_token

__all__ = ["Outgoing", "Platform", "StreamChecker", "classify", "register"]

#: the largest file ``send`` reads: far above any signed message
_MAX_FILE = 1024 * 1024


@dataclass
class StreamChecker:
    """De-duplicates by ``id`` and checks ``seq`` is 1, 2, 3, … without gaps (CONTRACT §4)."""

    first_expected: int = 1
    events: list[dict[str, Any]] = field(default_factory=list)
    duplicates: int = 0
    out_of_order: int = 0
    _ids: set[str] = field(default_factory=set)
    _seqs: set[int] = field(default_factory=set)
    _max_seq: int = 0

    def add(self, event: dict[str, Any]) -> bool:
        """Record one event; False when it is a duplicate."""
        eid, seq = event.get("id"), event.get("seq")
        if not isinstance(eid, str) or not isinstance(seq, int):
            raise ValueError("an event without id/seq")
        if eid in self._ids:
            self.duplicates += 1
            return False
        if seq < self._max_seq:
            self.out_of_order += 1
        self._ids.add(eid)
        self._seqs.add(seq)
        self._max_seq = max(self._max_seq, seq)
        self.events.append(event)
        return True

    @property
    def last_seq(self) -> int:
        return self._max_seq

    def gaps(self) -> list[tuple[int, int]]:
        """Missing ranges ``(first, last)`` between ``first_expected`` and the highest seq."""
        out: list[tuple[int, int]] = []
        start: int | None = None
        for s in range(self.first_expected, self._max_seq + 1):
            if s not in self._seqs:
                start = s if start is None else start
            elif start is not None:
                out.append((start, s - 1))
                start = None
        if start is not None:
            out.append((start, self._max_seq))
        return out

    def summary(self) -> str:
        gaps = self.gaps()
        return (
            f"{len(self.events)} events (seq {self.first_expected}..{self._max_seq}), "
            f"{self.duplicates} duplicate(s) removed, {self.out_of_order} out of order, "
            + (f"GAPS: {gaps}" if gaps else "no gaps")
        )


def _broker(url: str) -> tuple[str, int]:
    u = urlparse(url)
    return u.hostname or "127.0.0.1", u.port or (8883 if u.scheme == "mqtts" else 1883)


def tls_context(
    url: str,
    *,
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
    insecure_skip_verify: bool = False,
) -> ssl.SSLContext | None:
    """TLS as the gateway does it ([mqtt.tls]): only for ``mqtts://``; the broker's CA,
    optionally a client certificate and key."""
    if urlparse(url).scheme != "mqtts":
        return None
    ctx = ssl.create_default_context(cafile=ca_file)
    if cert_file is not None:
        ctx.load_cert_chain(cert_file, key_file)
    if insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


#: paho's complaints about a broker that went away are expected here (we reconnect)
_QUIET = logging.getLogger("lockgw.sim.platform.mqtt")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


class Platform:
    """A platform's MQTT client for one site. ``async with Platform(url, site) as p:``."""

    def __init__(
        self,
        url: str,
        site: str,
        *,
        client_id: str | None = None,
        tls: ssl.SSLContext | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.host, self.port = _broker(url)
        self.username, self.password = username, password
        self.tls = tls if tls is not None else tls_context(url)
        self.site = site
        self.client_id = client_id or f"platform-{uuid.uuid4().hex[:8]}"
        self.checker = StreamChecker()
        self.states: dict[str, dict[str, Any]] = {}
        self.availability: dict[str, dict[str, Any]] = {}
        self.inventory: list[dict[str, Any]] | None = None
        self.status: dict[str, Any] | None = None
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._new = asyncio.Condition()
        self.on_event: Callable[[dict[str, Any]], None] | None = None
        self.disconnects = 0

    @property
    def root(self) -> str:
        return f"lockgw/v1/{self.site}"

    def _make_client(self) -> aiomqtt.Client:
        # a persistent session: events published while we are away are queued for us
        return aiomqtt.Client(
            self.host,
            self.port,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=_session_props(),
            max_queued_incoming_messages=0,
            logger=_QUIET,
            tls_context=self.tls,
            username=self.username,
            password=self.password,
        )

    async def __aenter__(self) -> Platform:
        self._client = self._make_client()
        await self._client.__aenter__()
        await self._client.subscribe(f"{self.root}/#", qos=1)
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._task
        if self._client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await self._client.__aexit__(None, None, None)

    async def _run(self) -> None:
        """Receive; when the broker goes away, reconnect to the same session and go on
        (the broker kept what was published meanwhile, the checker spots any loss)."""
        delay = 0.1
        while True:
            try:
                await self._receive()
            except aiomqtt.MqttError:
                self.disconnects += 1
            with contextlib.suppress(aiomqtt.MqttError):
                if self._client is not None:
                    await self._client.__aexit__(None, None, None)
            self._client = None
            while self._client is None:
                await asyncio.sleep(delay)
                client = self._make_client()
                try:
                    await client.__aenter__()
                    await client.subscribe(f"{self.root}/#", qos=1)
                except aiomqtt.MqttError:
                    delay = min(2.0, delay * 2)
                    continue
                self._client, delay = client, 0.1

    async def _receive(self) -> None:
        assert self._client is not None
        async for msg in self._client.messages:
            topic = str(msg.topic)
            payload = msg.payload if isinstance(msg.payload, bytes) else str(msg.payload).encode()
            try:
                data = json.loads(payload)
            except ValueError:
                continue
            if topic == f"{self.root}/events":
                if self.checker.add(data) and self.on_event is not None:
                    self.on_event(data)
            elif topic == f"{self.root}/status":
                self.status = data
            elif topic == f"{self.root}/inventory":
                self.inventory = data
            elif topic.startswith(f"{self.root}/devices/") and topic.endswith("/state"):
                self.states[topic.split("/")[-2]] = data
            elif topic.startswith(f"{self.root}/devices/") and topic.endswith("/availability"):
                self.availability[topic.split("/")[-2]] = data
            async with self._new:
                self._new.notify_all()

    async def wait_for(
        self, pred: Callable[[dict[str, Any]], bool], timeout: float = 10.0, *, after_seq: int = 0
    ) -> dict[str, Any]:
        """The first event (with seq > after_seq) matching ``pred``."""
        async with asyncio.timeout(timeout), self._new:
            while True:
                for ev in self.checker.events:
                    if ev["seq"] > after_seq and pred(ev):
                        return ev
                await self._new.wait()

    async def wait_until(self, pred: Callable[[], bool], timeout: float = 10.0) -> None:
        """Until ``pred()`` holds of what has arrived (retained states, availability, ...)."""
        async with asyncio.timeout(timeout), self._new:
            await self._new.wait_for(pred)

    async def wait_seq(self, seq: int, timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout), self._new:
            await self._new.wait_for(
                lambda: self.checker.last_seq >= seq and not self.checker.gaps()
            )

    async def retained(self, topic: str, *, wait: float = 1.0) -> bytes | None:
        """The message the broker holds retained on ``topic`` now, as a gateway connecting
        next would get it (a fresh subscription); None when none came within ``wait`` s."""
        client = aiomqtt.Client(
            self.host,
            self.port,
            identifier=f"{self.client_id}-look-{uuid.uuid4().hex[:6]}",
            protocol=aiomqtt.ProtocolVersion.V5,
            logger=_QUIET,
            tls_context=self.tls,
        )
        async with client:
            await client.subscribe(topic, qos=1)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    async for msg in client.messages:
                        if msg.retain:
                            payload = msg.payload
                            return payload if isinstance(payload, bytes) else None
        return None

    async def send(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        assert self._client is not None
        await self._client.publish(topic, payload, qos=1, retain=retain)

    async def send_command(self, raw: bytes) -> None:
        await self.send(f"{self.root}/commands", raw)

    async def send_credential(self, raw: bytes) -> None:
        await self.send(f"{self.root}/credentials", raw)

    async def send_revocation(self, issuer: str, raw: bytes) -> None:
        await self.send(f"lockgw/v1/org/{issuer}/revocations", raw, retain=True)

    async def send_roster(self, issuer: str, raw: bytes) -> None:
        """An issuer's signed roster for this site, retained (who may enter)."""
        await self.send(f"lockgw/v1/org/{issuer}/rosters/{self.site}", raw, retain=True)


def _session_props() -> Any:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    # like the gateway, a platform takes nothing the broker may carry (256 MB): what a
    # site sends it is far below 1 MiB, and a stray giant on the site's topics is not read
    props.MaximumPacketSize = 1024 * 1024
    return props


class _Usage(Exception):
    """A problem with the command line or its files: one line on stderr, exit 2."""


def _connection(args: argparse.Namespace) -> dict[str, Any]:
    """TLS and login as the gateway's ``[mqtt]`` does them, from the common options."""
    try:
        tls = tls_context(
            args.broker,
            ca_file=args.ca_file,
            cert_file=args.cert_file,
            key_file=args.key_file,
            insecure_skip_verify=args.insecure_skip_verify,
        )
    except (OSError, ssl.SSLError) as exc:
        raise _Usage(f"TLS files: {exc}") from None
    password = None
    if args.password_file is not None:
        try:
            with open(args.password_file, encoding="utf-8") as f:
                password = f.readline(4096).rstrip("\r\n")  # bounded: /dev/zero ends too
        except (OSError, UnicodeDecodeError) as exc:
            raise _Usage(f"--password-file: {exc}") from None
    if password is not None and args.username is None:
        raise _Usage("--password-file needs --username")
    return {"tls": tls, "username": args.username, "password": password}


async def _watch(args: argparse.Namespace) -> int:
    def show(ev: dict[str, Any]) -> None:
        print(json.dumps(ev), flush=True)

    try:
        conn = _connection(args)
    except _Usage as exc:
        print(f"lockgw-sim platform watch: {exc}", file=sys.stderr)
        return 2
    try:
        async with Platform(args.broker, args.site, client_id=args.client_id, **conn) as p:
            p.on_event = show
            with contextlib.suppress(TimeoutError, asyncio.CancelledError, KeyboardInterrupt):
                async with asyncio.timeout(args.idle), p._new:
                    await p._new.wait_for(
                        lambda: args.count is not None and len(p.checker.events) >= args.count
                    )
            print(p.checker.summary(), file=sys.stderr)
            return 0 if not p.checker.gaps() else 1
    except aiomqtt.MqttError as exc:  # connecting: refused, TLS handshake, unreachable
        print(f"lockgw-sim platform watch: cannot connect to {args.broker}: {exc}", file=sys.stderr)
        return 2


@dataclass(frozen=True)
class Outgoing:
    """One signed message a platform sends, with where it goes (docs/platform.md)."""

    topic: str
    payload: bytes
    retain: bool
    what: str


def _read_message(name: str) -> bytes:
    """A signed message as the ``lockgw`` commands print it (base64url text) or as raw
    COSE bytes, from a file or ``-`` (stdin)."""
    try:
        if name == "-":
            data = sys.stdin.buffer.read(_MAX_FILE + 1)
        else:
            with open(name, "rb") as f:
                data = f.read(_MAX_FILE + 1)
    except OSError as exc:
        raise _Usage(f"{name}: {exc.strerror or exc}") from None
    if len(data) > _MAX_FILE:
        raise _Usage(f"{name}: larger than {_MAX_FILE} bytes: not a signed lockgw message")
    if data[:1] in (b"\xd8", b"\xd2"):  # a CBOR tag: raw COSE bytes
        return data
    try:
        return b64decode(data.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise _Usage(f"{name}: neither base64url text nor raw COSE bytes") from None


def classify(raw: bytes, site: str | None, *, source: str = "message") -> Outgoing:
    """Which signed message ``raw`` is and its topic. Decoded strictly but **not**
    verified: the platform simulator holds no keys; the gateway verifies."""
    try:
        cmd = Command.decode(raw)
    except ControlMessageError:
        pass
    else:
        if site is not None and cmd.site != site:
            raise _Usage(f"{source}: a command for site {cmd.site!r}, not {site!r}")
        door = f" {cmd.door}" if cmd.door else ""
        return Outgoing(
            f"lockgw/v1/{cmd.site}/commands",
            raw,
            False,
            f"command {cmd.cmd}{door} ({cmd.request_id})",
        )
    try:
        rl = RevocationList.decode(raw)
    except ControlMessageError:
        pass
    else:
        return Outgoing(
            f"lockgw/v1/org/{rl.iss}/revocations",
            raw,
            True,
            f"revocation list {rl.seq} of {rl.iss} ({len(rl.cti) + len(rl.sub)} revoked)",
        )
    try:
        ro = Roster.decode(raw)
    except ControlMessageError:
        pass
    else:
        if site is not None and ro.site != site:
            raise _Usage(f"{source}: a roster for site {ro.site!r}, not {site!r}")
        return Outgoing(
            f"lockgw/v1/org/{ro.iss}/rosters/{ro.site}",
            raw,
            True,
            f"roster {ro.seq} of {ro.iss} ({len(ro.entries)} entries)",
        )
    try:
        tok = decode_token(raw)
    except TokenError:
        pass
    else:
        if site is None:
            raise _Usage(f"{source}: a credential token: give --site for the gateway to hold it")
        return Outgoing(
            f"lockgw/v1/{site}/credentials", raw, False, f"credential of {tok.iss} for {tok.sub}"
        )
    raise _Usage(
        f"{source}: not a signed lockgw command, revocation list, roster or credential token"
    )


async def _send(args: argparse.Namespace) -> int:
    try:
        conn = _connection(args)
        out = [classify(_read_message(n), args.site, source=n) for n in args.files]
    except _Usage as exc:
        print(f"lockgw-sim platform send: {exc}", file=sys.stderr)
        return 2
    host, port = _broker(args.broker)
    try:
        async with aiomqtt.Client(
            host,
            port,
            identifier=f"platform-send-{uuid.uuid4().hex[:8]}",
            protocol=aiomqtt.ProtocolVersion.V5,
            logger=_QUIET,
            tls_context=conn["tls"],
            username=conn["username"],
            password=conn["password"],
        ) as client:
            for o in out:  # QoS 1: returns once the broker has acknowledged it
                await client.publish(o.topic, o.payload, qos=1, retain=o.retain)
                kept = ", retained" if o.retain else ""
                print(f"sent {o.what} to {o.topic}{kept}")
    except aiomqtt.MqttError as exc:
        print(f"lockgw-sim platform send: cannot send to {args.broker}: {exc}", file=sys.stderr)
        return 2
    return 0


def _broker_options(p: argparse.ArgumentParser) -> None:
    """The gateway's ``[mqtt]`` connection options: URL, ``[mqtt.tls]``, login."""
    p.add_argument("--broker", required=True, help="mqtt://127.0.0.1:P, or mqtts://HOST:PORT")
    p.add_argument("--ca-file", default=None, help="the broker's CA certificate (PEM)")
    p.add_argument("--cert-file", default=None, help="a client certificate (PEM)")
    p.add_argument("--key-file", default=None, help="its private key (PEM)")
    p.add_argument(
        "--insecure-skip-verify",
        action="store_true",
        help="do not check the broker's certificate (bench set-ups only)",
    )
    p.add_argument("--username", default=None, help="broker login")
    p.add_argument("--password-file", default=None, help="a file holding the password")


def register(subs: Any) -> None:
    p = subs.add_parser("platform", help="a simulated care platform")
    sub = p.add_subparsers(dest="platform_cmd", required=True, metavar="ACTION")
    w = sub.add_parser("watch", help="subscribe to a site's events; report gaps and duplicates")
    _broker_options(w)
    w.add_argument("--site", required=True)
    w.add_argument("--client-id", default=None, help="reuse to resume a persistent session")
    w.add_argument("--count", type=int, default=None, help="stop after N distinct events")
    w.add_argument("--idle", type=float, default=None, help="stop after T seconds")
    w.set_defaults(handler=_watch)
    s = sub.add_parser(
        "send",
        help="publish signed messages where a platform does: commands, revocation lists, "
        "rosters, credentials",
    )
    _broker_options(s)
    s.add_argument(
        "--site",
        default=None,
        help="the home: needed for a credential; checked against commands and rosters",
    )
    s.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="as `lockgw revoke|command|roster sign|token issue` print it "
        "(base64url) or raw COSE bytes; - for stdin",
    )
    s.set_defaults(handler=_send)
