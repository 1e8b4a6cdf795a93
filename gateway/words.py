"""Events in words a resident and her family understand, in their language.

``lockgw audit show`` and the resident's page (``gateway.web``) both say what happened
with these: "voordeur geopend voor Anna, verzorgende (Thuiszorg West)", never "OPENED
(unlock) for verzorgende c-7f31 of org-thuiszorg-west". People are named from the
rosters (:class:`People`: names stay on the hub), organisations by the name in the
config, doors by what they are ("voordeur", "sleutelkluis"), durations in minutes and
seconds. All text comes from the ``lockgw`` catalogue (:mod:`protocols.i18n`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final
from zoneinfo import ZoneInfo

from protocols.device import DeviceKind, DeviceState

if TYPE_CHECKING:
    from gateway.config import Config
from protocols.events import Envelope
from protocols.i18n import N_, Lang, first_upper

__all__ = [
    "People",
    "ago",
    "describe",
    "door_name",
    "problem_text",
    "purpose_text",
    "reason_text",
    "role_text",
    "state_text",
]

#: denial reasons (CONTRACT §3 and additions) as a resident would say them
REASONS: Final = {
    "ok": N_("allowed"),
    "malformed": N_("the digital key could not be read"),
    "bad_signature": N_("the digital key is not genuine"),
    "unknown_issuer": N_("the key comes from an organisation this home does not know"),
    "expired": N_("the digital key has expired"),
    "not_yet_valid": N_("the digital key is not valid yet"),
    "wrong_site": N_("the digital key is for another home"),
    "wrong_door": N_("the digital key is not for this door"),
    "outside_window": N_("outside the agreed times"),
    "revoked": N_("the digital key was withdrawn"),
    "bad_proof": N_("the key was used on another phone than the one it was given to"),
    "nonce_reused": N_("a repeated attempt"),
    "role_not_permitted": N_("this role may not come in here"),
    "purpose_not_permitted": N_("not allowed for this kind of care"),
    "issuer_not_consented": N_("the resident has not agreed to this organisation"),
    "revocation_stale": N_("the organisation's list of withdrawn keys is out of date"),
    "rate_limited": N_("too many attempts"),
    "clock_untrusted": N_("the gateway's clock could not be trusted"),
    "device_unavailable": N_("the lock did not answer"),
    "device_failed": N_("the lock could not do it"),
    "not_on_roster": N_("not on the organisation's list of who may come in"),
    "issuer_unavailable": N_("the organisation's key is missing or broken on the gateway"),
}

#: what can go wrong in a visit (gateway.visits)
PROBLEMS: Final = {
    "door_not_opened": N_("nobody went in"),
    "door_left_open": N_("the door was left open"),
    "left_unlocked": N_("the door was not locked again"),
    "key_not_returned": N_("the house key was not put back in the key safe"),
    "visit_not_closed": N_("the visit did not end properly"),
    "superseded": N_("someone else came in before this visit had ended"),
    "gateway_stopped": N_("the gateway stopped during the visit"),
    "lock_jammed": N_("the lock jammed"),
}

#: the roles of the sector's function-access matrices (REQUIREMENTS: who uses it)
ROLES: Final = {
    "wijkverpleegkundige": N_("district nurse"),
    "verzorgende": N_("care worker"),
    "alarmopvolger": N_("alarm responder"),
    "mantelzorger": N_("informal carer"),
    "huishoudelijk": N_("home help"),
}

PURPOSES: Final = {
    "planned": N_("planned care"),
    "emergency": N_("emergency (alarm)"),
    "remote": N_("opened remotely"),
}

DOORS: Final = {
    "front": N_("front door"),
    "back": N_("back door"),
    "entrance": N_("main entrance"),
    "building": N_("main entrance"),
}


def reason_text(lang: Lang, reason: str | None) -> str:
    msg = REASONS.get(str(reason))
    return lang.gettext(msg) if msg else str(reason)


def problem_text(lang: Lang, problem: str) -> str:
    msg = PROBLEMS.get(problem)
    return lang.gettext(msg) if msg else problem.replace("_", " ")


def role_text(lang: Lang, role: str | None) -> str:
    if not role:
        return ""
    msg = ROLES.get(role)
    return lang.gettext(msg) if msg else role


def purpose_text(lang: Lang, purpose: str | None) -> str:
    msg = PURPOSES.get(str(purpose))
    return lang.gettext(msg) if msg else str(purpose or "")


def door_name(lang: Lang, door: str | None) -> str:
    if not door:
        return lang.gettext("the gateway")
    msg = DOORS.get(door)
    return lang.gettext(msg) if msg else lang.gettext("door {door}").format(door=door)


_LOCK: Final = {
    "locked": N_("locked"),
    "unlocked": N_("not locked"),
    "unlatched": N_("open (latch pulled)"),
    "jammed": N_("jammed"),
    "unknown": N_("lock state unknown"),
}


def state_text(lang: Lang, state: DeviceState | None) -> str:
    """A device's state in a few words: "locked, door closed" / "closed, house key inside"."""
    _ = lang.gettext
    if state is None:
        return _("not known yet")
    parts = []
    if state.kind is DeviceKind.KEYSAFE:
        parts.append(
            {"open": _("open"), "closed": _("closed")}.get(
                str(state.compartment), _("compartment unknown")
            )
        )
        parts.append(
            {"present": _("house key inside"), "absent": _("house key not inside")}.get(
                str(state.key), _("key unknown")
            )
        )
    else:
        parts.append(_(_LOCK.get(str(state.lock), _LOCK["unknown"])))
        parts.append(
            {"open": _("door open"), "closed": _("door closed")}.get(
                state.door.value, _("door unknown")
            )
        )
    return ", ".join(parts)


def ago(lang: Lang, t: float | None, now: float, tz: ZoneInfo) -> str:
    """How long ago: "just now", "12 minutes ago", "3 hours ago", else the date."""
    _ = lang.gettext
    if t is None:
        return _("never")
    s = max(0.0, now - t)
    if s < 90:
        return _("just now")
    if s < 5400:
        n = round(s / 60)
        return lang.ngettext("{n} minute ago", "{n} minutes ago", n).format(n=n)
    if s < 2 * 86400:
        n = round(s / 3600)
        return lang.ngettext("{n} hour ago", "{n} hours ago", n).format(n=n)
    return lang.date(datetime.fromtimestamp(t, tz), weekday=False)


@dataclass(frozen=True)
class People:
    """Who is who, for people: names from the rosters, organisations' names from the config."""

    #: (iss, sub) → name the organisation chose to show the resident
    names: Mapping[tuple[str, str], str] = field(default_factory=dict)
    #: issuer id → the organisation's name
    orgs: Mapping[str, str] = field(default_factory=dict)
    #: device id → (its door, whether it is a key safe)
    devices: Mapping[str, tuple[str, bool]] = field(default_factory=dict)

    def org(self, iss: str | None) -> str:
        return self.orgs.get(iss or "", iss or "")

    def name(self, iss: str | None, sub: str | None) -> str | None:
        if iss is None or sub is None:
            return None
        return self.names.get((iss, sub))

    def who(self, lang: Lang, w: Mapping[str, Any]) -> str:
        """"Anna, verzorgende (Thuiszorg West)"; without a roster name the role and the
        pseudonym: "verzorgende c-55d2 (Buurtzorg Oost)"; a signed command's actor."""
        if w.get("channel") == "command":  # a signed remote opening: who asked for it
            return str(w.get("actor") or w.get("iss") or lang.gettext("someone"))
        iss, sub = w.get("iss"), w.get("sub")
        name = self.name(iss, sub)
        if name is None and sub:
            name = " ".join(p for p in (role_text(lang, w.get("role")), sub) if p)
        if name is None:
            actor = w.get("actor")
            return str(actor) if actor else lang.gettext("someone")
        return f"{name} ({self.org(iss)})" if iss and iss != sub else name

    def device(self, lang: Lang, device_id: str | None) -> str:
        """"the lock of the front door", "the key safe at the front door" (else its id)."""
        known = self.devices.get(device_id or "")
        if known is None:
            return str(device_id)
        door, keysafe = known
        if keysafe:
            return lang.gettext("the key safe at the {door}").format(door=door_name(lang, door))
        return lang.gettext("the lock of the {door}").format(door=door_name(lang, door))

    @classmethod
    def of(
        cls,
        config: Config,
        names: Mapping[tuple[str, str], str],
        kinds: Mapping[str, DeviceKind | None] | None = None,
    ) -> People:
        """For one site: ``names`` from the rosters, organisations and devices from the
        config (a device is a key safe when ``kinds`` says so, or its driver's name does)."""
        kinds = kinds or {}
        return cls(
            names=dict(names),
            orgs={i.id: i.title for i in config.issuers},
            devices={
                d.id: (
                    d.door,
                    kinds.get(d.id) is DeviceKind.KEYSAFE
                    if kinds.get(d.id) is not None
                    else "keysafe" in d.driver,
                )
                for d in config.devices
            },
        )

    @classmethod
    def load(cls, config: Config) -> People:
        """For the command line: names from ``<data_dir>/access/names.json`` (read only;
        missing or unreadable: no names)."""
        from gateway.access.rosters import NAMES_FILE, names_from_json
        from gateway.access.state import read_state_file

        book = names_from_json(read_state_file(config.site.data_dir / "access", NAMES_FILE))
        return cls.of(config, {k: p.name for k, p in book.items()})


def _thing(lang: Lang, w: Mapping[str, Any]) -> str:
    """What was opened: the key safe, or the door."""
    if w.get("action") == "open" or w.get("kind") == "keysafe":
        return lang.gettext("key safe")
    return door_name(lang, w.get("door"))


def describe(lang: Lang, env: Envelope, people: People) -> str:
    """One event in a sentence (no time; the caller adds it)."""
    _ = lang.gettext
    w = env.to_wire()
    t = env.type
    who = people.who(lang, w)
    if t == "access.granted":
        thing = _thing(lang, w)
        how = _("by phone") if w.get("channel") == "phone" else _("remotely")
        text = _("{thing} opened for {who} — {purpose}, {how}").format(
            thing=thing, who=who, purpose=purpose_text(lang, w.get("purpose")), how=how
        )
        if w.get("emergency_outside_window"):
            text += " " + _("(emergency outside the agreed times)")
        if w.get("not_on_roster"):
            text += " " + _("(not on the organisation's list)")
        return first_upper(text)
    if t == "access.denied":
        text = _("{thing} not opened for {who}: {reason}").format(
            thing=_thing(lang, w), who=who, reason=reason_text(lang, w.get("reason"))
        )
        return first_upper(text)
    if t == "access.suspicious" and not w.get("door"):
        return first_upper(
            _("phone link: {count} connections closed within {minutes} min (a flood)").format(
                count=w["count"], minutes=max(1, w["window"] // 60)
            )
        )
    if t == "access.suspicious":
        return first_upper(
            _("{door}: {count} refused attempts within {minutes} min").format(
                door=door_name(lang, w.get("door")), count=w["count"], minutes=w["window"] // 60
            )
        )
    if t == "visit.started":
        return _("Visit of {who} began").format(who=who)
    if t == "visit.ended":
        after = []
        if w.get("relocked") is True:
            after.append(_("door locked again"))
        if w.get("key_returned") is True:
            after.append(_("key put back"))
        after += [problem_text(lang, p) for p in w.get("problems") or []]
        text = _("Visit of {who} ended after {duration}").format(
            who=who, duration=lang.duration(w.get("duration_s") or 0)
        )
        return text + (" — " + "; ".join(after) if after else "")
    if t == "alarm.raised":
        return _("Alarm raised by {actor}").format(actor=w.get("actor"))
    if t == "alarm.cleared":
        return _("Alarm cleared by {actor}").format(actor=w.get("actor"))
    if t == "door.left_open":
        return _("The {door} was left open for {duration}").format(
            door=door_name(lang, w.get("door")), duration=lang.duration(w.get("seconds") or 0)
        )
    if t == "keysafe.key_not_returned":
        return _("The house key was not put back in the key safe ({duration} after it was taken)").format(
            duration=lang.duration(60 * (w.get("minutes") or 0))
        )
    if t == "roster.applied":
        n = int(w.get("people") or 0)
        return lang.ngettext(
            "{org} updated its list of who may come in: {people} person",
            "{org} updated its list of who may come in: {people} people",
            n,
        ).format(org=people.org(w.get("iss")), people=n)
    if t in ("device.online", "device.offline"):
        what = (
            _("{device} is working again")
            if t == "device.online"
            else _("{device} cannot be reached")
        )
        return what.format(device=first_upper(people.device(lang, w.get("device"))))
    if t == "device.paired":
        return _("{device} was paired with this gateway").format(
            device=first_upper(people.device(lang, w.get("device")))
        )
    if t == "device.pairing_unknown":
        return _(
            "{device} holds a pairing this gateway did not make ({key}); if nobody you know "
            "paired it, remove it"
        ).format(device=first_upper(people.device(lang, w.get("device"))), key=w.get("key_id"))
    if t == "device.pairing_removed":
        return _("A pairing of {device} was removed ({key})").format(
            device=people.device(lang, w.get("device")), key=w.get("key_id")
        )
    if t == "battery":
        return _("Battery of {device}: {level} %").format(
            device=people.device(lang, w.get("device")), level=w.get("level")
        )
    if t == "roster.over_limit":
        return _("More people may come in ({people}) than agreed ({limit})").format(
            people=w.get("people"), limit=w.get("limit")
        )
    if t == "device.late_answer":
        return _("{device} opened for {who} after all, after the gateway had given up on it").format(
            device=first_upper(people.device(lang, w.get("device"))), who=who
        )
    if t in ("door.relocked", "door.left_unlocked"):
        why = str(w.get("why") or "")
        if t == "door.left_unlocked":
            text = _("The {door} could not be locked again: check it")
        elif why.startswith("late_answer"):
            text = _("The {door} was locked again: the lock had opened too late")
        else:
            text = _("The {door} was locked again: nobody went in")
        text = text.format(door=door_name(lang, w.get("door")))
        if why.endswith("_before_restart"):
            text += " " + _("(after the gateway restarted)")
        return text
    fields = {k: v for k, v in w.items() if k not in ("v", "id", "seq", "ts", "site", "type")}
    return f"{t}: " + ", ".join(f"{k}={v}" for k, v in fields.items() if v not in (None, [], ""))
