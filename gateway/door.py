"""Decision → device → answer: what happens at the door, for phones and for signed commands.

The phone hears ``granted`` only after the device confirmed; a device that does not
answer within ``phone_link.device_timeout`` (default 5 s) gives ``device_unavailable``,
one that answers "no" (jammed, refused) ``device_failed``. Every attempt — granted,
denied, malformed, failed — is journaled (and so published) with all CONTRACT fields,
and repeated denials at a door raise ``access.suspicious``. Malformed attempts are
aggregated so that a flood of garbage cannot fill the disk: one row per source per
``phone_link.flood_interval`` with a ``count`` (:meth:`DoorService.malformed`).

Every attempt leaves a durable record, whatever the journal does. When it cannot write
(a full disk or ``journal.max_bytes``, a damaged file, its writer process restarting),
the event goes to the journal's fallback file beside it and is journaled and published
later, in order, with the ``event`` id the phone heard (``gateway.journal``); health
and the MQTT ``status`` topic (``journal: fallback``) say so meanwhile. If even that
file cannot be written, the door still opens for a valid token — care safety first —
and the event is kept in memory and written in full to the system log; health says
"NOTHING IS RECORDED" and ``status`` says ``journal: unrecorded`` at once. It is
journaled if the gateway runs until the journal recovers, and lost if it stops first.

Once the proof is in, an attempt (and a signed remote opening) runs to its end even if
the phone goes away or SIGTERM arrives: the daemon waits for it (:meth:`DoorService.close`).
A lock that acts after the door gave up on it (the phone heard ``device_unavailable``)
is journaled as ``device.late_answer`` of that attempt and locked again; a granted
unlock nobody used (no door opened within ``[access] relock_unused_after``) is locked
again too; when that fails, ``door.left_unlocked`` (``gateway.relock``). Such an opening
still waiting when the gateway stops or crashes is found in the journal at the next
start and relocked then (``why: not_opened_before_restart``).

A crash between the device moving and the journal commit leaves no ``access.granted``
row; the phone never heard ``granted`` either (no phantom grant), and the device's
state change is journaled after the restart by state reconciliation (``lock.state``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from gateway.access import AccessController, AccessRequest, Decision
from gateway.floods import OTHER, source_of
from gateway.logs import redact
from gateway.relock import Opening, Relocker
from gateway.visits import VisitTracker
from protocols.control import Command, RosterEntry
from protocols.device import Action, DeviceKind, DeviceState
from protocols.errors import ControlMessageError, DeviceError, JournalError, ProtocolError, Reason
from protocols.events import (
    AccessDecisionEvent,
    AlarmEvent,
    Channel,
    CommandResultEvent,
    EventBody,
    RevocationAppliedEvent,
    RosterAppliedEvent,
    RosterOverLimitEvent,
    RosterPerson,
    SuspiciousEvent,
)
from protocols.exchange import GatewayExchange
from protocols.phone import Challenge, Hello, Proof, Result

if TYPE_CHECKING:
    from gateway.config import Config
    from gateway.devices import DeviceManager
    from gateway.events import EventSink
    from gateway.mqtt.healing import RetainedHealer

__all__ = ["DoorService"]

T = TypeVar("T")

#: sources whose malformed attempts are counted by name in one interval (the rest: "other")
MAX_SOURCES = 64
#: refused commands journaled one by one per interval; beyond, counted per reason
REFUSALS_PER_INTERVAL = 100

log = structlog.get_logger("lockgw.door")


@dataclass
class _Timing:
    """Seconds spent deciding, waiting for the device, and journaling one attempt."""

    decide: float = 0.0
    device: float = 0.0
    journal: float = 0.0


class DoorService:
    """Implements :class:`gateway.phone_link.DoorHandler` and the MQTT inbound handlers."""

    def __init__(
        self,
        config: Config,
        access: AccessController,
        devices: DeviceManager,
        sink: EventSink,
        visits: VisitTracker,
        *,
        exchange: GatewayExchange,
    ) -> None:
        self.config = config
        #: the site's keys for lockgw-unlock-v2 (``gateway/site_keys.py``)
        self.exchange = exchange
        self.site = config.site.id
        self.access = access
        self.devices = devices
        self.sink = sink
        self.visits = visits
        #: attempts past the proof: they run to their end (device, journal) even when the
        #: phone's connection goes or the daemon is stopping (see :meth:`close`)
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._closing = False
        #: malformed phone attempts, per source: the row that opened the source's series,
        #: and how many came since the last flush (and at which door: "unknown" if several)
        self._series: dict[str, asyncio.Future[str]] = {}
        #: command refusals and drops waiting to be journaled, refusals still journaled one
        #: by one in this interval, and those counted beyond (per reason)
        self._to_journal: deque[CommandResultEvent] = deque()
        self._refusals_waiting = asyncio.Event()
        self._refusal_budget = REFUSALS_PER_INTERVAL
        self._refused_more: dict[str, int] = {}
        self._more: dict[str, int] = {}
        self._more_door: dict[str, str] = {}
        #: puts an issuer's newest list back on the broker when its retained copy is
        #: replaced by an older or unusable one (set by the app once the link exists)
        self.healer: RetainedHealer | None = None
        #: locks again what a late device answer or an unused opening left unlocked
        self.relocker = Relocker(
            devices,
            self._emit,
            self._spawn,
            unused_after=lambda: float(self.config.access.relock_unused_after),
        )

    # -- journal ---------------------------------------------------------------------------
    async def _emit(self, body: EventBody) -> str:
        try:
            env = await self.sink.emit(body)
        except JournalError as exc:  # the journal is closed: only when stopping went wrong
            local = f"unjournaled-{uuid.uuid4()}"
            # the whole body: who, which door, what happened (structlog reserves ``event``)
            log.error(
                "door.unjournaled",
                body=body.model_dump(mode="json"),
                local_id=local,
                error=str(exc),
            )
            return local
        return env.id

    # -- phone link ------------------------------------------------------------------------
    async def flush_malformed(self) -> None:
        """One row per source for the malformed attempts counted since the last flush
        (``count`` = how many). A source with none since then ends its series: its next
        malformed attempt opens a new one with a row at once."""
        more, doors = self._more, self._more_door
        self._more, self._more_door = {}, {}
        for key in [k for k in self._series if k not in more and self._series[k].done()]:
            del self._series[key]
        for key, n in more.items():
            await self._emit(
                AccessDecisionEvent(
                    type="access.denied",
                    door=doors.get(key, "unknown"),
                    action="unknown",
                    channel=Channel.PHONE,
                    reason=Reason.MALFORMED.value,
                    count=n,
                    source=key,
                )
            )
        if more:
            log.warning("door.malformed_flood", sources=len(more), attempts=sum(more.values()))

    async def flood_loop(self) -> None:
        """Flushes the malformed counts every ``phone_link.flood_interval`` seconds."""
        while True:
            await asyncio.sleep(self.config.phone_link.flood_interval)
            await self.flush_malformed()
            await self._flush_refusals()

    async def link_flood(self, source: str, closed: int, interval: float) -> None:
        """The phone link closed ``closed`` pending connections from ``source`` to make
        room for others within ``interval`` seconds: one ``access.suspicious`` row."""
        await self._emit(
            SuspiciousEvent(door=None, count=closed, window=round(interval), source=source)
        )

    def challenge(self) -> Challenge:
        return Challenge(nonce=self.access.new_challenge(), site=self.site)

    async def malformed(self, peer: str, door: str | None, detail: str) -> Result:
        """Answer ``malformed``; journal it aggregated (see :meth:`flush_malformed`): the
        first from a source opens a series with a row of its own (count 1) and the result
        names that row; later ones in the series are counted, not journaled one by one."""
        at = door or "unknown"
        # counted like any denial: garbage sent at a door is an attack on it too
        denials, suspicious = self.access.record_malformed(peer, at)
        source = source_of(peer)
        key = source if source in self._series or len(self._series) < MAX_SOURCES else OTHER
        opened = self._series.get(key)
        if opened is None:
            log.info("door.malformed", peer=peer, detail=detail)
            fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            self._series[key] = fut
            event = ""
            try:
                event = await self._emit(
                    AccessDecisionEvent(
                        type="access.denied",
                        door=at,
                        action="unknown",
                        channel=Channel.PHONE,
                        reason=Reason.MALFORMED.value,
                        count=1,
                        source=key,
                    )
                )
            finally:
                fut.set_result(event)
        else:
            log.debug("door.malformed", peer=peer, detail=detail)
            self._more[key] = self._more.get(key, 0) + 1
            seen = self._more_door.setdefault(key, at)
            if seen != at:
                self._more_door[key] = "unknown"
            event = await asyncio.shield(opened)
        if suspicious:
            await self._emit(
                SuspiciousEvent(door=at, count=denials, window=self.config.access.suspicious_window)
            )
        return Result(granted=False, reason=Reason.MALFORMED.value, event=event)

    async def attempt(
        self,
        hello: Hello,
        challenge: Challenge,
        proof: Proof,
        peer: str,
        *,
        binding: tuple[bytes, bytes] | None = None,
    ) -> Result:
        """Decide, open, journal, answer. Once begun, an attempt is not cut short by its
        connection closing or by SIGTERM: a lock that moved is always journaled."""
        if self._closing:
            event = await self._emit(
                AccessDecisionEvent(
                    type="access.denied",
                    door=hello.door,
                    action=hello.action,
                    channel=Channel.PHONE,
                    reason=Reason.DEVICE_UNAVAILABLE.value,
                )
            )
            log.info("door.stopping_refused", door=hello.door, peer=peer)
            return Result(granted=False, reason=Reason.DEVICE_UNAVAILABLE.value, event=event)
        return await self._to_the_end(self._attempt(hello, challenge, proof, peer, binding))

    async def _to_the_end(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` as its own task that its caller's cancellation does not reach,
        counted for :meth:`close`."""
        task = asyncio.create_task(work)
        self._in_flight.add(task)
        task.add_done_callback(self._work_done)
        return await asyncio.shield(task)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` as door work nobody waits for (a relock), counted for :meth:`close`."""
        task = asyncio.create_task(work)
        self._in_flight.add(task)
        task.add_done_callback(self._work_done)

    def _work_done(self, task: asyncio.Task[Any]) -> None:
        self._in_flight.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("door.failed", task=task.get_name(), error=repr(exc))

    async def close(self, timeout: float) -> int:
        """Stopping: refuse new attempts (``device_unavailable``) and wait up to ``timeout``
        seconds for those in flight to finish. Returns how many did not finish in time."""
        self._closing = True
        self.relocker.close()
        late: set[asyncio.Task[Any]] = set()
        pending = set(self._in_flight)
        if pending:
            log.info("door.settling", attempts=len(pending))
            _, late = await asyncio.wait(pending, timeout=timeout)
            if late:
                log.error("door.attempts_unfinished", attempts=len(late))
        await self.flush_malformed()  # the malformed attempts counted so far are journaled
        await self.journal_refusals()
        await self._flush_refusals()
        return len(late)

    async def _attempt(
        self,
        hello: Hello,
        challenge: Challenge,
        proof: Proof,
        peer: str,
        binding: tuple[bytes, bytes] | None,
    ) -> Result:
        t0 = time.perf_counter()
        decision = self.access.decide(
            AccessRequest(
                token=hello.token,
                token_ref=hello.token_ref,
                door=hello.door,
                action=hello.action,
                nonce=challenge.nonce,
                proof=proof.sig,
                peer=peer,
                binding=binding,
            )
        )
        timing = _Timing(decide=time.perf_counter() - t0)
        reason, event = await self._carry_out(
            decision, hello.door, Action(hello.action), Channel.PHONE, timing=timing
        )
        # the gateway's own share (decision + journal) beside the device's, for bench/unlock_latency.py
        log.info(
            "door.attempt",
            door=hello.door,
            action=hello.action,
            reason=reason.value,
            decide_ms=round(timing.decide * 1000, 3),
            device_ms=round(timing.device * 1000, 3),
            journal_ms=round(timing.journal * 1000, 3),
        )
        return Result(granted=reason is Reason.OK, reason=reason.value, event=event)

    async def _carry_out(
        self,
        decision: Decision,
        door: str,
        action: Action,
        channel: Channel,
        *,
        actor: str | None = None,
        request_id: str | None = None,
        timing: _Timing | None = None,
    ) -> tuple[Reason, str]:
        timing = timing or _Timing()
        reason = decision.reason
        state: DeviceState | None = None
        try:
            device_id: str | None = self.devices.device_for(door, action)
        except DeviceError as exc:  # no device at that door can do it: say so, never hang
            device_id = None
            if decision.granted:
                reason = exc.reason
                log.warning("door.no_device", door=door, action=action.value, detail=str(exc))
        # from the command going out until the relocker has heard its outcome, an unlock
        # the lock reports is this command's (gateway.relock.Relocker.sending)
        with contextlib.ExitStack() as in_flight:
            # the lock as the command found it, and when (gateway.relock: late answers)
            lock_before, sent_at = None, 0.0
            if decision.granted and device_id is not None:
                sup = self.devices.supervisors.get(device_id)
                lock_before = sup.state.lock if sup is not None and sup.state is not None else None
                sent_at = time.monotonic()
                t_dev = time.perf_counter()
                in_flight.enter_context(self.relocker.sending(device_id))
                try:
                    async with asyncio.timeout(self.config.phone_link.device_timeout):
                        state = await self.devices.execute(door, action)
                except DeviceError as exc:
                    reason = exc.reason
                    log.warning("door.device_error", device=device_id, error=str(exc))
                except TimeoutError:
                    reason = Reason.DEVICE_UNAVAILABLE
                    log.warning("door.device_timeout", device=device_id, action=action.value)
                timing.device = time.perf_counter() - t_dev
            granted = reason is Reason.OK
            t_journal = time.perf_counter()
            event = await self._emit(
                AccessDecisionEvent(
                    type="access.granted" if granted else "access.denied",
                    door=door,
                    device=device_id,
                    iss=decision.iss,
                    sub=decision.sub,
                    role=decision.role,
                    purpose=decision.purpose,  # type: ignore[arg-type]
                    action=action.value,
                    token_id=decision.token_id,
                    channel=channel,
                    reason=reason.value,
                    emergency_outside_window=decision.emergency_outside_window,
                    actor=actor,
                    request_id=request_id,
                    not_on_roster=decision.not_on_roster,
                )
            )
            timing.journal = time.perf_counter() - t_journal
            if device_id is not None and action in (Action.UNLOCK, Action.UNLATCH):
                opening = Opening(
                    attempt=event,
                    door=door,
                    device=device_id,
                    action=action.value,
                    at=time.monotonic(),
                    iss=decision.iss,
                    sub=decision.sub,
                    actor=actor,
                    request_id=request_id,
                )
                if granted:  # locked again if nobody opens the door
                    self.relocker.granted(opening)
                elif decision.granted and reason is Reason.DEVICE_UNAVAILABLE:
                    # the phone heard "no": should the lock still act, it is locked again
                    self.relocker.gave_up(opening, lock_before, sent_at)
        if granted and device_id is not None:
            kind = DeviceKind.KEYSAFE if action is Action.OPEN else DeviceKind.LOCK
            await self.visits.start(
                visit_id=event,
                door=door,
                device=device_id,
                kind=kind,
                iss=decision.iss,
                sub=decision.sub,
                role=decision.role,
                purpose=decision.purpose,
                state=state,
            )
        if decision.suspicious:
            await self._emit(
                SuspiciousEvent(
                    door=door,
                    count=decision.denials,
                    window=self.config.access.suspicious_window,
                )
            )
        return reason, event

    # -- MQTT inbound ----------------------------------------------------------------------
    async def on_command(self, raw: bytes) -> None:
        """A signed command from the alarm centre or the platform (CONTRACT §5), verified
        and carried out; the daemon splits the two (:meth:`screen_command` on arrival,
        :meth:`run_command` from the queue)."""
        screened = self.screen_command(raw)
        await self.journal_refusals()
        if screened is not None:
            await self.run_command(screened[0])

    def screen_command(self, raw: bytes) -> tuple[Command] | None:
        """On arrival, before any queue: verify the signature, site, expiry and request id
        (spending it). A command that passes is returned to be queued; one that does not is
        refused: its ``command.result`` is journaled by :meth:`refusal_loop` — one row each
        for the first ``REFUSALS_PER_INTERVAL`` in a ``phone_link.flood_interval``, then
        one row per reason per interval with a ``count``, so garbage cannot fill the disk."""
        try:
            return (self.access.verify_command(raw),)
        except ControlMessageError as exc:
            if self._refusal_budget <= 0:
                reason = exc.reason.value
                self._refused_more[reason] = self._refused_more.get(reason, 0) + 1
                return None
            self._refusal_budget -= 1
            log.warning("door.command_refused", reason=exc.reason.value, detail=exc.detail)
            try:  # name the request in the answer when it can be read at all
                claimed: Command | None = Command.decode(raw)
            except ControlMessageError:
                claimed = None
            self._to_journal.append(
                CommandResultEvent(
                    request_id=claimed.request_id if claimed else None,
                    cmd=claimed.cmd if claimed else None,
                    ok=False,
                    reason=exc.reason.value,
                    actor=claimed.actor if claimed else None,
                    door=claimed.door if claimed else None,
                )
            )
            self._refusals_waiting.set()
            return None

    def command_dropped(self, kind: str, args: tuple[Any, ...]) -> None:
        """A verified command found the inbound queue full: it is not carried out, and its
        ``command.result`` (``rate_limited``, with its request id: send a new command)
        is journaled, whatever the refusal budget."""
        (cmd,) = args
        assert isinstance(cmd, Command)
        log.error("door.command_dropped", request_id=cmd.request_id, cmd=cmd.cmd, kind=kind)
        self._to_journal.append(
            CommandResultEvent(
                request_id=cmd.request_id,
                cmd=cmd.cmd,
                ok=False,
                reason=Reason.RATE_LIMITED.value,
                actor=cmd.actor,
                door=cmd.door,
            )
        )
        self._refusals_waiting.set()

    async def journal_refusals(self) -> None:
        """Journal the command refusals and drops waiting since the last call."""
        self._refusals_waiting.clear()
        while self._to_journal:
            await self._emit(self._to_journal.popleft())

    async def refusal_loop(self) -> None:
        while True:
            await self._refusals_waiting.wait()
            await self.journal_refusals()

    async def _flush_refusals(self) -> None:
        """The refusals counted over the budget since the last flush: a row per reason."""
        more, self._refused_more = self._refused_more, {}
        self._refusal_budget = REFUSALS_PER_INTERVAL
        for reason, n in sorted(more.items()):
            await self._emit(
                CommandResultEvent(request_id=None, cmd=None, ok=False, reason=reason, count=n)
            )
        if more:
            log.warning("door.command_flood", refused=sum(more.values()))

    async def run_command(self, cmd: Command) -> None:
        """Carry out a verified command; like a phone's attempt, it runs to its end once
        begun (see :meth:`attempt`)."""
        await self._to_the_end(self._run_command(cmd))

    async def _run_command(self, cmd: Command) -> None:
        if cmd.cmd == "alarm":
            raised = cmd.state == "raised"
            self.access.set_alarm(raised)
            await self._emit(
                AlarmEvent(
                    type="alarm.raised" if raised else "alarm.cleared",
                    actor=cmd.actor,
                    request_id=cmd.request_id,
                    reason=cmd.reason,
                )
            )
            ok, reason = True, Reason.OK
        elif cmd.cmd == "refresh":
            ok, reason = await self._refresh(cmd.door)
        elif cmd.door is None:
            ok, reason = False, Reason.MALFORMED  # an opening command must name its door
        elif self._closing:
            ok, reason = False, Reason.DEVICE_UNAVAILABLE  # stopping: no door opens now
        else:
            decision = Decision.for_command(cmd)
            reason, _ = await self._carry_out(
                decision,
                cmd.door,
                Action(cmd.cmd),
                Channel.COMMAND,
                actor=cmd.actor,
                request_id=cmd.request_id,
            )
            ok = reason is Reason.OK
        await self._emit(
            CommandResultEvent(
                request_id=cmd.request_id,
                cmd=cmd.cmd,
                ok=ok,
                reason=reason.value,
                actor=cmd.actor,
                door=cmd.door,
            )
        )

    async def _refresh(self, door: str | None) -> tuple[bool, Reason]:
        """Ask the devices at ``door`` (every door when None) for their state now."""
        doors = [door] if door else sorted({d.door for d in self.config.devices})
        for d in doors:
            try:
                await self.devices.refresh(d)
            except DeviceError as exc:
                return False, exc.reason
        return True, Reason.OK

    async def on_revocation(self, issuer: str, raw: bytes) -> None:
        """A retained revocation list from ``lockgw/v1/org/<issuer>/revocations`` (empty:
        the retained copy was cleared). Whatever leaves that topic without the issuer's
        newest list held here is put right (``gateway.mqtt.healing``)."""
        healer = self.healer
        if not raw:
            if healer is not None:
                healer.replaced("revocation", issuer, "cleared")
            return
        outcome = self.access.apply_revocation(raw)
        if outcome.status == "refused":
            log.warning(
                "door.revocation_refused",
                topic_issuer=issuer,
                reason=outcome.reason.value if outcome.reason else None,
                detail=outcome.detail,
            )
            if healer is not None:
                healer.replaced("revocation", issuer, "invalid", outcome.seq)
            return
        if outcome.issuer != issuer:
            # verified against the key of the issuer it names: the topic is only a hint
            log.warning("door.revocation_topic_mismatch", topic_issuer=issuer, iss=outcome.issuer)
            if healer is not None:
                healer.replaced("revocation", issuer, "other_issuer", outcome.seq)
        elif healer is not None:
            if _older(outcome.seq, outcome.held_seq):
                healer.replaced("revocation", issuer, "older", outcome.seq)
            else:
                healer.current("revocation", issuer)
        if outcome.status == "applied" and outcome.issuer is not None and outcome.seq is not None:
            await self._emit(
                RevocationAppliedEvent(
                    iss=outcome.issuer,
                    list_seq=outcome.seq,
                    cti_count=outcome.cti_count,
                    sub_count=outcome.sub_count,
                )
            )
        else:
            log.info(
                "door.revocation_ignored",
                issuer=outcome.issuer,
                seq=outcome.seq,
                held_seq=outcome.held_seq,
            )

    async def on_roster(self, issuer: str, raw: bytes) -> None:
        """A retained roster from ``lockgw/v1/org/<issuer>/rosters/<site>``: who that
        issuer authorises here. Journaled (who was added, who removed) when applied; its
        retained copy is put right like a revocation list's (:meth:`on_revocation`)."""
        healer = self.healer
        if not raw:
            if healer is not None:
                healer.replaced("roster", issuer, "cleared")
            return
        outcome = self.access.apply_roster(raw)
        if outcome.status == "refused":
            log.warning(
                "door.roster_refused",
                topic_issuer=issuer,
                reason=outcome.reason.value if outcome.reason else None,
                detail=outcome.detail,
            )
            if healer is not None:
                healer.replaced("roster", issuer, "invalid", outcome.seq)
            return
        if outcome.issuer != issuer:
            log.warning("door.roster_topic_mismatch", topic_issuer=issuer, iss=outcome.issuer)
            if healer is not None:
                healer.replaced("roster", issuer, "other_issuer", outcome.seq)
        elif healer is not None:
            if _older(outcome.seq, outcome.held_seq):
                healer.replaced("roster", issuer, "older", outcome.seq)
            else:
                healer.current("roster", issuer)
        if outcome.status != "applied" or outcome.issuer is None or outcome.seq is None:
            log.info(
                "door.roster_ignored", issuer=outcome.issuer, seq=outcome.seq, held_seq=outcome.held_seq
            )
            return

        def people(entries: tuple[RosterEntry, ...]) -> list[RosterPerson]:
            return [RosterPerson(sub=e.sub, role=e.role) for e in entries]

        await self._emit(
            RosterAppliedEvent(
                iss=outcome.issuer,
                list_seq=outcome.seq,
                people=outcome.people,
                added=people(outcome.added),
                removed=people(outcome.removed),
                changed=people(outcome.changed),
            )
        )
        limit = self.config.site.max_people
        if limit is not None and outcome.site_people > limit:
            await self._emit(RosterOverLimitEvent(people=outcome.site_people, limit=limit))

    async def on_credential(self, raw: bytes) -> None:
        """A token pushed for the gateway to hold (a phone then presents its ``cti``)."""
        try:
            claims = self.access.hold_token(raw)
        except ProtocolError as exc:
            log.warning("door.credential_refused", reason=exc.reason.value)
            return
        log.info("door.credential_held", token_id=redact(claims.cti), iss=claims.iss)


def _older(seq: int | None, held_seq: int | None) -> bool:
    """A list with ``seq`` is older than the one held (rollback refused, to be put right)."""
    return seq is not None and held_seq is not None and seq < held_seq
