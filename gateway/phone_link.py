"""The phone side of the door: the CONTRACT §3 exchange over loopback TCP.

One connection is one attempt: ``hello2`` → ``challenge2`` → ``proof`` → ``result2``
(``lockgw-unlock-v2``: the hello sealed to the site, challenge and result signed by it;
``protocols/exchange.py``), or the old v1 ``hello`` → ``challenge`` → ``proof`` →
``result`` where ``[phone_link] accept_v1`` allows it (refused as ``malformed`` else).
Every step has a timeout (``phone_link.step_timeout``); each connection runs in its
own task, so a slow or hostile phone stalls nobody else, and phones at different
doors proceed in parallel (commands to one device are serialised by its driver).

What happens between proof and result is the :class:`DoorHandler`'s business (the
gateway's :class:`gateway.door.DoorService`): decide, move the device, journal,
answer. This module only speaks the frames. The BLE GATT variant of the same
exchange carries the same frames in chunks (``protocols.phone.chunk``).
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Protocol

import structlog

from gateway.floods import PendingPool, SourceCounts, source_of
from protocols.errors import FrameError
from protocols.exchange import GatewayExchange, hello_hash, token_hash
from protocols.phone import (
    MAX_FRAME,
    Challenge,
    Hello,
    PhoneFrame,
    Proof,
    Result,
    SealedHello,
    decode_frame,
    encode_frame,
    pack,
)

__all__ = ["DoorHandler", "PhoneLink", "parse_hostport", "run_exchange"]

log = structlog.get_logger("lockgw.phone_link")


class DoorHandler(Protocol):
    """What the phone link needs from the gateway."""

    #: the site's keys for ``lockgw-unlock-v2`` and whether v1 is still accepted
    exchange: GatewayExchange

    def challenge(self) -> Challenge:
        """A fresh single-use nonce for this site."""
        ...

    async def attempt(
        self,
        hello: Hello,
        challenge: Challenge,
        proof: Proof,
        peer: str,
        *,
        binding: tuple[bytes, bytes] | None = None,
    ) -> Result:
        """Decide, act, journal; return the result frame for the phone. ``binding`` =
        (token hash, hello hash) that a v2 proof covers; None for v1."""
        ...

    async def malformed(self, peer: str, door: str | None, detail: str) -> Result:
        """Journal a malformed attempt; return the result frame."""
        ...


def parse_hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


class _Oversize(FrameError):
    """A declared length over MAX_FRAME: CONTRACT §3 says close, without an answer."""


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    header = await reader.readexactly(4)
    n = int.from_bytes(header, "big")
    if n > MAX_FRAME:
        raise _Oversize(f"declared frame length {n} exceeds {MAX_FRAME}")
    return await reader.readexactly(n)


#: file descriptors kept free for everything else (journal, MQTT, devices, web, logs)
_SPARE_FILES = 512


def file_limit_for(connections: int) -> int:
    """Raise this process's soft file limit so that ``connections`` pending phone
    connections fit beside everything else (as far as the hard limit allows: systemd's
    default soft limit is 1024, its hard limit far higher); the connections that fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = connections + _SPARE_FILES
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(hard, want)
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
    fits = connections if soft == resource.RLIM_INFINITY else max(2, min(connections, soft - _SPARE_FILES))
    if fits < connections:
        log.warning("phone_link.file_limit", max_connections=connections, fits=fits, soft=soft)
    return fits


class PhoneLink:
    """``async with PhoneLink(handler, "127.0.0.1:47100"): ...`` serves phones until exit.

    Connections that have not sent their proof yet are *pending* and bounded
    (:class:`gateway.floods.PendingPool`): a newcomer is always let in, and to make
    room an idle or trickling one is closed — of the source holding the most, the
    oldest first. Closed connections are counted per source; every ``flood_interval``
    seconds each source that had any is reported once to ``on_flood(source, count,
    interval)`` (the gateway journals it as ``access.suspicious``) and :meth:`pressure`
    tells health about it.
    """

    def __init__(
        self,
        handler: DoorHandler,
        listen: str,
        *,
        step_timeout: float = 10.0,
        max_pending: int = 64,
        max_pending_per_source: int = 16,
        max_connections: int = 2048,
        flood_interval: float = 60.0,
        on_flood: Callable[[str, int, float], Awaitable[None]] | None = None,
    ) -> None:
        self.handler = handler
        self.host, self.port = parse_hostport(listen)
        self.step_timeout = step_timeout
        self.flood_interval = flood_interval
        self.on_flood = on_flood
        self._pool: PendingPool[asyncio.Task[None]] = PendingPool(
            max_pending, max_pending_per_source, hard_limit=max_connections
        )
        self._writers: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._closed = SourceCounts()
        #: (connections closed to make room, sources) in the last whole interval
        self._last: tuple[int, int] = (0, 0)
        self._server: asyncio.Server | None = None
        self._reporter: asyncio.Task[None] | None = None
        self._conns: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def pressure(self) -> tuple[int, int]:
        """(pending connections closed to make room, their sources) over the current and
        the last whole ``flood_interval``; (0, 0) when the link is not under pressure."""
        now = self._closed.total()
        n, sources = self._last
        return n + now, max(sources, len(self._closed))

    async def __aenter__(self) -> PhoneLink:
        self._pool.hard_limit = file_limit_for(self._pool.hard_limit)
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        sock = self._server.sockets[0]
        self.port = int(sock.getsockname()[1])
        self._reporter = asyncio.create_task(self._report_loop(), name="phone_link.floods")
        log.info("phone_link.listening", address=self.address)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._reporter is not None:
            self._reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reporter
        if self._server is not None:
            self._server.close()
            # pending connections end by their link (a read that ends), not by cancelling:
            # asyncio's stream callback logs every cancelled connection task as an error
            for task, writer in list(self._writers.items()):
                if self._pool.pending(task):
                    writer.transport.abort()
            for task in list(self._conns):
                if not self._pool.pending(task):
                    task.cancel()
            for task in list(self._conns):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self._server.wait_closed()
        await self._report()  # what the last interval closed is said too

    async def _report_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flood_interval)
            await self._report()

    async def _report(self) -> None:
        counts = self._closed.take()
        self._last = (sum(counts.values()), len(counts))
        if not counts:
            return
        log.warning(
            "phone_link.flood",
            closed=self._last[0],
            sources=self._last[1],
            interval=self.flood_interval,
        )
        if self.on_flood is None:
            return
        for source, n in counts.items():
            try:
                await self.on_flood(source, n, self.flood_interval)
            except Exception as exc:  # a report that fails must not stop the link
                log.error("phone_link.flood_report_failed", source=source, error=str(exc))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        peer = "{}:{}".format(*writer.get_extra_info("peername")[:2])
        self._writers[task] = writer
        now = asyncio.get_running_loop().time()
        for victim in self._pool.admit(task, source_of(peer), now):
            self._make_room(victim)
        try:
            await self._exchange(task, reader, writer, peer)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError) as exc:
            log.debug("phone_link.dropped", peer=peer, why=type(exc).__name__)
        finally:
            self._pool.discard(task)
            self._writers.pop(task, None)
            self._conns.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _make_room(self, victim: asyncio.Task[None]) -> None:
        writer = self._writers.get(victim)
        if writer is None:
            return
        peer = writer.get_extra_info("peername")
        self._closed.add(source_of("{}:{}".format(*peer[:2])) if peer else "unknown")
        writer.transport.abort()  # its read ends at once (IncompleteReadError): dropped

    async def _exchange(
        self,
        task: asyncio.Task[None],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: str,
    ) -> None:
        frames = 0

        async def recv() -> bytes:
            nonlocal frames
            data = await _read_frame(reader)
            frames += 1
            if frames == 1:
                self._pool.hello_seen(task)
            else:  # the proof is in: no longer pending, never closed to make room
                self._pool.discard(task)
            return data

        async def send(data: bytes) -> None:
            writer.write(pack(data))
            await writer.drain()

        await run_exchange(self.handler, recv, send, peer, self.step_timeout)


async def run_exchange(
    handler: DoorHandler,
    recv: Callable[[], Awaitable[bytes]],
    send: Callable[[bytes], Awaitable[None]],
    peer: str,
    step_timeout: float,
) -> None:
    """One CONTRACT §3 exchange over any transport that moves whole CBOR frames.

    Used by the loopback TCP link and by the BLE GATT peripheral (``gateway.phone_ble``).
    Every step is bounded by ``step_timeout``; a malformed frame is answered with a
    ``malformed`` result (journaled by the handler), an oversize one closes silently.
    In a v2 exchange every result the phone hears, ``malformed`` included, is signed
    over the hash of the sealed hello it sent.
    """
    exchange = handler.exchange

    async def step() -> PhoneFrame:
        async with asyncio.timeout(step_timeout):
            return decode_frame(await recv())

    async def reply(frame: PhoneFrame) -> None:
        async with asyncio.timeout(step_timeout):
            await send(encode_frame(frame))

    door: str | None = None
    h: bytes | None = None  # v2: SHA-256 of the sealed hello, as received
    try:
        first = await step()
        if isinstance(first, SealedHello):
            h = hello_hash(first.sealed)
            hello, _ = exchange.open_hello(first)
        elif isinstance(first, Hello):
            if not exchange.accept_v1:
                raise FrameError(
                    "lockgw-unlock-v1 hello refused: this site accepts lockgw-unlock-v2 only "
                    "(phone_link.accept_v1 = false)"
                )
            hello = first
        else:
            raise FrameError(f"expected hello, got {type(first).__name__.lower()}")
        door = hello.door
        challenge = handler.challenge()
        await reply(challenge if h is None else exchange.challenge(challenge.nonce, h))
        proof = await step()
        if not isinstance(proof, Proof):
            raise FrameError(f"expected proof, got {type(proof).__name__.lower()}")
    except FrameError as exc:
        result = await handler.malformed(peer, door, exc.detail)
        if isinstance(exc, _Oversize):
            return
        with contextlib.suppress(Exception):
            await reply(result if h is None else exchange.result(h, result))
        return
    if h is None:
        await reply(await handler.attempt(hello, challenge, proof, peer))
        return
    result = await handler.attempt(hello, challenge, proof, peer, binding=(token_hash(hello), h))
    await reply(exchange.result(h, result))
