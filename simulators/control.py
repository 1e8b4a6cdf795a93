"""The control channel of a simulator: switch faults and device states at run time.

A simulator started with ``--control 127.0.0.1:Q`` listens there for line-delimited
JSON (loopback only). One request per line, one reply per line, many per connection::

    → {"name": "delay_ms", "value": 30}
    ← {"ok": true, "result": {"delay_ms": 30.0, ...}}
    → {"name": "jam"}                        (value may be omitted: null)
    ← {"ok": false, "error": "unknown control 'jam'; known: clear, corrupt, ..."}

``help`` lists every name with a line of help. Technicians use
``lockgw-sim fault --control 127.0.0.1:Q NAME [VALUE]`` (VALUE is JSON when it parses,
else text); tests use :func:`send_control`. Imports ``protocols/`` only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from protocols.errors import LockgwError
from simulators.link_faults import LinkFaults

__all__ = [
    "ControlError",
    "ControlServer",
    "parse_host_port",
    "register",
    "send_control",
]

log = structlog.get_logger("lockgw.sim.control")

ControlHandler = Callable[[Any], Any | Awaitable[Any]]

#: a request line is small; anything longer is refused and the connection closed
MAX_LINE = 64 * 1024

_FAULT_HELP = {
    "delay_ms": "latency added to every link frame, ms (30 = one BLE connection interval)",
    "reply_delay_ms": "extra time before the device answers a request, ms",
    "corrupt": "corrupt the next N frames the device sends (default 1)",
    "refuse": "refuse new BLE connections: true/false",
    "out_of_range": "true: links drop, scans and connections get no answer at all",
    "drop": "drop every current BLE link now",
    "clear": "switch every link fault off",
    "faults": "show the link fault settings",
}


class ControlError(LockgwError):
    """The control channel could not be reached, or refused the request."""


def parse_host_port(spec: str) -> tuple[str, int]:
    """``"127.0.0.1:47101"`` → ``("127.0.0.1", 47101)``; ``ValueError`` saying what is wrong."""
    host, sep, port = spec.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{spec!r}: expected host:port, e.g. 127.0.0.1:47101")
    return host.strip("[]"), int(port)


class ControlServer:
    """Line-JSON control port. ``register(name, handler)``; a handler gets the value
    (None when omitted), may be async, returns anything JSON can carry, and raises
    ``ValueError`` / ``KeyError`` / ``TypeError`` to refuse with a message."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._port = port
        self._handlers: dict[str, tuple[ControlHandler, str]] = {}
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.register(
            "help",
            lambda _v: {n: h for n, (_, h) in sorted(self._handlers.items())},
            "list the control names",
        )

    @classmethod
    def from_spec(cls, spec: str) -> ControlServer:
        host, port = parse_host_port(spec)
        return cls(host, port)

    def register(self, name: str, handler: ControlHandler, help: str = "") -> None:
        self._handlers[name] = (handler, help)

    def register_faults(self, faults: LinkFaults) -> None:
        """Expose every link fault (``delay_ms``, ``drop``, …) under its own name."""

        def switch(name: str) -> ControlHandler:
            return lambda value: faults.apply(name, value)

        for name in LinkFaults.NAMES:
            self.register(name, switch(name), _FAULT_HELP[name])

    @property
    def names(self) -> list[str]:
        return sorted(self._handlers)

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the control server is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._serve, self.host, self._port, limit=MAX_LINE
            )
            log.info("control channel listening", address=self.address)

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def call(self, name: str, value: Any = None) -> dict[str, Any]:
        """Run one request in-process; returns the reply the wire would carry."""
        entry = self._handlers.get(name)
        if entry is None:
            return {
                "ok": False,
                "error": f"unknown control {name!r}; known: {', '.join(self.names)}",
            }
        try:
            result = entry[0](value)
            if inspect.isawaitable(result):
                result = await result
        except (ValueError, KeyError, TypeError) as exc:
            return {"ok": False, "error": f"{name}: {exc}"}
        log.info("control", name=name, value=value)
        return {"ok": True, "result": result}

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                try:
                    line = await reader.readuntil(b"\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                except asyncio.LimitOverrunError:
                    writer.write(_line({"ok": False, "error": f"request over {MAX_LINE} bytes"}))
                    return
                reply = await self._answer(line)
                writer.write(_line(reply))
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            return  # CancelledError: close() ends this task of ours; it ends here
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return {"ok": False, "error": f"not JSON: {exc}"}
        if (
            not isinstance(request, dict)
            or not isinstance(request.get("name"), str)
            or set(request) - {"name", "value"}
        ):
            return {"ok": False, "error": 'a request is {"name": text, "value": any}'}
        return await self.call(request["name"], request.get("value"))


def _line(obj: Any) -> bytes:
    return json.dumps(obj, default=str).encode() + b"\n"


async def send_control(
    host_port: str, name: str, value: Any = None, *, timeout: float = 5.0
) -> Any:
    """Send one control request to a simulator; returns its ``result``.

    Raises :class:`ControlError` when the simulator cannot be reached in ``timeout``
    seconds or refuses the request (unknown name, bad value)."""
    try:
        host, port = parse_host_port(host_port)
    except ValueError as exc:
        raise ControlError(str(exc)) from None
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port, limit=MAX_LINE)
            writer.write(_line({"name": name, "value": value}))
            await writer.drain()
            raw = await reader.readuntil(b"\n")
    except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        raise ControlError(
            f"control channel {host_port} did not answer ({type(exc).__name__}: {exc}); "
            "is the simulator running with --control on that address?"
        ) from exc
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
    try:
        reply = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ControlError(f"control channel {host_port} answered with non-JSON") from exc
    if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
        raise ControlError(f"control channel {host_port} answered with a malformed reply")
    if not reply["ok"]:
        raise ControlError(str(reply.get("error", "refused")))
    return reply.get("result")


# -- lockgw-sim fault ------------------------------------------------------------------------
def _parse_value(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


async def _fault(args: argparse.Namespace) -> int:
    try:
        result = await send_control(
            args.control, args.name, _parse_value(args.value), timeout=args.timeout
        )
    except ControlError as exc:
        print(f"lockgw-sim fault: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2, default=str))
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "fault",
        help="switch a fault or device state of a running simulator",
        description="Send one control request to a simulator started with --control. "
        "`lockgw-sim fault --control 127.0.0.1:47101 help` lists what it offers.",
    )
    p.add_argument(
        "--control", required=True, metavar="HOST:PORT", help="the simulator's control address"
    )
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the answer")
    p.add_argument("name", metavar="NAME", help="e.g. delay_ms, drop, refuse, corrupt, help")
    p.add_argument(
        "value", metavar="VALUE", nargs="?", help='JSON (30, true, "text") or plain text'
    )
    p.set_defaults(handler=_fault)
