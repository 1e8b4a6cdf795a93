"""In the daemon: the snapshot file, the health socket and the metrics endpoint; for
``lockgw health``: asking the daemon, and saying it all in words."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType

import structlog

from gateway.health._reasons import evaluate
from gateway.health._snapshot import SNAPSHOT_NAME, SOCKET_NAME, Snapshot
from protocols.health import LEVELS, HealthReason, overall
from protocols.i18n import Lang, language

__all__ = ["HealthServer", "as_json", "ask_daemon", "summary"]

log = structlog.get_logger("lockgw.health")

#: a look at the present state: the snapshot and its reasons (in the site's language)
OnLook = Callable[[Snapshot, list[HealthReason]], Awaitable[None]]


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def _metrics(snap: Snapshot, reasons: list[HealthReason]) -> str:
    health = overall(reasons)
    lines = [
        "# TYPE lockgw_up gauge",
        "lockgw_up 1",
        "# HELP lockgw_health 0 healthy, 1 warning, 2 degraded (planned care refused), "
        "3 unhealthy (a door cannot open)",
        f"lockgw_health {0 if health == 'healthy' else LEVELS.index(health) + 1}",
        f"lockgw_starting {int(snap.phase == 'starting')}",
        f"lockgw_clock_trusted {int(snap.clock_trusted)}",
        f"lockgw_broker_connected {int(snap.broker_connected)}",
        f"lockgw_journal_ok {int(snap.journal_ok)}",
        f"lockgw_journal_last_seq {snap.last_seq}",
        f"lockgw_journal_backlog {snap.backlog}",
        f"lockgw_journal_failures_total {snap.journal_failures}",
        f"lockgw_journal_held {snap.journal_held}",
        f"lockgw_journal_not_durable {snap.journal_not_durable}",
        f"lockgw_phones_served_total {snap.phones_served}",
        *(
            [
                f"lockgw_phone_ble_up {int(snap.phone_ble.up)}",
                f"lockgw_phone_ble_sessions {snap.phone_ble.sessions}",
                f"lockgw_phone_ble_served_total {snap.phone_ble.served}",
            ]
            if snap.phone_ble is not None
            else []
        ),
        f"lockgw_broker_config_ok {int(snap.broker_problem is None)}",
        f"lockgw_state_fallbacks {len(snap.state)}",
        f"lockgw_state_restrictions_in_force {sum(n.in_force for n in snap.state)}",
        f"lockgw_state_write_failures_total {snap.state_write_failures}",
        f"lockgw_health_write_failures_total {snap.write_failures}",
        f"lockgw_started_at_seconds {snap.started_at:.0f}",
    ]
    for r in reasons:
        labels = f'code="{r.code}",level="{r.level}",subject="{_label(r.subject or "")}"'
        lines.append(f"lockgw_health_reason{{{labels}}} 1")
    for i in snap.issuers:
        labels = f'issuer="{_label(i.id)}"'
        lines.append(f"lockgw_revocation_stale{{{labels}}} {int(i.stale)}")
        if i.seq is not None:
            lines.append(f"lockgw_revocation_seq{{{labels}}} {i.seq}")
        if i.age is not None:
            lines.append(f"lockgw_revocation_age_seconds{{{labels}}} {i.age:.0f}")
        if i.max_age is not None:
            lines.append(f"lockgw_revocation_max_age_seconds{{{labels}}} {i.max_age}")
    for d in snap.devices:
        labels = f'device="{_label(d.id)}",door="{_label(d.door)}"'
        lines.append(f"lockgw_device_online{{{labels}}} {int(d.online)}")
        if d.battery is not None:
            lines.append(f"lockgw_device_battery_percent{{{labels}}} {d.battery}")
        if d.last_contact is not None:
            lines.append(f"lockgw_device_last_contact_seconds{{{labels}}} {d.last_contact:.0f}")
    return "\n".join(lines) + "\n"


class HealthServer:
    """In the daemon, from the very start: writes the snapshot every ``interval`` s (atomically:
    a reader never sees half of one), answers ``health.sock`` with the present state,
    serves ``/metrics`` if asked, and hands every look to ``on_look`` (the retained
    status and the health events)."""

    def __init__(
        self,
        data_dir: Path,
        collect: Callable[[], Snapshot],
        *,
        interval: float = 5.0,
        metrics: str | None = None,
        lang: Lang | None = None,
        on_look: OnLook | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.path = data_dir / SNAPSHOT_NAME
        self.socket_path = data_dir / SOCKET_NAME
        self.collect = collect
        self.interval = interval
        self.metrics = metrics
        self.lang = lang or language()
        self.on_look = on_look
        self.write_failures = 0
        self._servers: list[asyncio.Server] = []
        self._task: asyncio.Task[None] | None = None

    def write_now(self) -> Snapshot:
        """Write the present snapshot (atomically); OSError when it cannot be written —
        the old file then stays and grows old, and ``lockgw health`` asks the socket."""
        snap = self.present()
        self._write(snap)
        return snap

    def _write(self, snap: Snapshot) -> None:
        tmp = self.path.with_suffix(".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(snap.model_dump_json().encode())
            os.replace(tmp, self.path)
        except OSError:
            self.write_failures += 1
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise

    def present(self) -> Snapshot:
        snap = self.collect()
        if self.write_failures:
            snap = snap.model_copy(update={"write_failures": self.write_failures})
        return snap

    def look(self) -> tuple[Snapshot, list[HealthReason]]:
        snap = self.present()
        return snap, evaluate(self.data_dir, snap, lang=self.lang, live=True)

    async def run(self) -> None:
        while True:
            try:
                snap = self.present()  # on the loop: the parts are not thread-safe
                try:
                    await asyncio.to_thread(self._write, snap)  # the file, off the loop
                except OSError as exc:  # a full disk must not stop the gateway
                    log.error(
                        "health.write_failed", error=str(exc), failures=self.write_failures
                    )
                if self.on_look is not None:
                    reasons = evaluate(self.data_dir, snap, lang=self.lang, live=True)
                    await self.on_look(snap, reasons)
            except Exception as exc:  # the doors do not depend on health
                log.error("health.look_failed", error=repr(exc))
            await asyncio.sleep(self.interval)

    async def _serve_socket(self, _r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(self.present().model_dump_json().encode() + b"\n")
            async with asyncio.timeout(5):
                await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                request = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
            if request.split(b" ")[1:2] == [b"/metrics"]:
                body, status = _metrics(*self.look()).encode(), b"200 OK"
            else:
                body, status = b"see /metrics\n", b"404 Not Found"
            writer.write(
                b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain; version=0.0.4\r\n"
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError, IndexError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def __aenter__(self) -> HealthServer:
        try:  # what is there is left from a previous process: replace it now
            self.write_now()
        except OSError as exc:
            log.error("health.write_failed", error=str(exc))
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        try:
            self._servers.append(
                await asyncio.start_unix_server(self._serve_socket, path=str(self.socket_path))
            )
        except OSError as exc:  # e.g. a path longer than a socket's 108 bytes
            log.warning("health.no_socket", path=str(self.socket_path), error=str(exc))
        try:
            if self.metrics:
                host, _, port = self.metrics.rpartition(":")
                self._servers.append(
                    await asyncio.start_server(self._serve, host or "127.0.0.1", int(port))
                )
        except BaseException:
            await self._close()
            raise
        self._task = asyncio.create_task(self.run(), name="health")
        return self

    async def _close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for s in self._servers:
            s.close()
            await s.wait_closed()
        self._servers.clear()
        with contextlib.suppress(OSError):
            self.socket_path.unlink()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._close()


async def ask_daemon(data_dir: Path, timeout: float = 3.0) -> Snapshot | None:
    """The running daemon's present state, asked over its health socket; None when no
    daemon answers (not running, stuck, or no socket)."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(str(data_dir / SOCKET_NAME))
            try:
                data = await reader.read(16 * 1024 * 1024)
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
        return Snapshot.model_validate_json(data)
    except (OSError, TimeoutError, ValueError):
        return None


def summary(reasons: list[HealthReason], snap: Snapshot | None, lang: Lang | None = None) -> str:
    lang = lang or language("en")
    _ = lang.gettext
    health = overall(reasons)
    words = {
        "healthy": _("healthy"),
        "warning": _("warning"),
        "degraded": _("degraded"),
        "unhealthy": _("unhealthy"),
    }
    head = words[health]
    if reasons:
        head += ", " + lang.ngettext("{n} problem", "{n} problems", len(reasons)).format(
            n=len(reasons)
        )
    lines = [f"lockgw: {head}"]
    if snap is not None and snap.phase == "running":
        lines.append(
            "  "
            + _(
                "journal seq {seq}, backlog {backlog}; broker {broker}; {online}/{total} "
                "devices online"
            ).format(
                seq=snap.last_seq,
                backlog=snap.backlog,
                broker=_("connected") if snap.broker_connected else _("not connected"),
                online=sum(d.online for d in snap.devices),
                total=len(snap.devices),
            )
        )
        if snap.phone_ble is not None:
            ble = snap.phone_ble
            text = (
                _("BLE phone link: up on {adapter}; {sessions} phone(s) in an exchange, {served} served")
                if ble.up
                else _("BLE phone link: DOWN on {adapter}")
            )
            lines.append(
                "  " + text.format(adapter=ble.adapter, sessions=ble.sessions, served=ble.served)
            )
    level = {"warning": _("warning"), "degraded": _("degraded"), "unhealthy": _("unhealthy")}
    lines += [f"  - [{level[r.level]}] {r.text}" for r in reasons]
    return "\n".join(lines)


def as_json(reasons: list[HealthReason], snap: Snapshot | None) -> str:
    return json.dumps(
        {
            "ok": not reasons,
            "health": overall(reasons),
            "reasons": [r.model_dump() for r in reasons],
            # the same texts as a plain list (before reasons had levels)
            "problems": [r.text for r in reasons],
            "snapshot": snap.model_dump(mode="json") if snap else None,
        }
    )
