"""The gateway's lifecycle: one ``AsyncExitStack`` of parts, one ``TaskGroup`` of loops.

Start order (each an async context manager; a partial start rolls back):
journal → access → devices → door service + visits → MQTT → phone links (loopback TCP,
and the BLE GATT peripheral through BlueZ when ``[phone_link] ble``) → health. A BLE
phone link that cannot start (no BlueZ, no adapter) stops the start with one line and
exit status 69 (``gateway.phone_ble``): it is never silently left off.
READY is sent to systemd only when all are up. SIGTERM: ``gateway.stopping`` is
journaled, open visits are ended honestly, parts close in reverse order — all within
one deadline, :func:`stop_budget` after the signal, that every stage shares (see
:meth:`Gateway.stop_left`): an unlock under way first (lock, journal, answer), then the
visits and ``gateway.stopping``, then the MQTT drain, with the journal's close last.
SIGHUP: config and revocations are re-read without dropping device
or broker connections (issuers, command signers and access settings take effect;
device and MQTT changes need a restart, which the log says).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

import structlog

from gateway.access import AccessController
from gateway.access.state import StateFallback, StateHistory
from gateway.config import Config, DeviceConfig, load_config
from gateway.devices import DeviceManager
from gateway.door import DoorService
from gateway.health import (
    HealthServer,
    HeldExpiry,
    IssuerHealth,
    JournalRestartNotice,
    PhoneBleHealth,
    PhonePressure,
    Snapshot,
    StateNotice,
)
from gateway.journal import Journal, journal_path
from gateway.journal.heads import HeadSigner
from gateway.mqtt import MqttLink
from gateway.mqtt.healing import Kind, RetainedHealer
from gateway.mqtt.homeassistant import HaDevice, discovery_messages, node_id
from gateway.phone_ble import EX_UNAVAILABLE, BluezPhonePeripheral, PhoneBleUnavailable
from gateway.phone_link import PhoneLink
from gateway.relock import unfinished_openings
from gateway.site_keys import SiteKeys, advert_key, b64url, inventory_entry, load_or_create
from gateway.systemd import SdNotifier
from gateway.visits import VisitLimits, VisitTracker
from protocols.errors import ConfigError, JournalError
from protocols.events import (
    ClockUntrustedEvent,
    GatewayEvent,
    HealthEvent,
    RevocationAppliedEvent,
    RosterAppliedEvent,
    SiteKeyCreatedEvent,
    StateFallbackEvent,
)
from protocols.exchange import GatewayExchange
from protocols.health import HealthReason, overall
from protocols.i18n import language
from protocols.journal_head import SignedHead

__all__ = ["STOP_TIMEOUT", "Gateway", "gateway_version", "stop_budget"]

log = structlog.get_logger("lockgw.app")

#: the whole stop, from SIGTERM to exit, at least (see :func:`stop_budget`; systemd's
#: ``TimeoutStopSec`` must exceed the budget, docs/install.md): every stage takes what
#: is left of this one budget
STOP_TIMEOUT = 10.0
#: kept back from the stages before it, for what must still happen after them: the
#: visits' ends and ``gateway.stopping`` journaled, the MQTT goodbye, the journal closed
_AFTER_DOOR = 3.0
#: kept back from the MQTT drain for closing the devices and the journal
_AFTER_MQTT = 1.0

#: what the retained inventory topic carries (CONTRACT §4); live state has its own topic
_INVENTORY_FIELDS = (
    "id", "door", "driver", "kind", "manufacturer", "model", "serial", "firmware", "paired_at",
)


def stop_budget(device_timeout: float) -> float:
    """Seconds from SIGTERM to exit: ``STOP_TIMEOUT``, or longer when the device timeout
    (``[phone_link] device_timeout``) needs it — an unlock under way always gets its
    whole device timeout (and a second for its record), the stages after it their
    reserve."""
    return max(STOP_TIMEOUT, device_timeout + 1.0 + _AFTER_DOOR)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts).timestamp()


async def state_history(journal: Journal) -> StateHistory:
    """What the journal says about the past, for the access state's start-up: is this
    the first start, the newest recorded time, each issuer's last applied revocation
    list and roster, the last alarm. A journal that cannot be read gives the worst case."""
    if journal.error is not None:
        return StateHistory.unknown()
    try:
        newest = await journal.read(newest_first=True, limit=1)
        if not newest:
            return StateHistory()
        oldest = await journal.read(limit=1)
        complete = oldest[0].seq == 1 and await journal.checkpoint() is None
        seqs: dict[str, int] = {}
        roster_seqs: dict[str, int] = {}
        for env in await journal.read(types=["revocation.applied", "roster.applied"]):
            body = env.body
            if isinstance(body, RevocationAppliedEvent):
                seqs[body.iss] = max(seqs.get(body.iss, 0), body.list_seq)
            elif isinstance(body, RosterAppliedEvent):
                roster_seqs[body.iss] = max(roster_seqs.get(body.iss, 0), body.list_seq)
        alarms = await journal.read(
            types=["alarm.raised", "alarm.cleared"], newest_first=True, limit=1
        )
    except JournalError as exc:
        log.error("gateway.history_unreadable", error=str(exc))
        return StateHistory.unknown()
    alarm = (alarms[0].type == "alarm.raised", _epoch(alarms[0].ts)) if alarms else None
    return StateHistory(
        has_events=True,
        complete=complete,
        newest_ts=_epoch(newest[0].ts),
        revocation_seqs=seqs,
        roster_seqs=roster_seqs,
        alarm=alarm,
    )


def _fallback_event(fb: StateFallback) -> StateFallbackEvent:
    return StateFallbackEvent(
        file=fb.file,
        problem=fb.problem,
        fallback=fb.fallback,
        kept_as=fb.kept_as,
        issuers=fb.issuers,
        until=_iso(fb.until) if fb.until is not None else None,
    )


def _site_key_fallbacks(keys: SiteKeys) -> list[StateFallback]:
    """A damaged site key moved aside and made anew, or one made 0600 again, as the state
    fallbacks health shows and the journal records (``gateway.site_keys``)."""
    out = []
    for r in keys.replaced:
        log.error("site.key_replaced", key=r.name, kept_as=str(r.kept_as), problem=r.problem)
        out.append(
            StateFallback(
                file=f"site/{r.name}.key",
                problem="damaged",
                fallback="a new site key was made: the platform must pin its public key "
                "again and carers' phones need new bundles (lockgw site-key show --phone); "
                "until then lockgw-unlock-v2 phones are refused, alarm-centre commands work",
                at=time.time(),
                kept_as=str(r.kept_as),
                detail=r.problem,
            )
        )
    for path in keys.mode_fixed:  # usable: a warning in the log, not a fallback
        log.warning("site.key_mode_fixed", file=str(path), detail="was readable by others")
    return out


def _health_event(kind: Literal["health.warning", "health.cleared"], r: HealthReason) -> HealthEvent:
    return HealthEvent(type=kind, code=r.code, level=r.level, text=r.text, subject=r.subject)


def gateway_version() -> str:
    try:
        return version("lockgw")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


def _freeze_startup_objects() -> None:
    """What start-up built (modules, config, keys, drivers) lives as long as the daemon:
    move it out of the cyclic collector's sight (``gc.freeze``), so that a full
    collection at a busy door walks only what was made since, not everything (such a
    pause measured 17-18 ms right after start, on the 2-core bench machine). The one
    collection here runs before READY, when no phone waits."""
    gc.collect()
    gc.freeze()


class Gateway:
    def __init__(self, config: Config, *, notifier: SdNotifier | None = None) -> None:
        self.config = config
        self.notifier = notifier or SdNotifier()
        self.version = gateway_version()
        self.started_at = time.time()
        self.stop_event = asyncio.Event()
        #: the event loop's time by which everything has stopped (set by the stop request)
        self.stop_by: float | None = None
        self.ready = asyncio.Event()
        self.phone_address: str | None = None
        self.phone_ble: BluezPhonePeripheral | None = None
        self.phone_link: PhoneLink | None = None
        self.web_address: str | None = None
        self.web: Any = None  # gateway.web.WebServer while the page is on
        #: health reasons seen at the last look, and those told as health.warning
        self._health_seen: dict[tuple[str, str | None], HealthReason] = {}
        self._health_told: dict[tuple[str, str | None], HealthReason] = {}

    # -- pieces ----------------------------------------------------------------------------
    def _limits(self, device_id: str) -> VisitLimits:
        v = self.config.visits
        dev: DeviceConfig | None = self.config.device(device_id)
        return VisitLimits(
            no_entry_after=v.no_entry_after,
            relock_after=v.relock_after,
            max_duration=v.max_duration,
            door_left_open_after=dev.door_left_open_after if dev else 300,
            key_not_returned_after=dev.key_not_returned_after if dev else 1800,
        )

    def _snapshot(self) -> Snapshot:
        starting = Snapshot(
            written_at=time.time(),
            interval=self.config.health.interval,
            pid=os.getpid(),
            version=self.version,
            started_at=self.started_at,
            phase="starting",
        )
        if not self.ready.is_set():  # parts are still starting: say so, nothing older
            return starting
        cfg = self.config
        clock = self.access.clock_status()
        issuers = {i.id: i for i in cfg.issuers}
        return Snapshot(
            written_at=starting.written_at,
            interval=starting.interval,
            pid=starting.pid,
            version=starting.version,
            started_at=starting.started_at,
            clock_trusted=clock.trusted,
            time_floor=clock.floor,
            clock_allows=cfg.access.untrusted_clock_allows,
            broker_connected=self.mqtt.connected,
            broker_problem=self.mqtt.config_problem,
            journal_ok=self.journal.error is None,
            journal_failures=self.journal.failures,  # every event that went to the fallback
            last_seq=self.journal.last_seq,
            backlog=self.journal.backlog(),
            devices=self.devices.health(),
            journal_recording=self.journal.recording,
            journal_held=self.journal.held,
            journal_not_durable=self.journal.not_durable,
            journal_problem=self.journal.fallback_problem or self.journal.error,
            journal_restarts=[
                JournalRestartNotice(
                    kind=r["type"],
                    problem=r["problem"],
                    seq=r["seq"],
                    link_seq=r["link_seq"],
                    kept_as=r["kept_as"],
                )
                for r in self.journal.restarts
            ],
            state=[
                StateNotice(
                    file=n.file,
                    problem=n.problem,
                    at=n.at,
                    fallback=n.fallback,
                    in_force=n.in_force,
                    kept_as=n.kept_as,
                    issuers=n.issuers,
                    until=n.until,
                )
                for n in self.access.state_notices()
            ],
            state_write_failures=self.access.state_write_failures,
            timezone=cfg.site.timezone,
            issuers=[
                IssuerHealth(
                    id=r.iss,
                    name=issuers[r.iss].title if r.iss in issuers else r.iss,
                    max_age=r.max_age,
                    seq=r.seq,
                    age=r.age,
                    stale=r.stale,
                    consent_from=issuers[r.iss].consent_from if r.iss in issuers else None,
                    consent_until=issuers[r.iss].consent_until if r.iss in issuers else None,
                    key_valid_until=issuers[r.iss].key_valid_until if r.iss in issuers else None,
                )
                for r in self.access.revocation_status()
            ],
            held_expiring=[
                HeldExpiry(iss=iss, sub=sub, exp=exp)
                for iss, sub, exp in self.access.tokens_expiring(cfg.health.token_warn_hours * 3600)
            ],
            warn_days=cfg.health.warn_days,
            issuers_unavailable=dict(self.access.unavailable),
            signers_unavailable=dict(self.access.unavailable_signers),
            phone_ble=self._phone_ble_health(),
            phone_link_pressure=self._phone_pressure(),
            head_not_signed=self.heads.last_error,
        )

    def _phone_ble_health(self) -> PhoneBleHealth | None:
        if self.phone_ble is None:
            return None
        st = self.phone_ble.status()
        return PhoneBleHealth(
            adapter=st.adapter, up=st.up, problem=st.problem, sessions=st.sessions, served=st.served
        )

    async def _on_health(self, snap: Snapshot, reasons: list[HealthReason]) -> None:
        """Each look at health: the retained status carries it; a reason that appeared
        (seen twice running, so a device still being reached at start is not news) or
        changed level is journaled as ``health.warning``, one gone as ``health.cleared``."""
        if snap.phase != "running" or self.stop_event.is_set():
            return
        self.mqtt.set_health(overall(reasons), reasons)
        now = {r.key: r for r in reasons}
        seen_before, self._health_seen = self._health_seen, now
        news: list[HealthEvent] = []
        for key, r in now.items():
            told = self._health_told.get(key)
            if key in seen_before and (told is None or told.level != r.level):
                self._health_told[key] = r
                news.append(_health_event("health.warning", r))
        for key in [k for k in self._health_told if k not in now]:
            news.append(_health_event("health.cleared", self._health_told.pop(key)))
        for body in news:
            with contextlib.suppress(JournalError):  # said in the log; doors go on
                await self.journal.emit(body)

    def _head_signed(self, head: SignedHead) -> None:
        mqtt: MqttLink | None = getattr(self, "mqtt", None)
        if mqtt is not None:
            mqtt.set_head(head)

    def _phone_pressure(self) -> PhonePressure | None:
        if self.phone_link is None:
            return None
        closed, sources = self.phone_link.pressure()
        if not closed:
            return None
        return PhonePressure(
            closed=closed, sources=sources, interval=self.phone_link.flood_interval
        )

    def _held_list(self, kind: Kind, iss: str) -> tuple[int, bytes] | None:
        if kind == "revocation":
            return self.access.held_revocation(iss)
        return self.access.held_roster(iss)

    async def _device_events(self) -> None:
        async for device_id, state in self.devices.changes():
            await self.door.relocker.on_state(device_id, state)
            await self.visits.on_state(device_id, state)

    def _visit_ended(self, device_id: str, problems: list[str]) -> None:
        if "left_unlocked" in problems:
            self.devices.mark_left_unlocked(device_id)

    async def _publish_devices(self, link: MqttLink, device_ids: Iterable[str]) -> None:
        """The retained state and availability of these devices, as they are now (the link
        sends only what changed, or keeps it for its next connect)."""
        for i in sorted(device_ids):
            await link.publish_device_state(i, self.devices.retained_state(i).model_dump(mode="json"))
            await link.publish_device_availability(
                i, self.devices.availability(i).model_dump(mode="json")
            )

    async def _device_topics(self) -> None:
        """Every change of a device's state, problems or availability, to its retained topics."""
        while True:
            await self._publish_devices(self.mqtt, await self.devices.touched())

    def _inventory(self) -> list[dict[str, object]]:
        items = [{k: item.get(k) for k in _INVENTORY_FIELDS} for item in self.devices.inventory()]
        # the site itself: its public keys (gateway.site_keys), for the platform to pin
        return [*items, inventory_entry(self.config.site.id, self.version, self.site_keys)]

    def _discovery(self) -> dict[str, bytes]:
        """Home Assistant discovery configs (``[mqtt] homeassistant``), from the inventory."""
        if not self.config.mqtt.homeassistant:
            return {}
        devices = []
        for sup in self.devices.supervisors.values():
            info = sup.info
            devices.append(
                HaDevice(
                    id=sup.id,
                    door=sup.cfg.door,
                    kind=sup.kind,
                    capabilities=sup.driver.capabilities,
                    **(info.model_dump() if info is not None else {}),
                )
            )
        return discovery_messages(
            site=self.config.site.id,
            prefix=self.config.mqtt.discovery_prefix,
            version=self.version,
            devices=devices,
        )

    async def _publish_base(self, link: MqttLink) -> None:
        """The installed base and, when enabled, Home Assistant discovery (only changes go
        out: a device's maker, model and firmware are known once it first answered)."""
        await link.publish_inventory(self._inventory())
        for topic, payload in self._discovery().items():
            await link.publish_retained(topic, payload)

    async def _inventory_loop(self) -> None:
        while True:
            await asyncio.sleep(5)
            await self._publish_base(self.mqtt)

    async def _start_web(self, stack: contextlib.AsyncExitStack) -> None:
        """The resident's page. It cannot keep the door from working: a page that cannot
        listen (the port taken, a bad certificate) is logged and the gateway runs on."""
        from gateway.web import WebServer  # aiohttp and Jinja2 only when the page is on

        web = self.config.web
        try:
            server = await stack.enter_async_context(
                WebServer(self.config, self.access, self.devices)
            )
        except (OSError, ValueError) as exc:
            log.error("web.cannot_listen", address=f"{web.address}:{web.port}", error=str(exc))
            return
        self.web = server
        self.web_address = server.address

    async def _clock_check(self) -> None:
        was_trusted = True
        while True:
            status = self.access.clock_status()
            if not status.trusted and was_trusted:
                with contextlib.suppress(JournalError):
                    await self.journal.emit(
                        ClockUntrustedEvent(
                            now=_iso(status.now), floor=_iso(status.floor), detail=status.detail
                        )
                    )
            was_trusted = status.trusted
            # the floor's file and its fsync: off the loop, off the door's path
            await asyncio.to_thread(self.access.persist_time_floor)
            await asyncio.sleep(10)

    # -- lifecycle -------------------------------------------------------------------------
    def request_stop(self) -> None:
        """SIGTERM/SIGINT: stop, all of it within :func:`stop_budget` from now (a second
        signal does not move the deadline)."""
        if self.stop_by is None:
            self.stop_by = asyncio.get_running_loop().time() + stop_budget(self.config.phone_link.device_timeout)
        self.stop_event.set()

    def stop_left(self, reserve: float = 0.0) -> float:
        """Seconds a stop stage may take: what is left of the one stop deadline, less
        ``reserve`` for the stages after it (never negative)."""
        if self.stop_by is None:
            return max(0.0, stop_budget(self.config.phone_link.device_timeout) - reserve)
        return max(0.0, self.stop_by - asyncio.get_running_loop().time() - reserve)

    def request_reload(self) -> None:
        if not self.ready.is_set():  # SIGHUP while starting: send it again once ready
            log.info("reload.ignored", detail="still starting")
            return
        self.notifier.reloading()
        try:
            new = load_config(self.config.source) if self.config.source else self.config
        except ConfigError as exc:
            log.error("reload.refused", problems=exc.problems)
            self.notifier.ready("reload refused: config has problems")
            return
        if new.devices != self.config.devices or new.mqtt != self.config.mqtt:
            log.warning("reload.partial", detail="device and MQTT changes take effect on restart")
        self.config = new
        self.access.reload(new)
        self.door.config = new  # device timeout, suspicious window
        self.door.exchange.accept_v1 = new.phone_link.accept_v1
        if self.phone_ble is not None:  # the v1 service and name come and go with it
            self.phone_ble.spawn(self.phone_ble.set_legacy(new.phone_link.accept_v1))
        if self.web is not None:  # names of organisations, language, max_people
            self.web.config = new
        self.notifier.ready("reloaded")
        log.info("reload.done")

    async def run(self) -> None:
        cfg = self.config
        data_dir: Path = cfg.site.data_dir
        await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True, mode=0o700)
        async with contextlib.AsyncExitStack() as stack:
            # first: from now on health tells this process's state ("starting" until
            # ready), never the last one's
            self.health = await stack.enter_async_context(
                HealthServer(
                    data_dir,
                    self._snapshot,
                    interval=cfg.health.interval,
                    metrics=cfg.health.metrics,
                    lang=language(cfg.site.language),
                    on_look=self._on_health,
                )
            )
            self.journal = await stack.enter_async_context(
                Journal(
                    journal_path(data_dir),
                    cfg.site.id,
                    retention_days=cfg.journal.retention_days,
                    max_bytes=cfg.journal.max_bytes,
                    writer_nice=cfg.journal.writer_nice,
                    # only what the head file does not vouch for before READY: a start
                    # that does not grow with the journal's age; the full check after
                    # (bench/journal_start.py, docs/audit.md)
                    startup_check="tail",
                )
            )
            # the site's own keys: made on the first start; a damaged one is moved aside and
            # made anew (never a reason to stop: the alarm centre's commands need no key)
            self.site_keys: SiteKeys = await asyncio.to_thread(load_or_create, data_dir)
            # the journal's head, signed with the site key: beside the journal and on status
            self.heads = HeadSigner(
                self.journal,
                cfg.site.id,
                self.site_keys.sign.private,
                interval=cfg.journal.head_interval,
                on_signed=self._head_signed,
            )
            self.access = AccessController(cfg, history=await state_history(self.journal))
            self.access.fallbacks += _site_key_fallbacks(self.site_keys)
            self.visits = VisitTracker(
                self.journal, limits=self._limits, on_ended=self._visit_ended
            )
            self.devices = await stack.enter_async_context(
                DeviceManager.from_config(cfg, self.journal)
            )
            self.door = DoorService(
                cfg,
                self.access,
                self.devices,
                self.journal,
                self.visits,
                exchange=GatewayExchange(
                    cfg.site.id,
                    self.site_keys.sign.private,
                    self.site_keys.exchange.private,
                    accept_v1=cfg.phone_link.accept_v1,
                ),
            )
            mqtt_link = MqttLink(
                cfg.mqtt,
                cfg.site.id,
                self.journal,
                version=self.version,
                on_command=self.door.run_command,
                screen_command=self.door.screen_command,
                on_dropped=self.door.command_dropped,
                on_revocation=self.door.on_revocation,
                on_credential=self.door.on_credential,
                on_roster=self.door.on_roster,
                owned=(
                    f"{cfg.mqtt.discovery_prefix}/+/{node_id(cfg.site.id)}/+/config"
                    if cfg.mqtt.homeassistant
                    else None
                ),
                problems=cfg.broker_problems,
            )
            self.door.healer = await stack.enter_async_context(
                RetainedHealer(cfg.site.id, mqtt_link.publish_once, self.journal, self._held_list)
            )
            # retained truth from the first connect on: the installed base, HA discovery
            # (when enabled), and every configured device's state (its last known, or
            # unknown) and availability
            await self._publish_base(mqtt_link)
            await self._publish_devices(mqtt_link, self.devices.supervisors)
            self.mqtt = await stack.enter_async_context(mqtt_link)
            if cfg.phone_link.loopback:
                link = await stack.enter_async_context(
                    PhoneLink(
                        self.door,
                        cfg.phone_link.loopback,
                        step_timeout=cfg.phone_link.step_timeout,
                        max_pending=cfg.phone_link.max_pending,
                        max_pending_per_source=cfg.phone_link.max_pending_per_source,
                        max_connections=cfg.phone_link.max_connections,
                        flood_interval=cfg.phone_link.flood_interval,
                        on_flood=self.door.link_flood,
                    )
                )
                self.phone_link = link
                self.phone_address = link.address
            if cfg.phone_link.ble:
                self.phone_ble = await stack.enter_async_context(
                    BluezPhonePeripheral(
                        self.door,
                        advert_key=advert_key(cfg.site.id, self.site_keys),
                        adapter=cfg.bluetooth.adapter,
                        step_timeout=cfg.phone_link.step_timeout,
                        legacy=cfg.phone_link.accept_v1,
                    )
                )
            if cfg.web.enabled:
                await self._start_web(stack)
            await self.journal.emit(GatewayEvent(type="gateway.started", version=self.version))
            for fb in self.access.fallbacks:  # said once, durably: the platform hears it too
                with contextlib.suppress(JournalError):
                    await self.journal.emit(_fallback_event(fb))
            for key in self.site_keys.created:
                log.info("site.key_created", key=key.name, kid=key.kid, file=str(key.path))
                with contextlib.suppress(JournalError):
                    await self.journal.emit(
                        SiteKeyCreatedEvent(
                            key=key.name, algorithm=key.algorithm, kid=key.kid,
                            public=b64url(key.public),
                        )
                    )
            # openings the last run left waiting for their relock (a stop, a crash): the
            # journal says which; each is picked up where it was (gateway.relock)
            for left in await unfinished_openings(self.journal):
                self.door.relocker.resume(left)
            await self.heads.start()  # a first head right away (the previous run's too)
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(self.heads.run()),
                    tg.create_task(self.visits.run()),
                    tg.create_task(self.door.flood_loop()),
                    tg.create_task(self.door.refusal_loop()),
                    tg.create_task(self._device_events()),
                    tg.create_task(self._device_topics()),
                    tg.create_task(self._inventory_loop()),
                    tg.create_task(self._clock_check()),
                    tg.create_task(self.notifier.watchdog_loop()),
                ]
                _freeze_startup_objects()
                ble = f", BLE on {cfg.bluetooth.adapter}" if self.phone_ble is not None else ""
                self.notifier.ready(
                    f"ready: {len(cfg.devices)} device(s), phone link "
                    f"{self.phone_address or 'off'}{ble}"
                )
                self.ready.set()
                try:  # "starting" no more
                    self.health.write_now()
                except OSError as exc:
                    log.error("health.write_failed", error=str(exc))
                log.info(
                    "gateway.ready",
                    site=cfg.site.id,
                    phone_link=self.phone_address,
                    phone_ble=cfg.bluetooth.adapter if self.phone_ble is not None else None,
                )
                # the journal's full check, now that no phone waits for it (a process
                # of its own; what it finds is handled and said like a damage at start)
                self.journal.start_background_check()
                await self.stop_event.wait()
                self.request_stop()  # the deadline, when the event was set directly
                assert self.stop_by is not None
                self.mqtt.stop_by = self.stop_by - _AFTER_MQTT
                self.notifier.stopping()
                log.info("gateway.stopping", budget=round(self.stop_left(), 1))
                # an unlock under way finishes (lock, journal, answer) before the rest
                # stops: it has the device timeout, or what the deadline leaves it
                await self.door.close(
                    min(cfg.phone_link.device_timeout + 1.0, self.stop_left(_AFTER_DOOR))
                )
                for t in tasks:
                    t.cancel()
            await self._stop()

    async def _stop(self) -> None:
        try:
            self.access.flush()  # the time floor and anything else not yet on disk
        except OSError as exc:
            log.error("gateway.flush_failed", error=str(exc))
        try:
            async with asyncio.timeout(self.stop_left(_AFTER_MQTT)):
                await self.visits.close()
                await self.journal.emit(GatewayEvent(type="gateway.stopping", version=self.version))
                # the last head covers gateway.stopping; status carries it out before offline
                await self.heads.sign_now()
        except (TimeoutError, JournalError) as exc:
            log.error("gateway.stop_incomplete", error=type(exc).__name__)


async def serve(config: Config | str | Path) -> int:
    """``lockgw run``: run until SIGTERM/SIGINT, reload on SIGHUP. Every file the daemon
    creates is the owner's only (umask 077)."""
    os.umask(0o077)
    cfg = config if isinstance(config, Config) else load_config(config)
    gw = Gateway(cfg)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, gw.request_stop)
    loop.add_signal_handler(signal.SIGHUP, gw.request_reload)
    try:
        async with asyncio.timeout(None) as deadline:
            runner = asyncio.create_task(gw.run())
            stop_waiter = asyncio.create_task(gw.stop_event.wait())
            await asyncio.wait({runner, stop_waiter}, return_when=asyncio.FIRST_COMPLETED)
            if not runner.done():  # the backstop: the stages keep within it themselves
                gw.request_stop()
                assert gw.stop_by is not None
                deadline.reschedule(gw.stop_by)
            await runner
            stop_waiter.cancel()
    except TimeoutError:
        log.error("gateway.stop_timeout", seconds=stop_budget(gw.config.phone_link.device_timeout))
        return 1
    except Exception as exc:  # a part that could not start or failed: one line, exit 1
        what = _describe(exc)
        log.error("gateway.failed", error=what, ready=gw.ready.is_set())
        log.debug("gateway.failed_trace", exc_info=exc)
        print(f"lockgw run: stopped: {what}", file=sys.stderr)
        # the BlueZ it was told to use is missing: systemd may retry (a dongle plugged
        # in late, bluetoothd started after lockgw)
        return EX_UNAVAILABLE if isinstance(exc, PhoneBleUnavailable) else 1
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
    return 0


def _describe(exc: BaseException) -> str:
    """One line for a failure, the errors inside a TaskGroup's group included."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return " ".join(str(exc).split()) or type(exc).__name__
