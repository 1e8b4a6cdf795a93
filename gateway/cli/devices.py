"""Installer commands: ``lockgw pair`` and ``lockgw devices`` (CONTRACT §6).

``lockgw pair --config F DEVICE_ID [--yes]`` puts one configured device through
pairing; when the device shows a pairing code (carelock), it shows the same code at
once and tells the installer to compare the two and confirm on the device (its button);
the device stores the pairing only then, and says so. Then it asks the installer whether
the codes matched (y/N; ``--yes`` for scripts, which also pairs a paired device again
without asking) and keeps the keys only then (``<data_dir>/devices/keys/<id>.json``,
mode 0600); then it connects with the new keys and prints what the device says it is.

``lockgw devices --config F [--json] [--probe] [--drivers]`` prints the installed base:
driver, model, serial, firmware, door, state, battery, last seen. Without ``--probe``
it reads the gateway's snapshot (``<data_dir>/devices/state.json``, written by the
running daemon) and touches no device; with ``--probe`` it connects to each device
itself (stop the daemon first: a BLE device takes one connection at a time).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from drivers.base import Driver
from drivers.registry import available
from gateway.cli._conventions import add_config_option
from gateway.config import Config, DeviceConfig, load_config
from gateway.devices.battery import classify
from gateway.devices.manager import DeviceManager, DriverLookup, make_driver
from gateway.devices.record import DeviceRecord, StateFile, describe_state, iso
from gateway.devices.secrets import FileSecretStore
from gateway.health import running_daemon
from gateway.words import ago, state_text
from protocols.errors import (
    ConfigError,
    DeviceError,
    DeviceUnavailable,
    LockgwError,
    PairingError,
    PairingNotConfirmed,
)
from protocols.events import Envelope, EventBody
from protocols.i18n import LANGUAGES, Lang, language

__all__ = ["register"]

#: tests replace the registry lookup (None = the driver registry)
DRIVERS: DriverLookup | None = None

PAIRING_HELP = """\
The device did not accept pairing: {detail}

Put it in pairing mode and run this command again within a few minutes:
  - a carelock lock or key safe: press the pairing button under the cover (pairing mode ends
    after 5 minutes or one pairing confirmed on the device);
  - a simulated device: lockgw-sim switch --control HOST:PORT pairing on
    (or start it with --pairing).
If it still refuses, the device may have refused pairing on purpose (too many
pairings, a service lock): reset it as its manual says."""

UNREACHABLE_HELP = """\
Cannot reach {device} at {address}: {detail}
Check that it has power (battery), is within range of the gateway, and that the
address in the config is right; then run this command again."""


@contextlib.contextmanager
def _logs_to_stderr(level: int = logging.WARNING) -> Iterator[None]:
    """Installer commands print for people (or JSON for scripts) on stdout; the drivers'
    log lines go to stderr, warnings and worse only."""
    old = structlog.get_config()
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=lambda *_args: structlog.PrintLogger(sys.stderr),
        cache_logger_on_first_use=False,
    )
    try:
        yield
    finally:
        structlog.configure(**old)


def _device(cfg: Config, device_id: str) -> DeviceConfig:
    dev = cfg.device(device_id)
    if dev is None:
        known = ", ".join(d.id for d in cfg.devices) or "none"
        raise ConfigError(
            str(cfg.source), [f"no device {device_id!r} in [[devices]] (configured: {known})"]
        )
    return dev


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        return False
    try:
        return input(f"{question} [y/N] ").strip().lower() in ("y", "yes", "j", "ja")
    except EOFError:
        return False


def _show_code(code: str) -> None:
    """The code as soon as the exchange made it; the device now waits for its button."""
    print(f"Pairing code: {code}")
    print(
        "Compare it with the code on the device's display. If they are the same, confirm it "
        "on the device (press its button); if not, reject it there. Waiting for the device ...",
        flush=True,
    )


def _code_confirmed(args: argparse.Namespace, dev: DeviceConfig) -> bool:
    """The installer compares the code on the screen with the device's (both sides derive
    it from the exchange: another code means something else answered) — the device's
    own confirmation is what stores the pairing there; this keeps the gateway from trusting
    something else that said "stored". ``--yes`` is for scripts that compare it themselves."""
    if args.yes:
        print("(--yes: not asked whether the device showed the same code)")
        return True
    if _confirm("Did the device show the same code?"):
        return True
    print(
        f"lockgw pair: {dev.id} is not paired and its new keys were thrown away. If the "
        f"device showed another code, something else answered at {dev.address}: check "
        "the address and what is near, then pair again.",
        file=sys.stderr,
    )
    return False


async def _forget(driver: Driver, store: FileSecretStore) -> None:
    """Keys from an exchange nobody vouched for are not kept; the device (if it was the
    device) is asked to forget the pairing too, so it takes none of its few places."""
    secrets = store.load(driver.device_id) or {}
    key_id = secrets.get("key_id")
    if isinstance(key_id, str):
        with contextlib.suppress(DeviceError):
            await driver.remove_pairing(key_id)
    store.delete(driver.device_id)


async def _verify(driver: Driver, timeout: float) -> DeviceRecord:
    """Connect with the stored keys; read identity and state; disconnect."""
    try:
        await driver.connect()
        async with asyncio.timeout(timeout):
            info = await driver.device_info()
        state = await driver.refresh()
    except TimeoutError as exc:
        raise DeviceUnavailable(driver.device_id, f"no answer in {timeout:g} s") from exc
    finally:
        with contextlib.suppress(DeviceError):
            await driver.disconnect()
    return DeviceRecord(
        id=driver.device_id,
        door="",
        driver=driver.name,
        address=driver.address,
        kind=driver.kind,
        info=info,
        online=True,
        connected=False,
        last_contact=time.time(),
        state=state,
        battery=state.battery,
    )


async def _pair(args: argparse.Namespace) -> int:
    with _logs_to_stderr():
        return await _pair_quiet(args)


async def _pair_quiet(args: argparse.Namespace) -> int:
    device_id = args.device or args.device_opt
    if not device_id:
        print("lockgw pair: name the device: lockgw pair --config F DEVICE_ID", file=sys.stderr)
        return 2
    cfg = load_config(args.config)
    dev = _device(cfg, device_id)
    pid = running_daemon(cfg.site.data_dir)
    if pid is not None:
        print(
            f"lockgw pair: the gateway service is running (pid {pid}) and holds the device's "
            "connection; stop it first (systemctl stop lockgw), pair, then start it again",
            file=sys.stderr,
        )
        return 1
    store = FileSecretStore(cfg.site.data_dir)
    if store.load(dev.id) is not None and not args.yes:
        when = store.paired_at(dev.id) or "earlier"
        if not _confirm(f"{dev.id} was paired at {when}. Pair it again?"):
            print(
                f"{dev.id} is already paired (at {when}); nothing changed. "
                "To pair it again (new keys), add --yes.",
                file=sys.stderr,
            )
            return 1
    driver = make_driver(dev, store, DRIVERS, adapter=cfg.bluetooth.adapter)
    if not args.yes and not sys.stdin.isatty() and driver.shows_pairing_code:
        print(
            f"lockgw pair: {dev.id} is not paired: there is no terminal to ask whether the "
            "device shows the same code. Run it in a terminal, or add --yes in a script "
            "that compares the code itself.",
            file=sys.stderr,
        )
        return 1
    driver.on_pairing_code = _show_code
    if driver.pairing_notice:
        print(f"Note: {driver.pairing_notice}", file=sys.stderr)
    print(f"Pairing {dev.id} ({dev.driver} at {dev.address}, door {dev.door}) ...")
    try:
        return await _pair_with(args, cfg, dev, store, driver)
    finally:
        with contextlib.suppress(DeviceError):
            await driver.disconnect()


async def _pair_with(
    args: argparse.Namespace,
    cfg: Config,
    dev: DeviceConfig,
    store: FileSecretStore,
    driver: Driver,
) -> int:
    try:
        await driver.pair()
    except PairingNotConfirmed as exc:
        print(f"lockgw pair: {dev.id} is not paired: {exc.detail}", file=sys.stderr)
        return 1
    except PairingError as exc:
        print(PAIRING_HELP.format(detail=exc.detail or "refused"), file=sys.stderr)
        return 1
    except DeviceUnavailable as exc:
        print(
            UNREACHABLE_HELP.format(device=dev.id, address=dev.address, detail=exc.detail),
            file=sys.stderr,
        )
        return 1
    store.mark_paired(dev.id)
    code = getattr(driver, "pairing_code", None)
    if code:
        print(f"The device confirmed pairing code {code}.")
        if not _code_confirmed(args, dev):
            await _forget(driver, store)
            return 1
    try:
        rec = await _verify(driver, dev.command_timeout)
    except DeviceError as exc:
        print(
            f"Paired, but the check with the new keys failed: {exc}\n"
            f"Run: lockgw devices --config {args.config} --probe",
            file=sys.stderr,
        )
        return 1
    info = rec.info
    assert info is not None
    print(
        f"Paired {dev.id}: {info.manufacturer} {info.model}, serial {info.serial}, "
        f"firmware {info.firmware}; {describe_state(rec.state)}"
        + (f", battery {rec.battery} %" if rec.battery is not None else "")
    )
    print(f"Keys stored in {store.path(dev.id)} (mode 0600).")
    # the installed base knows the device at once, before the gateway first runs
    state_file = StateFile(cfg.site.data_dir)
    _, snap = state_file.read()
    snap[dev.id] = _with_battery(
        rec.model_copy(
            update={"door": dev.door, "driver": dev.driver, "paired_at": store.paired_at(dev.id),
                    "online": None}
        ),
        dev,
    )
    try:
        state_file.write([snap[d.id] for d in cfg.devices if d.id in snap])
    except OSError as exc:
        print(f"(could not update {state_file.path}: {exc.strerror})", file=sys.stderr)
    return 0


def _base_record(dev: DeviceConfig, store: FileSecretStore) -> DeviceRecord:
    return DeviceRecord(
        id=dev.id,
        door=dev.door,
        driver=dev.driver,
        address=dev.address,
        paired_at=store.paired_at(dev.id),
    )


def _with_battery(rec: DeviceRecord, dev: DeviceConfig) -> DeviceRecord:
    if rec.battery is None or rec.state is None:
        return rec
    status = classify(
        rec.battery,
        low=dev.battery_low,
        critical=dev.battery_critical,
        device_flag=rec.state.battery_critical,
    )
    return rec.model_copy(update={"battery_status": status.value})


async def _probe_one(dev: DeviceConfig, store: FileSecretStore, adapter: str) -> DeviceRecord:
    base = _base_record(dev, store)
    if store.load(dev.id) is None:
        return base.model_copy(
            update={"online": False, "error": f"not paired; run: lockgw pair {dev.id}"}
        )
    try:
        driver = make_driver(dev, store, DRIVERS, adapter=adapter)
        rec = await _verify(driver, dev.command_timeout)
    except DeviceError as exc:
        return base.model_copy(update={"online": False, "error": exc.detail or str(exc)})
    except LockgwError as exc:  # an unknown driver name, a broken key file
        return base.model_copy(update={"online": False, "error": str(exc)})
    rec = rec.model_copy(
        update={"door": dev.door, "driver": dev.driver, "paired_at": base.paired_at}
    )
    return _with_battery(rec, dev)


def _table(records: list[DeviceRecord], now: float, lang: Lang, tz: ZoneInfo) -> str:
    _ = lang.gettext
    head = (
        _("DEVICE"), _("DOOR"), _("DRIVER"), _("MODEL"), _("SERIAL"), _("FIRMWARE"),
        _("STATE"), _("BATTERY"), _("LAST SEEN"),
    )  # fmt: skip
    rows = [head]
    for r in records:
        info = r.info
        battery = "?" if r.battery is None else f"{r.battery} %"
        if r.battery_status == "critical":
            battery += " " + _("CRITICAL")
        elif r.battery_status == "low":
            battery += " " + _("LOW")
        state = state_text(lang, r.state)
        if r.online is False:
            state = _("OFFLINE ({state})").format(state=state) if r.state else _("OFFLINE")
        rows.append((
            r.id,
            r.door,
            r.driver,
            info.model if info else "?",
            info.serial if info else "?",
            info.firmware if info else "?",
            state,
            battery,
            ago(lang, r.last_contact, now, tz),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    return "\n".join(lines)


def _warnings(records: list[DeviceRecord], lang: Lang) -> list[str]:
    _ = lang.gettext
    out = []
    for r in records:
        if r.paired_at is None:
            out.append(
                _("{id}: not paired — run: lockgw pair --config F {id}").format(id=r.id)
            )
        elif r.online is False:
            out.append(
                _("{id}: offline — {error}").format(id=r.id, error=r.error or _("no answer"))
            )
        elif r.error:
            out.append(f"{r.id}: {r.error}")
        if r.battery_status == "critical":
            out.append(
                _("{id}: battery critical ({level} %) — replace the batteries today").format(
                    id=r.id, level=r.battery
                )
            )
        elif r.battery_status == "low":
            left = (
                lang.ngettext(", about {n} day left", ", about {n} days left", round(r.days_left))
                .format(n=round(r.days_left))
                if r.days_left is not None
                else ""
            )
            out.append(
                _("{id}: battery low ({level} %{left}) — plan a battery change").format(
                    id=r.id, level=r.battery, left=left
                )
            )
    return out


class _PrintSink:
    """The technician's view of supervision: each event as one line (or JSON)."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.seq = 0

    async def emit(self, body: EventBody) -> Envelope:
        self.seq += 1
        now = time.time()
        env = Envelope(
            id=f"watch-{self.seq}", seq=self.seq, ts=iso(now) or "", site="watch", body=body
        )
        if self.as_json:
            print(json.dumps(env.to_wire()), flush=True)
        else:
            fields = body.model_dump(mode="json", exclude={"type", "device", "door"})
            detail = ", ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
            who = getattr(body, "device", "")
            print(f"{time.strftime('%H:%M:%S')}  {who:<16} {body.type:<26} {detail}", flush=True)
        return env


async def _watch(cfg: Config, args: argparse.Namespace) -> int:
    """Supervise the devices here, printing every event (the service must be stopped)."""
    print(f"Watching {len(cfg.devices)} device(s); Ctrl-C to stop.", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with DeviceManager.from_config(cfg, _PrintSink(args.json), drivers=DRIVERS):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(args.for_seconds):
                    await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return 0


async def _devices(args: argparse.Namespace) -> int:
    if args.drivers:
        for name in available():
            print(name)
        return 0
    cfg = load_config(args.config)
    if args.watch:
        return await _watch(cfg, args)
    lang = language(args.lang or cfg.site.language)
    tz = ZoneInfo(cfg.site.timezone)
    _ = lang.gettext
    store = FileSecretStore(cfg.site.data_dir)
    now = time.time()
    source: str
    if args.probe:
        records = list(
            await asyncio.gather(
                *(_probe_one(d, store, cfg.bluetooth.adapter) for d in cfg.devices)
            )
        )
        source = _("probed just now")
    else:
        written, snap = StateFile(cfg.site.data_dir).read()
        records = []
        for dev in cfg.devices:
            rec = snap.get(dev.id)
            if rec is None:
                records.append(_base_record(dev, store))
            else:
                records.append(rec.model_copy(
                    update={"door": dev.door, "driver": dev.driver, "address": dev.address,
                            "paired_at": store.paired_at(dev.id)}
                ))
        source = (
            _("the gateway's snapshot of {ago}").format(ago=ago(lang, written, now, tz))
            if written is not None
            else _("no snapshot yet (the gateway has not run here); add --probe to ask the devices")
        )
    if args.json:
        print(json.dumps([r.inventory() for r in records], indent=1))
        return 0
    print(_table(records, now, lang, tz))
    count = lang.ngettext("{n} device", "{n} devices", len(records)).format(n=len(records))
    print(f"\n{count}; {source}")
    warnings = _warnings(records, lang)
    for w in warnings:
        print(f"  ! {w}")
    return 0


def register(subs: Any) -> None:
    p = subs.add_parser("pair", help="pair a configured lock or key safe and store its keys")
    add_config_option(p)
    p.add_argument("device", metavar="DEVICE_ID", nargs="?", help="the id of a [[devices]] entry")
    p.add_argument("--device", dest="device_opt", metavar="DEVICE_ID", help="the same, as an option")
    p.add_argument(
        "--yes",
        action="store_true",
        help="do not ask: the pairing code is taken as confirmed, a paired device is paired again",
    )
    p.set_defaults(handler=_pair)

    d = subs.add_parser("devices", help="installed base: model, serial, state, battery")
    add_config_option(d)
    d.add_argument(
        "what",
        nargs="?",
        choices=("pairings",),
        help="pairings DEVICE: the pairings the device holds (--remove KEY_ID removes one)",
    )
    d.add_argument("target", metavar="DEVICE", nargs="?", help="with pairings: the device id")
    d.add_argument(
        "--remove", metavar="KEY_ID", help="with pairings: make the device forget this pairing"
    )
    d.add_argument("--json", action="store_true", help="machine-readable output")
    d.add_argument("--probe", action="store_true",
                   help="connect to each device instead of reading the gateway's snapshot")
    d.add_argument("--drivers", action="store_true", help="list the installed drivers")
    d.add_argument("--watch", action="store_true",
                   help="supervise the devices here and print every event (stop the service first)")
    d.add_argument("--lang", choices=LANGUAGES, default=None,
                   help="nl or en (default: [site] language)")
    d.add_argument("--for", dest="for_seconds", type=float, default=None, metavar="SECONDS",
                   help="with --watch: stop after this many seconds")
    d.set_defaults(handler=_devices_checked)


async def _devices_checked(args: argparse.Namespace) -> int:
    if args.what == "pairings":
        from gateway.cli.pairings import pairings_command

        with _logs_to_stderr(logging.ERROR):
            return await pairings_command(args, DRIVERS)
    if args.target or args.remove:
        print("lockgw devices: a device id and --remove go with: lockgw devices pairings DEVICE",
              file=sys.stderr)  # fmt: skip
        return 2
    # --watch prints every event itself: only errors from the log
    with _logs_to_stderr(logging.ERROR if args.watch else logging.WARNING):
        return await _devices(args)
