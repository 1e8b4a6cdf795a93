"""``lockgw demo``: a day at one front door, told for a care manager.

Everything is real and on this machine: a private mosquitto on a free loopback port,
a simulated front-door lock and key safe (``lockgw-sim lock`` / ``keysafe`` as their own
processes, reached by the gateway through bleak and the loopback BLE transport), the
gateway itself (``lockgw run`` as its own process, paired with the devices by
``lockgw pair``), a care platform subscribed to the event stream, and carers' phones
speaking the unlock exchange. The demo only conducts: it issues keys and tokens the
way a care organisation would, presses buttons on the simulators the way a carer's
hands would, and tells what the platform receives.

``--bluez`` tells the same day over BlueZ's D-Bus API instead of the loopback transports:
a private system bus with BlueZoo's virtual adapters (the tests' bed, ``tests/bluez_env.py``,
so it runs from a source checkout set up by ``scripts/bootstrap.sh``); the gateway serves
phones as a BLE GATT peripheral on hci0 (``[phone_link] ble = true``), the lock and the
key safe are BlueZ peripherals on hci1 and hci2, and every phone is ``lockgw-sim phone
unlock --bluez`` on hci3 (bleak's BlueZ backend).

Like every simulator this imports ``protocols/`` only; it drives the gateway through
its command line and the network, as any other party would.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import importlib.util
import json
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocols.i18n import LANGUAGES, N_, Lang, language
from protocols.phone import Result
from simulators.broker import MosquittoBroker, free_port
from simulators.control import ControlError
from simulators.phone import PhoneError
from simulators.platform import Platform
from simulators.site import Carer, DeviceSpec, Org, SimSite, windows_near, write_key

__all__ = ["Demo", "register"]

ZONE = "Europe/Amsterdam"


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class DemoError(Exception):
    """A step of the demo did not happen as it should (shown to the user, exit 1)."""


# --------------------------------------------------------------------- narration ----
_PEOPLE: dict[str, str] = {}

_REASONS = {
    "ok": N_("let in"),
    "bad_proof": N_("refused: the token is bound to another phone (a forwarded token is useless)"),
    "outside_window": N_("refused: outside the hours this carer is scheduled"),
    "revoked": N_("refused: this token was revoked"),
    "expired": N_("refused: the token has expired"),
    "not_yet_valid": N_("refused: the token is not valid yet"),
    "device_unavailable": N_("the lock did not answer in time"),
    "device_failed": N_("the lock could not do it"),
    "rate_limited": N_("refused: too many attempts"),
    "nonce_reused": N_("refused: a replayed answer"),
    "role_not_permitted": N_("refused: this role may not enter here"),
    "purpose_not_permitted": N_("refused: this purpose is not allowed for this organisation"),
    "issuer_not_consented": N_("refused: the resident has not consented to this organisation"),
    "wrong_door": N_("refused: the token is for another door"),
    "wrong_site": N_("refused: the token is for another home"),
    "unknown_issuer": N_("refused: unknown organisation"),
    "bad_signature": N_("refused: the token's signature is wrong"),
    "malformed": N_("refused: not a valid token"),
    "revocation_stale": N_("refused: the organisation's revocation list is too old"),
    "clock_untrusted": N_("refused: the gateway cannot trust its clock"),
    "not_on_roster": N_("refused: not on the organisation's roster"),
    "issuer_unavailable": N_("refused: the organisation's key on the gateway is broken"),
}


def _who(ev: dict[str, Any], lang: Lang) -> str:
    sub = ev.get("sub")
    if sub is None:
        actor = ev.get("actor")
        return (
            lang.gettext("the alarm centre ({actor})").format(actor=actor)
            if actor
            else lang.gettext("someone")
        )
    name = _PEOPLE.get(sub, sub)
    role = ev.get("role")
    return f"{name} ({role}, {ev.get('iss')})" if role else name


def _dur(seconds: Any, lang: Lang) -> str:
    if not isinstance(seconds, int | float):
        return "?"
    return lang.duration(seconds)


def describe(ev: dict[str, Any], lang: Lang | None = None) -> str | None:
    """One event as a care manager would want to read it (None: not worth a line)."""
    lang = lang or language()
    _ = lang.gettext
    t = ev.get("type", "")
    door = ev.get("door") or "?"
    if t in ("access.granted", "access.denied"):
        how = _("by remote command") if ev.get("channel") == "command" else _("with a phone")
        action = str(ev.get("action"))
        if action == "open":
            what = _("the key safe")
        elif action == "unlatch":
            what = _("the {door} door (unlatch)").format(door=door)
        else:
            what = _("the {door} door").format(door=door)
        flag = (
            _(" — emergency entry outside the schedule, flagged")
            if ev.get("emergency_outside_window")
            else ""
        )
        if ev.get("not_on_roster"):
            flag += _(" — not on the organisation's roster, flagged")
        reason = str(ev.get("reason"))
        words = _(_REASONS[reason]) if reason in _REASONS else reason
        return _("{who} at {what} {how}: {reason}").format(
            who=_who(ev, lang), what=what, how=how, reason=words
        ) + flag
    if t == "lock.state":
        return _("lock {device}: bolt {lock}, door {door}").format(
            device=ev.get("device"), lock=ev.get("lock"), door=ev.get("door_state", door)
        )
    if t == "keysafe.state":
        return _("key safe {device}: compartment {compartment}, key {key}").format(
            device=ev.get("device"), compartment=ev.get("compartment"), key=ev.get("key")
        )
    if t == "keysafe.key_not_returned":
        return _("WARNING key safe {device}: the house key was not put back").format(
            device=ev.get("device")
        )
    if t == "door.left_open":
        return _("WARNING the {door} door has been left open").format(door=door)
    if t == "battery":
        if ev.get("critical"):
            state = _("CRITICAL")
        elif ev.get("low"):
            state = _("low")
        else:
            state = _("ok")
        days = ev.get("days_left")
        tail = ""
        if isinstance(days, int | float):
            tail = (
                _(", about {days} days left").format(days=f"{days:.0f}")
                if days >= 1
                else _(", less than a day left")
            )
        return _("battery of {device}: {level} % ({state}{tail})").format(
            device=ev.get("device"), level=ev.get("level"), state=state, tail=tail
        )
    if t == "device.online":
        return _("{device} is online").format(device=ev.get("device"))
    if t == "device.offline":
        return _("{device} is offline").format(device=ev.get("device"))
    if t == "visit.started":
        return _("visit begins: {who} at the {door} door").format(who=_who(ev, lang), door=door)
    if t == "visit.ended":
        problems = ev.get("problems") or []
        verdict = (
            _("all in order")
            if not problems
            else _("PROBLEMS: {problems}").format(problems=", ".join(map(str, problems)))
        )
        return _("visit ends: {who}, {duration} — {verdict}").format(
            who=_who(ev, lang), duration=_dur(ev.get("duration_s"), lang), verdict=verdict
        )
    if t == "alarm.raised":
        return _("alarm raised by {actor}").format(actor=ev.get("actor") or _("the alarm centre"))
    if t == "alarm.cleared":
        return _("alarm cleared by {actor}").format(actor=ev.get("actor") or _("the alarm centre"))
    if t == "command.result":
        ok = _("done") if ev.get("ok") else _("refused ({reason})").format(reason=ev.get("reason"))
        return _("command {cmd} from {actor}: {result}").format(
            cmd=ev.get("cmd"), actor=ev.get("actor") or "?", result=ok
        )
    if t == "revocation.applied":
        return _("revocation list {seq} of {iss} applied").format(
            seq=ev.get("list_seq"), iss=ev.get("iss")
        )
    if t == "roster.applied":
        added = ", ".join(_PEOPLE.get(p["sub"], p["sub"]) for p in ev.get("added") or [])
        removed = ", ".join(_PEOPLE.get(p["sub"], p["sub"]) for p in ev.get("removed") or [])
        text = _("roster {seq} of {iss}: {people} people").format(
            seq=ev.get("list_seq"), iss=ev.get("iss"), people=ev.get("people")
        )
        if added:
            text += _("; added {names}").format(names=added)
        if removed:
            text += _("; removed {names}").format(names=removed)
        return text
    if t == "roster.over_limit":
        return _("WARNING {people} people may enter; the home agreed on at most {limit}").format(
            people=ev.get("people"), limit=ev.get("limit")
        )
    if t == "access.suspicious":
        return _("WARNING {count} refused attempts at the {door} door").format(
            count=ev.get("count"), door=door
        )
    if t == "clock.untrusted":
        return _("WARNING the gateway's clock cannot be trusted")
    if t == "gateway.started":
        return _("gateway started (version {version})").format(version=ev.get("version"))
    if t == "gateway.stopping":
        return _("gateway stopping (version {version})").format(version=ev.get("version"))
    return None


# -------------------------------------------------------------------------- demo ----
class Demo:
    def __init__(
        self,
        workdir: Path,
        *,
        fast: bool,
        out: TextIO = sys.stdout,
        lang: str | None = None,
        keep: bool = False,
        bluez: Any = None,
    ) -> None:
        """``bluez``: a started ``BluezEnv`` (``tests/bluez_env.py``) to tell the day over."""
        self.fast = fast
        self.bluez = bluez
        self.out = out
        self.lang = language(lang)
        #: keep the gateway and its page running after the day, until interrupted
        self.keep = keep
        self.web_port = free_port()
        self.sim = SimSite(
            workdir,
            devices=[
                DeviceSpec(
                    "front-lock",
                    "front",
                    "lock",
                    "carelock-lock",
                    "door_left_open_after = 30\nhealth_interval = 5",
                    adapter="hci1" if bluez else None,
                ),
                DeviceSpec(
                    "front-keysafe",
                    "front",
                    "keysafe",
                    "carelock-keysafe",
                    "key_not_returned_after = 10\nhealth_interval = 5",
                    adapter="hci2" if bluez else None,
                ),
            ],
            bluetooth="hci0" if bluez else None,
            env={"DBUS_SYSTEM_BUS_ADDRESS": bluez.bus_address} if bluez else None,
        )
        west = self.sim.add_org(
            Org(
                "org-thuiszorg-west",
                "Thuiszorg West",
                ("wijkverpleegkundige", "verzorgende"),
                ("planned",),
            )
        )
        oost = self.sim.add_org(
            Org("org-buurtzorg-oost", "Buurtzorg Oost", ("verzorgende",), ("planned",))
        )
        alarm = self.sim.add_org(
            Org("org-alarmopvolging", "Alarmopvolging regio", ("alarmopvolger",), ("emergency",))
        )
        self.west = west
        self.anna = Carer("Anna", "c-7f31", west, "verzorgende")
        self.bram = Carer("Bram", "c-2a90", west, "wijkverpleegkundige")
        self.chidi = Carer("Chidi", "c-55d2", oost, "verzorgende")
        self.dirk = Carer("Dirk", "c-91e4", oost, "verzorgende")
        self.sanne = Carer("Sanne", "r-0c17", alarm, "alarmopvolger", ("emergency",))
        for c in (self.anna, self.bram, self.chidi, self.dirk, self.sanne):
            _PEOPLE[c.sub] = c.name
        self.oost = oost
        self.alarm = alarm
        self.platform: Platform | None = None
        self.platform_seq_alarm = 0

    # -- output ------------------------------------------------------------------------
    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def scene(self, clock: str, title: str) -> None:
        self.say()
        self.say(f"── {clock}  {title} " + "─" * max(0, 66 - len(title)))

    def on_event(self, ev: dict[str, Any]) -> None:
        line = describe(ev, self.lang)
        if line is not None:
            platform = self.lang.gettext("platform")
            self.say(f"   {platform} ← #{ev['seq']:<4} {line}")

    async def pause(self, seconds: float = 1.0) -> None:
        await asyncio.sleep(0.1 if self.fast else seconds)

    @staticmethod
    def windows_now(now: datetime | None = None) -> tuple[list[list[int]], list[list[int]], str]:
        """(windows containing now, windows far from it, the latter as text) in the site's
        zone (:func:`simulators.site.windows_near`)."""
        inside, outside = windows_near(now or datetime.now(ZoneInfo(ZONE)))
        far = outside[0][1]
        text = f"{far // 60:02d}:{far % 60:02d}–{(far + 240) % 1440 // 60:02d}:{far % 60:02d}"
        return inside, outside, text

    async def write_phones(self) -> None:
        """What each phone holds — its key, its token, and its credential bundle (the token
        with the site's public keys, ``lockgw site-key show --phone``) — so a technician can replay
        with ``lockgw-sim phone unlock --bundle phones/NAME.json --key phones/NAME.key``."""
        phones = self.sim.dir / "phones"
        phones.mkdir(exist_ok=True)
        await self.sim.site_keys()
        (phones / "site-keys.json").write_text(json.dumps(self.sim.site_keys_json) + "\n")
        for c in (self.anna, self.bram, self.chidi, self.dirk, self.sanne):
            name = c.name.lower()
            write_key(phones / f"{name}.key", c.phone)
            (phones / f"{name}.token").write_text(b64url(c.token) + "\n")
            bundle = {"token": b64url(c.token), **self.sim.site_keys_json}
            (phones / f"{name}.json").write_text(json.dumps(bundle) + "\n")

    # -- helpers ------------------------------------------------------------------------
    async def at_door(
        self,
        carer: Carer,
        action: str = "unlock",
        *,
        phone: Ed25519PrivateKey | None = None,
        expect: str | None = None,
        note: str = "",
    ) -> dict[str, Any]:
        """One attempt; returns the access event the platform received for it."""
        assert self.platform is not None
        result = await self.phone(carer, action, phone=phone)
        _ = self.lang.gettext
        verdict = _("GRANTED") if result.granted else _("DENIED")
        self.say(
            "   "
            + _("{name}'s phone ← {verdict} ({reason})").format(
                name=carer.name, verdict=verdict, reason=result.reason
            )
            + note
        )
        if expect is not None and result.reason != expect:
            raise DemoError(
                f"expected {expect} for {carer.name}, the gateway answered {result.reason}"
            )
        return await self.wait_event(lambda e: e.get("id") == result.event, "the access event", 60)

    async def phone(
        self, carer: Carer, action: str = "unlock", *, phone: Ed25519PrivateKey | None = None
    ) -> Result:
        """The carer's phone at the door: over the loopback phone link, or with ``--bluez``
        a phone process over BLE GATT through BlueZ (on hci3)."""
        try:
            if self.bluez is None:
                return await self.sim.attempt(carer, action, phone=phone)
            result = await self.sim.attempt_ble(carer, PHONE_ADAPTER, action, phone=phone)
        except (PhoneError, RuntimeError) as exc:
            raise DemoError(f"{carer.name}'s phone: {exc}") from None
        assert result is not None
        return result

    async def wait_event(
        self, pred: Callable[[dict[str, Any]], bool], what: str, timeout: float = 30
    ) -> dict[str, Any]:
        assert self.platform is not None
        try:
            return await self.platform.wait_for(pred, timeout=timeout)
        except TimeoutError:
            raise DemoError(f"the platform never heard: {what}") from None

    async def command(self, cmd: str, **extra: Any) -> None:
        assert self.platform is not None
        await self.platform.send_command(self.sim.command(cmd, **extra))

    async def lock_door(self, name: str, value: str) -> None:
        await self.sim.switch("front-lock", name, value)

    async def key_safe(self, name: str, value: str) -> None:
        await self.sim.switch("front-keysafe", name, value)

    # -- the day ----------------------------------------------------------------------------
    @property
    def page(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    async def run(self) -> int:
        """The day; then the resident's page. With ``keep``, the gateway and the page stay
        up until Ctrl-C (or SIGTERM)."""
        _ = self.lang.gettext
        inside, outside, out_text = self.windows_now()
        self.say(_("lockgw demo — a day at the front door of one home, as the care platform sees it"))
        self.say(_("(everything runs on this machine; files in {dir})").format(dir=self.sim.dir))
        if self.bluez is not None:
            self.say(_("(over BlueZ's D-Bus API: gateway on hci0, lock hci1, key safe hci2, phones hci3)"))
        self.say(_("(the story's times of day are told; the gateway decides on the real clock,"))
        self.say(_(" so the schedules below are set around the time you run this)"))
        async with self.sim, MosquittoBroker(workdir=self.sim.dir / "broker") as broker:
            for carer in (self.anna, self.bram, self.chidi):
                self.sim.issue(carer, windows=inside)
            self.sim.issue(self.dirk, windows=outside)
            self.sim.issue(self.sanne, windows=outside)
            self.scene("06:45", _("the technician installs and pairs the lock and the key safe"))
            # over BlueZ a device's address is its adapter's: known once it is running
            await self.sim.start_devices()
            self.sim.write_config(
                broker.url,
                extra=DEMO_CONFIG.format(port=self.web_port),
                site_extra=f'language = "{self.lang.code}"\nmax_people = 5',
                phone_link="ble = true" if self.bluez is not None else "",
            )
            await self.sim.pair_all()
            for device, shown in self.sim.confirmed_codes.items():
                self.say("   " + _(
                    "{device}: lockgw pair and the device's display both show {code}; the "
                    "technician confirms it on the device"
                ).format(device=device, code=shown))  # fmt: skip
            await self.lock_door("auto-relock", "3")
            self.say("   " + _("paired both; the lock relocks itself 3 s after the door closes"))
            code, out = await self.sim.cli("devices", "--config", str(self.sim.config))
            self.say("\n".join("   " + line for line in out.rstrip().splitlines()))
            async with Platform(broker.url, self.sim.site) as platform:
                self.platform = platform
                platform.on_event = self.on_event
                await self.sim.start_gateway()
                await self.wait_event(
                    lambda e: e["type"] == "gateway.started", "the gateway starting"
                )
                await self.write_phones()
                await self.rosters()
                await self.day(broker, out_text)
                self.scene("23:59", _("the gateway is stopped for the night's update"))
                await self.sim.stop("gateway")
                await self.wait_event(
                    lambda e: e["type"] == "gateway.stopping", "the gateway stopping"
                )
                self.say(
                    "   "
                    + _("the platform's stream: {summary}").format(
                        summary=platform.checker.summary()
                    )
                )
                if platform.checker.gaps():
                    raise DemoError("the platform saw a gap in the stream")
                self.say()
                title = _("what the resident (or her daughter) reads: lockgw audit show")
                self.say(f"── {title} " + "─" * max(0, 76 - len(title)))
                code, out = await self.sim.cli("audit", "show", "--config", str(self.sim.config))
                self.say(out.rstrip())
                code, out = await self.sim.cli("audit", "verify", "--config", str(self.sim.config))
                self.say("   " + _("audit chain: {result}").format(result=out.strip()))
                if code != 0:
                    raise DemoError("the audit chain does not verify")
                await self.resident_page(platform)
        return 0

    async def rosters(self) -> None:
        """Each organisation tells the gateway who it authorises here, by name (signed
        rosters): the resident's page and audit show name the carers, not pseudonyms."""
        _ = self.lang.gettext
        assert self.platform is not None
        self.scene("07:00", _("the care organisations send their rosters: who may come in, by name"))
        for org, carers in (
            (self.west, [self.anna, self.bram]),
            (self.oost, [self.chidi, self.dirk]),
            (self.alarm, [self.sanne]),
        ):
            await self.platform.send_roster(org.id, self.sim.roster(org, 1, carers))

            def applied(e: dict[str, Any], iss: str = org.id) -> bool:
                return e["type"] == "roster.applied" and e.get("iss") == iss

            await self.wait_event(applied, f"the roster of {org.id}")

    async def resident_page(self, platform: Platform) -> None:
        """The resident's own page: the gateway is back after its update; a one-time
        link for the resident's tablet; with --keep it stays up until interrupted."""
        _ = self.lang.gettext
        self.scene("07:00", _("the next morning: the gateway is back, and so is the resident's page"))
        before = platform.checker.last_seq
        await self.sim.start_gateway()
        await self.wait_event(
            lambda e: e["type"] == "gateway.started" and e["seq"] > before,
            "the gateway starting again",
        )
        code, out = await self.sim.cli(
            "resident-link", "--config", str(self.sim.config), "--no-qr", "--label", "demo"
        )
        link = next((w for w in out.split() if "/login?t=" in w), None)
        if code != 0 or link is None:
            raise DemoError(f"lockgw resident-link failed: {out.strip()}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        if self.keep:  # from here on Ctrl-C ends the serving, not the story
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
        self.say("   " + _("the resident's page (read only): {page}").format(page=self.page))
        self.say("   " + _("a one-time link to log in (lockgw resident-link): {link}").format(link=link))
        if not self.keep:
            self.say("   " + _("(run lockgw demo --keep DIR to keep it open and look at it)"))
            return
        self.say("   " + _("serving until you press Ctrl-C"))
        try:
            await stop.wait()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    async def day(self, broker: MosquittoBroker, out_text: str) -> None:
        assert self.platform is not None
        _ = self.lang.gettext
        self.scene("07:30", _("morning care: Anna (Thuiszorg West) lets herself in"))
        await self.at_door(self.anna, expect="ok")
        await self.pause()
        await self.lock_door("door", "open")
        self.say("   " + _("Anna goes in; the door closes behind her and the lock relocks itself"))
        await self.pause(0.5)
        await self.lock_door("door", "close")
        await self.wait_event(
            lambda e: e["type"] == "visit.ended" and e.get("sub") == self.anna.sub,
            "the end of Anna's visit (door shut and relocked)",
        )

        self.scene("09:10", _("Bram (wijkverpleegkundige) takes the house key from the key safe"))
        await self.at_door(self.bram, "open", expect="ok")
        await self.key_safe("key", "take")
        await self.pause()
        self.say("   " + _("... and puts it back after his visit"))
        await self.key_safe("key", "return")
        await self.key_safe("compartment", "close")
        await self.wait_event(
            lambda e: e["type"] == "visit.ended" and e.get("sub") == self.bram.sub,
            "the end of Bram's visit (key returned)",
        )

        self.scene("10:05", _("Anna sends her token to a friend's phone"))
        await self.at_door(
            self.anna,
            phone=Ed25519PrivateKey.generate(),
            expect="bad_proof",
            note=_(" — the token only works with Anna's own phone key"),
        )

        self.scene(
            "11:20",
            _("Dirk (Buurtzorg Oost) comes early: he is scheduled {hours}").format(hours=out_text),
        )
        await self.at_door(self.dirk, expect="outside_window")

        self.scene("12:00", _("Anna loses her phone: Thuiszorg West revokes her token"))
        await self.platform.send_revocation(
            self.west.id, self.sim.revocation(self.west, 1, cti=(self.anna.cti,))
        )
        await self.wait_event(lambda e: e["type"] == "revocation.applied", "the revocation")
        await self.at_door(self.anna, expect="revoked", note=_(" — whoever found the phone"))

        self.scene("14:30", _("Chidi (Buurtzorg Oost) takes the key and forgets to put it back"))
        await self.at_door(self.chidi, "open", expect="ok")
        await self.key_safe("key", "take")
        await self.key_safe("compartment", "close")
        self.say("   " + _("(the key safe warns after 10 s in this demo; after 30 minutes by default)"))
        await self.wait_event(
            lambda e: e["type"] == "keysafe.key_not_returned", "the key not returned", timeout=60
        )
        await self.wait_event(
            lambda e: e["type"] == "visit.ended" and e.get("sub") == self.chidi.sub,
            "the end of Chidi's visit",
            timeout=60,
        )
        self.say("   " + _("the care manager calls Chidi; the key goes back"))
        await self.key_safe("compartment", "open")
        await self.key_safe("key", "return")
        await self.key_safe("compartment", "close")

        self.scene("16:00", _("the lock's batteries are running down"))
        await self.lock_door("battery", "15")
        await self.wait_event(
            lambda e: e["type"] == "battery" and bool(e.get("low")), "a low battery", timeout=60
        )

        self.scene("18:15", _("the home's internet connection drops (the broker is unreachable)"))
        await broker.stop()
        before = self.platform.checker.last_seq
        self.say("   " + _("Bram comes for the evening round; the door does not need the internet:"))
        result = await self.phone(self.bram)
        self.say(
            "   "
            + _("{name}'s phone ← {verdict} ({reason})").format(
                name="Bram",
                verdict=_("GRANTED") if result.granted else _("DENIED"),
                reason=result.reason,
            )
            + _(" — offline")
        )
        await self.lock_door("door", "open")
        await self.pause(0.5)
        await self.lock_door("door", "close")
        await self.pause(2.0)
        self.say("   " + _("... the connection comes back; the platform catches up:"))
        await broker.start()
        await self.wait_event(
            lambda e: e.get("id") == result.event, "the events from the outage", timeout=60
        )
        await self.wait_event(
            lambda e: e["type"] == "visit.ended"
            and e["seq"] > before
            and e.get("sub") == self.bram.sub,
            "the end of Bram's evening visit",
            timeout=60,
        )
        gaps = self.platform.checker.gaps()
        self.say(
            "   "
            + _("caught up from #{seq}; gaps in the stream: {gaps}").format(
                seq=before + 1, gaps=gaps or _("none")
            )
        )

        self.scene("03:10", _("night: the resident's personal alarm goes off"))
        self.say("   " + _("Sanne, the night responder, is not scheduled now:"))
        await self.at_door(self.sanne, expect="outside_window")
        self.say("   " + _("the alarm centre raises the alarm for this home (a signed command)"))
        await self.command("alarm", state="raised")
        raised = await self.wait_event(
            lambda e: e["type"] == "command.result" and e.get("cmd") == "alarm", "the alarm"
        )
        self.platform_seq_alarm = int(raised["seq"])
        ev = await self.at_door(self.sanne, expect="ok")
        if not ev.get("emergency_outside_window"):
            raise DemoError("the emergency entry was not flagged")
        await self.pause()
        self.say("   " + _("the alarm centre opens the door remotely for the ambulance (signed command)"))
        raw = self.sim.command("unlock")
        await self.platform.send_command(raw)
        await self.wait_event(
            lambda e: e["type"] == "command.result" and e.get("cmd") == "unlock",
            "the remote unlock",
        )
        self.say("   " + _("someone on the network replays that very command:"))
        await self.platform.send_command(raw)
        await self.wait_event(
            lambda e: e["type"] == "command.result" and not e.get("ok"), "the replay refused"
        )
        await self.command("alarm", state="cleared")
        await self.wait_event(
            lambda e: e["type"] == "command.result"
            and e.get("cmd") == "alarm"
            and e["seq"] > self.platform_seq_alarm,
            "the alarm cleared",
        )


#: the adapter every phone of the ``--bluez`` day uses, one after another
PHONE_ADAPTER = "hci3"

DEMO_CONFIG = """
[visits]
no_entry_after = 20
relock_after = 20
max_duration = 600

[web]
enabled = true
address = "127.0.0.1"
port = {port}
"""


@contextlib.contextmanager
def _workdir(keep: str | None) -> Iterator[Path]:
    if keep:
        path = Path(keep).resolve()
        try:
            if path.exists() and not path.is_dir():
                raise DemoError(f"--keep {path}: not a directory")
            if path.exists() and any(path.iterdir()):
                if not (path / "lockgw.toml").exists():
                    raise DemoError(f"--keep {path}: not empty and not an earlier demo's folder")
                shutil.rmtree(path)  # an earlier demo's files: start afresh
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DemoError(f"--keep {path}: cannot use it ({exc.strerror})") from None
        yield path
        return
    path = Path(tempfile.mkdtemp(prefix="lockgw-demo-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def _demo(args: argparse.Namespace) -> int:
    try:
        with _workdir(args.keep) as workdir:
            return await _run_demo(workdir, args)
    except DemoError as exc:
        print(f"lockgw demo: {exc}", file=sys.stderr)
        return 1


def _bluez_env() -> Any:
    """The tests' BlueZ bed (``tests/bluez_env.py``: a private system bus and BlueZoo, a
    GPL test tool run as its own process), from this source checkout."""
    path = Path(__file__).resolve().parent.parent / "tests" / "bluez_env.py"
    spec = importlib.util.spec_from_file_location("lockgw_bluez_env", path)
    if not path.exists() or spec is None or spec.loader is None:
        raise DemoError(
            "--bluez runs from a source checkout (BlueZoo and its launcher are test tools, "
            "not packaged): git clone the repository and run scripts/demo --bluez"
        )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module.BluezEnv(adapters=4)


async def _run_demo(workdir: Path, args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as stack:
        bluez = None
        if args.bluez:
            env = _bluez_env()
            try:
                await asyncio.to_thread(env.start)
            except RuntimeError as exc:  # BluezEnvError: what is missing, in words
                raise DemoError(f"--bluez: {exc}") from None
            stack.callback(env.stop)
            bluez = env
        demo = Demo(workdir, fast=args.fast, lang=args.lang, keep=bool(args.keep), bluez=bluez)
        try:
            return await demo.run()
        except (DemoError, RuntimeError, ControlError) as exc:
            print(f"lockgw demo: {exc}", file=sys.stderr)
            for name in ("gateway", "sim-front-lock", "sim-front-keysafe"):
                log = workdir / f"{name}.log"
                if log.exists():
                    tail = log.read_text(errors="replace").splitlines()[-15:]
                    print(f"--- last lines of {name}.log:", *tail, sep="\n", file=sys.stderr)
            return 1


def register(subs: Any) -> None:
    p = subs.add_parser("demo", help="the whole system on one machine, narrated (lockgw demo)")
    p.add_argument("--fast", action="store_true", help="shorter pauses (tests, CI)")
    p.add_argument(
        "--keep",
        metavar="DIR",
        help="keep the demo's files (config, keys, journal) in DIR, and the gateway and the "
        "resident's page running until Ctrl-C",
    )
    p.add_argument(
        "--lang", choices=LANGUAGES, default=None, help="nl (default) or en: the narration, "
        "the page and audit show"
    )
    p.add_argument(
        "--bluez", action="store_true",
        help="over BlueZ's D-Bus API (BlueZoo's virtual adapters; from a source checkout): "
        "phones, gateway, lock and key safe talk Bluetooth through BlueZ",
    )
    p.set_defaults(handler=_demo)
