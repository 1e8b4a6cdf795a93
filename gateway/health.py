"""Health: what the daemon knows about itself, for monitoring and for ``lockgw health``.

The daemon writes a :class:`Snapshot` to ``<data_dir>/health.json`` every few seconds
(atomically) and, when ``[health] metrics`` is set, serves the same figures as
Prometheus text on a loopback address. ``lockgw health`` reads the snapshot and adds
what it can check itself (disk space, the snapshot's age — a daemon that stopped
writing is a daemon in trouble), prints a summary and exits 0 (healthy) or 1.

Checks and their limits:

=================  ===========================================================
clock              trusted: not behind the persisted time floor
disk               at least 100 MB and 5 % free on the data directory
daemon             the snapshot is younger than 3 × its write interval
broker             connected to the MQTT broker
journal            writable (else: events wait in its fallback file, or are not
                   recorded at all), and the unpublished backlog below 10,000 events
devices            every device contacted within 3 × its health interval
state              no state file of the access decision was missing or damaged
                   at this start (time floor, revocations, used command ids,
                   alarm, held tokens), no restriction left from such a loss, and
                   every write of one succeeded
=================  ===========================================================

A state-file fallback stays a problem for the life of the daemon: it means a file
that protects security was deleted or damaged, which a person should look into
(who could delete it? is the SD card failing?). Restarting lockgw once that is
done clears the notice; a restriction still in force (planned care waiting for a
revocation list, remote commands refused until they expire) is shown after a
restart too, until it is lifted.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import structlog
from pydantic import BaseModel, ConfigDict

from protocols.i18n import Lang, language

__all__ = [
    "DeviceHealth",
    "HealthServer",
    "Snapshot",
    "StateNotice",
    "evaluate",
    "read_snapshot",
]

log = structlog.get_logger("lockgw.health")

SNAPSHOT_NAME = "health.json"
MIN_FREE_BYTES = 100 * 1024 * 1024
MIN_FREE_FRACTION = 0.05
MAX_BACKLOG = 10_000


class DeviceHealth(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    door: str
    online: bool
    last_contact: float | None
    battery: int | None
    health_interval: float
    #: why it is offline or failing, in words (e.g. damaged pairing keys: pair again)
    error: str | None = None


class StateNotice(BaseModel):
    """A state file found missing or damaged at start, and the safe side taken."""

    model_config = ConfigDict(frozen=True)

    file: str
    problem: str
    at: float
    fallback: str
    in_force: bool
    kept_as: str | None = None
    #: revocations.json: the issuers whose planned care still waits for their list
    issuers: list[str] = []
    #: commands.json: commands expiring before this time are refused
    until: float | None = None


def _state_line(n: StateNotice, _: Callable[[str], str]) -> str:
    """One state fallback in words (the daemon's ``fallback`` text is English; the
    words here follow the chosen language)."""
    f = n.file
    if f == "time_floor.json":
        what = _(
            "the time floor was taken from the journal's newest event, so a clock set back "
            "cannot revive an expired token"
        )
    elif f == "revocations.json" and n.in_force:
        what = _(
            "planned care of {issuers} is refused (revocation_stale) until each sends its "
            "revocation list again; emergency access still opens"
        ).format(issuers=", ".join(n.issuers))
    elif f == "revocations.json":
        what = _("no planned care is restricted: every lost revocation list is back, or none was lost")
    elif f == "commands.json" and n.in_force:
        what = _(
            "remote commands that could have been sent before the start are refused "
            "(nonce_reused) until {until}"
        ).format(until=time.strftime("%H:%M:%S", time.localtime(n.until or n.at)))
    elif f == "commands.json":
        what = _("every remote command that could have been sent before the loss has expired")
    elif f == "alarm.json":
        what = _("the alarm state was taken from the journal")
    elif f.startswith("held/"):
        what = _("the held token was dropped; the platform must send it again")
    elif f == "rosters.json":
        what = _(
            "tokens are not checked against a roster until each organisation's roster "
            "arrives again"
        )
    elif f == "names.json":
        what = _("the resident's views show pseudonyms until the rosters arrive again")
    else:
        what = n.fallback
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(n.at))
    kept = _(" (kept as {path})").format(path=n.kept_as) if n.kept_as else ""
    if n.problem == "missing":
        line = _("state: {file} was missing at start ({when}){kept}; {what}")
    else:
        line = _("state: {file} was damaged at start ({when}){kept}; {what}")
    return line.format(file=f, when=when, kept=kept, what=what)


class Snapshot(BaseModel):
    model_config = ConfigDict(frozen=True)

    written_at: float
    interval: float
    pid: int
    version: str
    started_at: float
    clock_trusted: bool
    time_floor: float | None
    broker_connected: bool
    #: the [mqtt] config cannot be used: the link was not started (why, in words)
    broker_problem: str | None = None
    journal_ok: bool
    journal_failures: int
    last_seq: int
    backlog: int
    devices: list[DeviceHealth]
    phones_served: int = 0
    #: ``ok`` / ``fallback`` / ``unrecorded`` (``gateway.journal.Journal.recording``)
    journal_recording: str = "ok"
    #: events waiting in the fallback for the journal; of those, kept in memory only
    journal_held: int = 0
    journal_not_durable: int = 0
    #: why the journal cannot write, in words (None when it can)
    journal_problem: str | None = None
    state: list[StateNotice] = []
    state_write_failures: int = 0


def read_snapshot(data_dir: Path) -> Snapshot | None:
    try:
        return Snapshot.model_validate_json((data_dir / SNAPSHOT_NAME).read_bytes())
    except (OSError, ValueError):
        return None


def running_daemon(data_dir: Path) -> int | None:
    """The pid of a gateway daemon running on ``data_dir`` (from its snapshot), or None.
    Installer commands that talk to devices directly refuse while it runs: a BLE
    device takes one connection, and the journal has one writer."""
    snap = read_snapshot(data_dir)
    pid = snap.pid if snap is not None else None
    if not pid or pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, another user (the lockgw service user)
        return pid
    return pid


def evaluate(
    data_dir: Path, snap: Snapshot | None, now: float | None = None, *, lang: Lang | None = None
) -> list[str]:
    """Every problem, in words for a monitoring page (English unless ``lang``); empty = healthy."""
    now = time.time() if now is None else now
    _ = (lang or language("en")).gettext
    problems: list[str] = []
    try:
        du = shutil.disk_usage(data_dir)
        if du.free < MIN_FREE_BYTES or du.free < MIN_FREE_FRACTION * du.total:
            problems.append(
                _(
                    "disk: only {mb} MB free on {dir}; free space or the journal cannot "
                    "record entries"
                ).format(mb=du.free // (1024 * 1024), dir=data_dir)
            )
    except OSError as exc:
        problems.append(_("disk: cannot read {dir}: {error}").format(dir=data_dir, error=exc.strerror))
    if snap is None:
        problems.append(
            _("daemon: no health snapshot in {dir}; is lockgw running?").format(dir=data_dir)
        )
        return problems
    age = now - snap.written_at
    if age > 3 * snap.interval:
        problems.append(
            _("daemon: last health snapshot {age} s old; the gateway seems stuck or stopped").format(
                age=f"{age:.0f}"
            )
        )
    if not snap.clock_trusted:
        problems.append(
            _("clock: behind the time floor; planned-care access is restricted until it is fixed")
        )
    if snap.time_floor is not None and now + 60 < snap.time_floor:
        problems.append(_("clock: this machine's clock is behind the gateway's time floor"))
    if snap.broker_problem:
        problems.append(
            _(
                "broker: not started, the [mqtt] config has problems ({why}); fix them "
                "(lockgw check-config lists them) and restart lockgw. Doors keep working; "
                "events are kept and sent once it connects"
            ).format(why=snap.broker_problem)
        )
    elif not snap.broker_connected:
        problems.append(_("broker: not connected; events are kept and sent when it is back"))
    problems += _journal_problems(snap, _)
    if snap.backlog > MAX_BACKLOG:
        problems.append(_("journal: {n} events not yet published").format(n=snap.backlog))
    for n in snap.state:
        problems.append(_state_line(n, _))
    if snap.state_write_failures:
        problems.append(
            _(
                "state: {n} write(s) of the access state failed (disk full or read-only?); "
                "the gateway decides from memory, a restart would lose them"
            ).format(n=snap.state_write_failures)
        )
    for d in snap.devices:
        if not d.online:
            if d.error:
                problems.append(
                    _("device {id} ({door}): offline: {why}").format(
                        id=d.id, door=d.door, why=d.error
                    )
                )
            else:
                problems.append(_("device {id} ({door}): offline").format(id=d.id, door=d.door))
        elif d.last_contact is None or now - d.last_contact > 3 * d.health_interval:
            problems.append(
                _("device {id} ({door}): no contact for a while").format(id=d.id, door=d.door)
            )
        if d.battery is not None and d.battery <= 10:
            problems.append(
                _("device {id} ({door}): battery critical ({level} %)").format(
                    id=d.id, door=d.door, level=d.battery
                )
            )
    return problems


def _journal_problems(snap: Snapshot, _: Callable[[str], str]) -> list[str]:
    why = f" ({snap.journal_problem})" if snap.journal_problem else ""
    if snap.journal_recording == "unrecorded":
        return [
            _(
                "journal: NOTHING IS RECORDED: neither the journal nor its fallback file can "
                "be written{why}; {n} events are kept in memory only and are lost if the "
                "gateway stops; doors still open for valid keys; free disk space or fix the "
                "data directory now"
            ).format(why=why, n=snap.journal_not_durable)
        ]
    if snap.journal_recording == "fallback":
        return [
            _(
                "journal: cannot write{why}; {n} events wait in its fallback file and are "
                "journaled and published, in order, once it can; doors still open"
            ).format(why=why, n=snap.journal_held)
        ]
    if not snap.journal_ok:
        return [_("journal: cannot write; events go to its fallback file; doors still open")]
    return []


def _metrics(snap: Snapshot) -> str:
    lines = [
        "# TYPE lockgw_up gauge",
        "lockgw_up 1",
        f"lockgw_clock_trusted {int(snap.clock_trusted)}",
        f"lockgw_broker_connected {int(snap.broker_connected)}",
        f"lockgw_journal_ok {int(snap.journal_ok)}",
        f"lockgw_journal_last_seq {snap.last_seq}",
        f"lockgw_journal_backlog {snap.backlog}",
        f"lockgw_journal_failures_total {snap.journal_failures}",
        f"lockgw_journal_held {snap.journal_held}",
        f"lockgw_journal_not_durable {snap.journal_not_durable}",
        f"lockgw_phones_served_total {snap.phones_served}",
        f"lockgw_broker_config_ok {int(snap.broker_problem is None)}",
        f"lockgw_state_fallbacks {len(snap.state)}",
        f"lockgw_state_restrictions_in_force {sum(n.in_force for n in snap.state)}",
        f"lockgw_state_write_failures_total {snap.state_write_failures}",
        f"lockgw_started_at_seconds {snap.started_at:.0f}",
    ]
    for d in snap.devices:
        labels = f'device="{d.id}",door="{d.door}"'
        lines.append(f"lockgw_device_online{{{labels}}} {int(d.online)}")
        if d.battery is not None:
            lines.append(f"lockgw_device_battery_percent{{{labels}}} {d.battery}")
        if d.last_contact is not None:
            lines.append(f"lockgw_device_last_contact_seconds{{{labels}}} {d.last_contact:.0f}")
    return "\n".join(lines) + "\n"


class HealthServer:
    """In the daemon: writes the snapshot every ``interval`` s; serves ``/metrics`` if asked."""

    def __init__(
        self,
        data_dir: Path,
        collect: Callable[[], Snapshot],
        *,
        interval: float = 5.0,
        metrics: str | None = None,
    ) -> None:
        self.path = data_dir / SNAPSHOT_NAME
        self.collect = collect
        self.interval = interval
        self.metrics = metrics
        self._server: asyncio.Server | None = None

    def write_now(self) -> Snapshot:
        snap = self.collect()
        data = snap.model_dump_json().encode()
        # padded to whole blocks: on a full disk the snapshot is rewritten in the old
        # file's own blocks, and health still tells what a full disk does to the journal
        data += b" " * (-len(data) % 4096)
        tmp = self.path.with_suffix(".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if exc.errno != errno.ENOSPC or not self.path.exists():
                raise
            with self.path.open("r+b") as f:  # not atomic: a reader may catch it half done
                f.write(data)
                f.truncate()
        return snap

    async def run(self) -> None:
        while True:
            try:
                self.write_now()
            except OSError as exc:  # a full disk must not stop the gateway
                log.error("health.write_failed", error=str(exc))
            await asyncio.sleep(self.interval)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                request = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
            if request.split(b" ")[1:2] == [b"/metrics"]:
                body, status = _metrics(self.collect()).encode(), b"200 OK"
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
        if self.metrics:
            host, _, port = self.metrics.rpartition(":")
            self._server = await asyncio.start_server(self._serve, host or "127.0.0.1", int(port))
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def summary(problems: list[str], snap: Snapshot | None, lang: Lang | None = None) -> str:
    lang = lang or language("en")
    _ = lang.gettext
    head = (
        _("healthy")
        if not problems
        else lang.ngettext("{n} problem", "{n} problems", len(problems)).format(n=len(problems))
    )
    lines = [f"lockgw: {head}"]
    if snap is not None:
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
    lines += [f"  - {p}" for p in problems]
    return "\n".join(lines)


def as_json(problems: list[str], snap: Snapshot | None) -> str:
    return json.dumps(
        {"ok": not problems, "problems": problems, "snapshot": snap.model_dump() if snap else None}
    )
