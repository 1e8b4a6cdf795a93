"""Judging a :class:`Snapshot`: every :class:`HealthReason` it gives, in words.

Each check is a function ``(snapshot, look) -> reasons`` in :data:`CHECKS`; a new
condition (another part of the gateway that can go wrong) adds a field to the snapshot
and a check here, with its code in docs/install.md. The level follows one rule
(:mod:`protocols.health`): ``warning`` before anything is refused, ``degraded`` when
planned care is refused for a reason the site can fix, ``unhealthy`` when a door cannot
be opened.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.health._snapshot import Snapshot, StateNotice, pid_alive
from protocols.health import HealthLevel, HealthReason
from protocols.i18n import Lang, language

__all__ = ["CHECKS", "MAX_BACKLOG", "Look", "evaluate"]

MIN_FREE_BYTES = 100 * 1024 * 1024
MIN_FREE_FRACTION = 0.05
MAX_BACKLOG = 10_000
#: warn when less than this share of an issuer's ``revocation_max_age`` is left
REVOCATION_WARN_FRACTION = 0.25


@dataclass(frozen=True, slots=True)
class Look:
    """One look at a snapshot: when, in which language, and what the snapshot is."""

    now: float
    lang: Lang

    def _(self, message: str) -> str:
        return self.lang.gettext(message)


def _coarse(seconds: float) -> float:
    """A duration for a reason's words: whole hours from an hour up, else whole minutes
    (at least one), so the words — and the retained status that carries them — change
    once a minute or an hour, not at every look."""
    unit = 3600 if seconds >= 3600 else 60
    return max(60, round(seconds / unit) * unit)


def _r(code: str, level: HealthLevel, text: str, subject: str | None = None) -> HealthReason:
    return HealthReason(code=code, level=level, text=text, subject=subject)


Reasons = Iterator[HealthReason]


def _clock(s: Snapshot, k: Look) -> Reasons:
    _ = k._
    if not s.clock_trusted:
        if s.clock_allows == "none":
            yield _r("clock.untrusted", "unhealthy", _(
                "clock: behind the time floor; nothing opens by phone until it is fixed "
                "(access.untrusted_clock_allows = \"none\"); set the clock right (NTP)"
            ))  # fmt: skip
        elif s.clock_allows == "emergency":
            yield _r("clock.untrusted", "degraded", _(
                "clock: behind the time floor; planned-care access is restricted until it is fixed"
            ))  # fmt: skip
        else:
            yield _r("clock.untrusted", "warning", _(
                "clock: behind the time floor; tokens are judged at the floor's time until "
                "it is fixed"
            ))  # fmt: skip
    if s.time_floor is not None and k.now + 60 < s.time_floor:
        yield _r("clock.behind", "warning", _(
            "clock: this machine's clock is behind the gateway's time floor"
        ))  # fmt: skip


def _broker(s: Snapshot, k: Look) -> Reasons:
    _ = k._
    if s.broker_problem:
        yield _r("broker.config", "warning", _(
            "broker: not started, the [mqtt] config has problems ({why}); fix them "
            "(lockgw check-config lists them) and restart lockgw. Doors keep working; "
            "events are kept and sent once it connects"
        ).format(why=s.broker_problem))  # fmt: skip
    elif not s.broker_connected:
        yield _r("broker.disconnected", "warning", _(
            "broker: not connected; events are kept and sent when it is back"
        ))  # fmt: skip


def _journal(s: Snapshot, k: Look) -> Reasons:
    _ = k._
    why = f" ({s.journal_problem})" if s.journal_problem else ""
    if s.journal_recording == "unrecorded":
        yield _r("journal.unrecorded", "degraded", _(
            "journal: NOTHING IS RECORDED: neither the journal nor its fallback file can "
            "be written{why}; {n} events are kept in memory only and are lost if the "
            "gateway stops; doors still open for valid keys; free disk space or fix the "
            "data directory now"
        ).format(why=why, n=s.journal_not_durable))  # fmt: skip
    elif s.journal_recording == "fallback":
        yield _r("journal.fallback", "warning", _(
            "journal: cannot write{why}; {n} events wait in its fallback file and are "
            "journaled and published, in order, once it can; doors still open"
        ).format(why=why, n=s.journal_held))  # fmt: skip
    elif not s.journal_ok:
        yield _r("journal.failing", "warning", _(
            "journal: cannot write; events go to its fallback file; doors still open"
        ))  # fmt: skip
    for n in s.journal_restarts:
        kept = _(" (kept as {path})").format(path=n.kept_as) if n.kept_as else ""
        if n.kind == "journal.damaged":
            text = _(
                "journal: found damaged{kept}: {problem}; a new journal goes on at seq "
                "{seq}, linked to seq {link}; doors keep working. Keep the old file for the audit"
            )
        else:
            text = _(
                "journal: events lost at start{kept}: {problem}; the journal goes on at seq "
                "{seq}, linked to seq {link}; doors keep working. Find out who or what removed it"
            )
        yield _r(n.kind, "warning",
                 text.format(kept=kept, problem=n.problem, seq=n.seq, link=n.link_seq))  # fmt: skip
    if s.head_not_signed:
        yield _r("journal.head_not_signed", "warning", _(
            "journal: its head is not signed and kept ({why}); until it is, the platform "
            "cannot prove later that no event was cut from the journal's end. Doors keep "
            "working; free disk space or fix the data directory"
        ).format(why=s.head_not_signed))  # fmt: skip
    if s.backlog > MAX_BACKLOG:
        yield _r("journal.backlog", "warning", _(
            "journal: {n} events not yet published"
        ).format(n=s.backlog))  # fmt: skip


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
    elif f == "rosters.json" and n.in_force:
        what = _(
            "planned care of {issuers} is refused (not_on_roster) until each sends its "
            "roster again; emergency access still opens"
        ).format(issuers=", ".join(n.issuers))
    elif f == "rosters.json":
        what = _(
            "tokens are not checked against a roster until each organisation's roster "
            "arrives again"
        )
    elif f.startswith("site/"):
        what = _(
            "a new site key was made: the platform must pin it again and carers' phones "
            "need new bundles (lockgw site-key show --phone); until then their phones are "
            "refused, alarm-centre commands work"
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


def _keys(s: Snapshot, k: Look) -> Reasons:
    """An issuer's or command signer's key file that cannot be used: that one's carers
    (commands) are refused, everyone else's get in — planned care refused for a reason
    the site can fix: degraded."""
    _ = k._
    for iss, why in sorted(s.issuers_unavailable.items()):
        yield _r("key.issuer_unavailable", "degraded", _(
            "keys: issuer {id}'s key file cannot be used ({why}); its carers are refused "
            "(issuer_unavailable) until it is fixed and lockgw is reloaded; other "
            "organisations' carers get in"
        ).format(id=iss, why=why), iss)  # fmt: skip
    for signer, why in sorted(s.signers_unavailable.items()):
        yield _r("key.signer_unavailable", "degraded", _(
            "keys: command signer {id}'s key file cannot be used ({why}); its remote "
            "commands are refused until it is fixed and lockgw is reloaded"
        ).format(id=signer, why=why), signer)  # fmt: skip


def _state(s: Snapshot, k: Look) -> Reasons:
    _ = k._
    for n in s.state:
        refuses_care = n.file in ("revocations.json", "rosters.json") and n.in_force
        # a new site key: no carer's phone opens until it has a new bundle
        level: HealthLevel = "degraded" if refuses_care else "warning"
        if n.file.startswith("site/"):
            level = "unhealthy"
        yield _r("state.fallback", level, _state_line(n, _), n.file)  # fmt: skip
    if s.state_write_failures:
        yield _r("state.write_failed", "warning", _(
            "state: {n} write(s) of the access state failed (disk full or read-only?); "
            "the gateway decides from memory, a restart would lose them"
        ).format(n=s.state_write_failures))  # fmt: skip


def _devices(s: Snapshot, k: Look) -> Reasons:
    _ = k._
    for d in s.devices:
        ids = {"id": d.id, "door": d.door}
        if not d.reached and not d.online and k.now - s.started_at < 3 * d.health_interval:
            yield _r("device.not_reached", "warning", _(
                "device {id} ({door}): not reached yet since the gateway started"
            ).format(**ids), d.id)  # fmt: skip
        elif not d.online:
            if d.error:
                text = _("device {id} ({door}): offline: {why}").format(**ids, why=d.error)
            else:
                text = _("device {id} ({door}): offline").format(**ids)
            yield _r("device.offline", "unhealthy", text, d.id)
        elif d.last_contact is None or k.now - d.last_contact > 3 * d.health_interval:
            yield _r("device.silent", "warning", _(
                "device {id} ({door}): no contact for a while"
            ).format(**ids), d.id)  # fmt: skip
        if "lock_jammed" in d.problems:
            yield _r("device.jammed", "unhealthy", _(
                "device {id} ({door}): the lock is jammed; the door cannot be opened by "
                "phone: check the door and the bolt"
            ).format(**ids), d.id)  # fmt: skip
        if d.battery is not None and d.battery <= 10:
            yield _r("device.battery_critical", "warning", _(
                "device {id} ({door}): battery critical ({level} %)"
            ).format(**ids, level=d.battery), d.id)  # fmt: skip
        for key in d.unknown_pairings:
            yield _r("device.pairing_unknown", "warning", _(
                "device {id} ({door}): holds a pairing this gateway did not make ({key}); "
                "if nobody you know paired it, remove it: lockgw devices pairings {id} "
                "--remove {key}"
            ).format(**ids, key=key), d.id)  # fmt: skip
        if "left_unlocked" in d.problems:
            yield _r("door.left_unlocked", "warning", _(
                "door {door} ({id}): left unlocked — it was not locked again after it was "
                "opened (a visit ended, or locking it again failed); lock it and check the lock"
            ).format(**ids), d.id)  # fmt: skip
        if "door_left_open" in d.problems:
            yield _r("door.left_open", "warning", _(
                "door {door} ({id}): left open"
            ).format(**ids), d.id)  # fmt: skip
        if "key_not_returned" in d.problems:
            yield _r("keysafe.key_not_returned", "warning", _(
                "key safe {id} ({door}): the key was not put back"
            ).format(**ids), d.id)  # fmt: skip


def _phone_ble(s: Snapshot, k: Look) -> Reasons:
    _ = k._
    ble = s.phone_ble
    if ble is not None and not ble.up:
        yield _r("phone_ble.down", "unhealthy", _(
            "phone link: BLE on {adapter} is down ({why}); phones cannot open by Bluetooth"
        ).format(adapter=ble.adapter, why=ble.problem or _("not advertising")),
            ble.adapter)  # fmt: skip


def _zone(s: Snapshot) -> ZoneInfo:
    try:
        return ZoneInfo(s.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _today(s: Snapshot, now: float) -> date:
    return datetime.fromtimestamp(now, _zone(s)).date()


def _issuers(s: Snapshot, k: Look) -> Reasons:
    _ = k._
    lang = k.lang
    today = _today(s, k.now)
    for i in s.issuers:
        if i.stale and i.age is None:
            yield _r("revocation.stale", "degraded", _(
                "revocations: no revocation list from {org} yet; its planned care is refused "
                "(revocation_stale) until it arrives; emergency access still opens. Ask "
                "{org} to publish its list"
            ).format(org=i.name), i.id)  # fmt: skip
        elif i.stale:
            yield _r("revocation.stale", "degraded", _(
                "revocations: the list of {org} is {age} old (at most {max} allowed); its "
                "planned care is refused (revocation_stale) until a new one arrives; "
                "emergency access still opens. Ask {org} to publish its list"
            ).format(org=i.name, age=lang.duration(_coarse(i.age or 0)),
                     max=lang.duration(i.max_age or 0)), i.id)  # fmt: skip
        elif i.max_age is not None and i.age is not None:
            left = i.max_age - i.age
            if left < REVOCATION_WARN_FRACTION * i.max_age:
                yield _r("revocation.ageing", "warning", _(
                    "revocations: the list of {org} goes stale in {left}; after that its "
                    "planned care is refused until a new one arrives. Ask {org} to publish "
                    "its list"
                ).format(org=i.name, left=lang.duration(_coarse(left))), i.id)  # fmt: skip
        if i.consent_until is not None:
            days = (i.consent_until - today).days
            if days < 0:
                yield _r("consent.ended", "degraded", _(
                    "consent: the resident's consent for {org} ended on {day}; its carers "
                    "are refused (issuer_not_consented). Renew the consent in the config "
                    "(consent_until) or remove the organisation"
                ).format(org=i.name, day=lang.date(i.consent_until)), i.id)  # fmt: skip
            elif days <= s.warn_days:
                yield _r("consent.ending", "warning", lang.ngettext(
                    "consent: the resident's consent for {org} ends on {day} (in {n} day); "
                    "after that its carers are refused. Renew it in the config "
                    "(consent_until) in time",
                    "consent: the resident's consent for {org} ends on {day} (in {n} days); "
                    "after that its carers are refused. Renew it in the config "
                    "(consent_until) in time",
                    days,
                ).format(org=i.name, day=lang.date(i.consent_until), n=days), i.id)  # fmt: skip
        if i.key_valid_until is not None:
            days = (i.key_valid_until - today).days
            if days < 0:
                yield _r("key.issuer_expired", "degraded", _(
                    "keys: the key of {org} was trusted until {day}; its carers are refused "
                    "(issuer_unavailable). Configure the organisation's new key "
                    "(public_key, key_valid_until) and reload"
                ).format(org=i.name, day=lang.date(i.key_valid_until)), i.id)  # fmt: skip
            elif days <= s.warn_days:
                yield _r("key.issuer_expiring", "warning", lang.ngettext(
                    "keys: the key of {org} is trusted until {day} (in {n} day); after that "
                    "its carers are refused. Ask {org} for its new key in time",
                    "keys: the key of {org} is trusted until {day} (in {n} days); after that "
                    "its carers are refused. Ask {org} for its new key in time",
                    days,
                ).format(org=i.name, day=lang.date(i.key_valid_until), n=days), i.id)  # fmt: skip


def _held(s: Snapshot, k: Look) -> Reasons:
    _ = k._
    names = {i.id: i.name for i in s.issuers}
    for h in s.held_expiring:
        when = datetime.fromtimestamp(h.exp, UTC).astimezone(_zone(s))
        yield _r("token.expiring", "warning", _(
            "tokens: the token of {sub} from {org} expires {when} and no newer one is known "
            "here (held, or on the roster); after that {sub} is refused. Ask {org} to issue "
            "a new one"
        ).format(org=names.get(h.iss, h.iss), sub=h.sub,
                 when=f"{k.lang.date(when)} {when:%H:%M}"), f"{h.iss}/{h.sub}")  # fmt: skip


#: every check, in the order its reasons are listed
def _phone_link(s: Snapshot, k: Look) -> Reasons:
    p = s.phone_link_pressure
    if p is not None:
        yield _r("phone_link.pressure", "warning", k._(
            "phone link: under pressure: {n} idle or slow connections from {k} address(es) "
            "were closed to make room within {s} s; phones still get in (access.suspicious "
            "events name the addresses)"
        ).format(n=p.closed, k=p.sources, s=round(2 * p.interval)))  # fmt: skip


CHECKS: tuple[Callable[[Snapshot, Look], Reasons], ...] = (
    _clock, _broker, _journal, _keys, _state, _issuers, _held, _phone_ble, _devices, _phone_link,
)  # fmt: skip


def _disk(data_dir: Path, k: Look) -> Reasons:
    _ = k._
    try:
        du = shutil.disk_usage(data_dir)
    except OSError as exc:
        yield _r("disk.unreadable", "warning", _("disk: cannot read {dir}: {error}").format(
            dir=data_dir, error=exc.strerror))  # fmt: skip
        return
    if du.free < MIN_FREE_BYTES or du.free < MIN_FREE_FRACTION * du.total:
        yield _r("disk.low", "warning", _(
            "disk: only {mb} MB free on {dir}; free space or the journal cannot "
            "record entries"
        ).format(mb=du.free // (1024 * 1024), dir=data_dir))  # fmt: skip


def _daemon(data_dir: Path, s: Snapshot | None, k: Look, live: bool) -> Reasons:
    """What the snapshot itself says: read from the file rather than asked of the daemon,
    it may be old or left over."""
    _ = k._
    if s is None:
        yield _r("daemon.not_running", "unhealthy", _(
            "daemon: no health snapshot in {dir}; is lockgw running?"
        ).format(dir=data_dir))  # fmt: skip
        return
    if live:
        return
    if not pid_alive(s.pid):
        yield _r("daemon.not_running", "unhealthy", _(
            "daemon: lockgw is not running (its last health snapshot, {age} old, is left "
            "over from process {pid})"
        ).format(age=k.lang.duration(k.now - s.written_at), pid=s.pid))  # fmt: skip
    elif k.now - s.written_at > 3 * s.interval:
        yield _r("daemon.unknown", "unhealthy", _(
            "daemon: last health snapshot {age} s old and the daemon does not answer on "
            "its health socket; the gateway seems stuck or stopped: its present state "
            "cannot be known"
        ).format(age=f"{k.now - s.written_at:.0f}"))  # fmt: skip


def evaluate(
    data_dir: Path,
    snap: Snapshot | None,
    now: float | None = None,
    *,
    lang: Lang | None = None,
    live: bool = False,
) -> list[HealthReason]:
    """Every reason, in words (English unless ``lang``); empty = healthy. ``live``: the
    snapshot is the daemon's present state (asked of it, or made in it), not a file."""
    k = Look(now=time.time() if now is None else now, lang=lang or language("en"))
    reasons = [*_disk(data_dir, k), *_daemon(data_dir, snap, k, live)]
    if snap is None or any(r.code == "daemon.not_running" for r in reasons):
        return reasons
    if snap.phase == "starting":
        reasons.append(_r("daemon.starting", "unhealthy", k._(
            "daemon: starting for {age}; doors cannot be opened by phone until it is ready"
        ).format(age=k.lang.duration(k.now - snap.started_at))))  # fmt: skip
        return reasons
    for check in CHECKS:
        reasons += check(snap, k)
    return reasons
