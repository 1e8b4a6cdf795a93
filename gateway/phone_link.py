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
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Protocol

import structlog

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


class PhoneLink:
    """``async with PhoneLink(handler, "127.0.0.1:47100"): ...`` serves phones until exit."""

    def __init__(
        self,
        handler: DoorHandler,
        listen: str,
        *,
        step_timeout: float = 10.0,
        max_connections: int = 64,
    ) -> None:
        self.handler = handler
        self.host, self.port = parse_hostport(listen)
        self.step_timeout = step_timeout
        self._slots = asyncio.Semaphore(max_connections)
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def __aenter__(self) -> PhoneLink:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        sock = self._server.sockets[0]
        self.port = int(sock.getsockname()[1])
        log.info("phone_link.listening", address=self.address)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._conns):
                task.cancel()
            for task in list(self._conns):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        peer = "{}:{}".format(*writer.get_extra_info("peername")[:2])
        try:
            if self._slots.locked():
                log.warning("phone_link.busy", peer=peer)
                return
            async with self._slots:
                await self._exchange(reader, writer, peer)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError) as exc:
            log.info("phone_link.dropped", peer=peer, why=type(exc).__name__)
        finally:
            self._conns.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> None:
        async def recv() -> bytes:
            return await _read_frame(reader)

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
