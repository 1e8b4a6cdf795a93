"""``lockgw audit show | verify | export``: the resident's and the auditor's views of the journal.

- ``show``: who entered, when, which door, why, in plain words (``--json`` for tools);
  by default only what a resident asks about (entries, refusals, visits, alarms);
  ``--all`` shows every event.
- ``verify``: walks the hash chain; exit 0 intact, 1 broken (naming the first broken link).
- ``export --format csv|json``: every event matching the filters, for an auditor.

Each takes ``--config F`` (the journal in the config's ``data_dir``, times in the site's
zone) and/or ``--journal PATH``. The journal is opened read-only: the daemon may run.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from gateway.config import load_config
from gateway.journal import Journal, journal_path
from protocols.errors import ConfigError
from protocols.events import Envelope

__all__ = ["describe", "register"]

#: what a resident asks about: who came in, who was refused, visits, alarms
RESIDENT_TYPES = (
    "access.granted",
    "access.denied",
    "access.suspicious",
    "visit.started",
    "visit.ended",
    "alarm.raised",
    "alarm.cleared",
    "door.left_open",
    "keysafe.key_not_returned",
)

_REASONS = {
    "ok": "allowed",
    "malformed": "the key could not be read",
    "bad_signature": "the key is not genuine",
    "unknown_issuer": "the key comes from an organisation this home does not know",
    "expired": "the key has expired",
    "not_yet_valid": "the key is not valid yet",
    "wrong_site": "the key is for another home",
    "wrong_door": "the key is not for this door",
    "outside_window": "outside the agreed times",
    "revoked": "the key was withdrawn",
    "bad_proof": "the phone is not the one the key was given to",
    "nonce_reused": "a replayed attempt",
    "role_not_permitted": "this role may not enter",
    "purpose_not_permitted": "not allowed for this kind of care",
    "issuer_not_consented": "the resident has not agreed to this organisation",
    "revocation_stale": "the organisation's list of withdrawn keys is out of date",
    "rate_limited": "too many attempts",
    "clock_untrusted": "the gateway's clock could not be trusted",
    "device_unavailable": "the lock did not answer",
    "device_failed": "the lock could not do it",
}

_PURPOSE = {
    "planned": "planned care",
    "emergency": "emergency (alarm)",
    "remote": "remote opening (signed command)",
}


def _who(w: dict[str, Any]) -> str:
    parts = [p for p in (w.get("role"), w.get("sub")) if p]
    who = " ".join(parts) if parts else (w.get("actor") or "someone")
    if w.get("iss"):
        who += f" of {w['iss']}"
    return str(who)


def _door(w: dict[str, Any]) -> str:
    return f"{w['door']} door" if w.get("door") else "the gateway"


def describe(env: Envelope) -> str:
    """One event in words a resident understands (no time; the caller adds it)."""
    w = env.to_wire()
    t = env.type
    if t == "access.granted":
        how = (
            "by phone"
            if w.get("channel") == "phone"
            else f"remotely by {w.get('actor') or 'the platform'}"
        )
        why = _PURPOSE.get(str(w.get("purpose")), str(w.get("purpose") or "no purpose given"))
        flag = " (outside the agreed times, emergency)" if w.get("emergency_outside_window") else ""
        return f"{_door(w)}: OPENED ({w.get('action')}) for {_who(w)}, {why}, {how}{flag}"
    if t == "access.denied":
        reason = _REASONS.get(str(w.get("reason")), str(w.get("reason")))
        return f"{_door(w)}: REFUSED for {_who(w)}: {reason}"
    if t == "access.suspicious":
        return f"{_door(w)}: {w['count']} refused attempts within {w['window'] // 60} min"
    if t == "visit.started":
        return f"{_door(w)}: visit began by {_who(w)}"
    if t == "visit.ended":
        mins = f" after {round((w.get('duration_s') or 0) / 60)} min" if w.get("duration_s") else ""
        after = []
        if w.get("relocked") is True:
            after.append("door locked again")
        if w.get("key_returned") is True:
            after.append("key returned")
        problems = [p.replace("_", " ") for p in w.get("problems") or []]
        tail = "; ".join(after + [f"problem: {p}" for p in problems])
        return f"{_door(w)}: visit by {_who(w)} ended{mins}" + (f" ({tail})" if tail else "")
    if t in ("alarm.raised", "alarm.cleared"):
        return f"alarm {t.split('.')[1]} by {w.get('actor')}" + (
            f": {w['reason']}" if w.get("reason") else ""
        )
    if t == "door.left_open":
        return f"{_door(w)}: left open for {round(w['seconds'] / 60)} min"
    if t == "keysafe.key_not_returned":
        return f"{_door(w)}: key not returned to the key safe after {w['minutes']} min"
    fields = {k: v for k, v in w.items() if k not in ("v", "id", "seq", "ts", "site", "type")}
    return f"{t}: " + ", ".join(f"{k}={v}" for k, v in fields.items() if v not in (None, [], ""))


_REL = re.compile(r"^(\d+)\s*([mhdw])$")


def parse_time(text: str, tz: ZoneInfo, now: datetime | None = None) -> datetime:
    """``7d``, ``12h``, ``30m``, ``2w`` ago; or an ISO date/time (in the site's zone if naive)."""
    text = text.strip()
    m = _REL.match(text)
    if m:
        n, unit = int(m.group(1)), m.group(2)
        delta = {
            "m": timedelta(minutes=n),
            "h": timedelta(hours=n),
            "d": timedelta(days=n),
            "w": timedelta(weeks=n),
        }
        return (now or datetime.now(UTC)) - delta[unit]
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"cannot read the time {text!r}: use e.g. 2026-11-01, 2026-11-01T08:00 or 7d / 12h"
        ) from None
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=tz)


def _where(args: argparse.Namespace) -> tuple[Path, str, ZoneInfo]:
    tz = ZoneInfo("Europe/Amsterdam")
    site = ""
    path: Path | None = Path(args.journal) if args.journal else None
    if args.config:
        cfg = load_config(args.config)
        tz, site = ZoneInfo(cfg.site.timezone), cfg.site.id
        path = path or journal_path(cfg.site.data_dir)
    if path is None:
        raise ConfigError("audit", ["give --config F (the site's config) or --journal PATH"])
    return path, site, tz


async def _select(args: argparse.Namespace, j: Journal, tz: ZoneInfo, types: Any) -> list[Envelope]:
    since = parse_time(args.since, tz) if args.since else None
    until = parse_time(args.until, tz) if args.until else None
    newest = args.limit is not None
    events = await j.read(
        since=since, until=until, door=args.door, types=types, limit=args.limit, newest_first=newest
    )
    return list(reversed(events)) if newest else events


def _local(ts: str, tz: ZoneInfo) -> str:
    dt = datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone(tz)
    return dt.strftime("%a %d %b %Y %H:%M:%S")


async def _show(args: argparse.Namespace) -> int:
    path, site, tz = _where(args)
    async with Journal(path, site, retention_days=1, read_only=True) as j:
        types = None if args.all else RESIDENT_TYPES
        events = await _select(args, j, tz, types)
    if args.json:
        print(json.dumps([e.to_wire() for e in events], ensure_ascii=False, indent=1))
        return 0
    if not events:
        print("No entries recorded for this selection.")
        return 0
    for e in events:
        print(f"{_local(e.ts, tz)}  {describe(e)}")
    return 0


async def _verify(args: argparse.Namespace) -> int:
    path, site, _ = _where(args)
    async with Journal(path, site, retention_days=1, read_only=True) as j:
        broken = await j.verify()
        head = await j.head()
        cp = await j.checkpoint()
    if broken is not None:
        print(
            f"audit chain BROKEN at seq {broken.seq}: {broken.problem}. "
            "Events from there on cannot be trusted; keep this file and report it."
        )
        return 1
    start = (cp.seq + 1) if cp is not None else 1
    if head is None:
        print("audit chain intact: no events" + (f" after seq {cp.seq} (retention)" if cp else ""))
    else:
        since = f" (older events removed by retention up to seq {cp.seq})" if cp else ""
        print(f"audit chain intact: seq {start}..{head[0]}{since}; head {head[1]}")
    return 0


_CSV_COLUMNS = (
    "seq",
    "id",
    "ts",
    "type",
    "door",
    "device",
    "iss",
    "sub",
    "role",
    "purpose",
    "action",
    "channel",
    "reason",
    "token_id",
    "actor",
    "request_id",
)


async def _export(args: argparse.Namespace) -> int:
    path, site, tz = _where(args)
    async with Journal(path, site, retention_days=1, read_only=True) as j:
        events = await _select(args, j, tz, None)
    out = io.StringIO()
    if args.format == "json":
        json.dump([e.to_wire() for e in events], out, ensure_ascii=False)
        out.write("\n")
    else:
        writer = csv.writer(out)
        writer.writerow([*_CSV_COLUMNS, "details"])
        for e in events:
            w = e.to_wire()
            rest = {k: v for k, v in w.items() if k not in _CSV_COLUMNS and k not in ("v", "site")}
            writer.writerow(
                [_cell(w.get(c)) for c in _CSV_COLUMNS] + [json.dumps(rest, ensure_ascii=False)]
            )
    if args.out:
        await asyncio.to_thread(Path(args.out).write_text, out.getvalue(), encoding="utf-8")
        print(f"{len(events)} events written to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(out.getvalue())
    return 0


def _cell(v: Any) -> str:
    return "" if v is None else str(v)


def _common(p: argparse.ArgumentParser, *, filters: bool = True) -> None:
    p.add_argument("--config", help="the site's config (journal in its data_dir)")
    p.add_argument("--journal", help="a journal file (instead of, or overriding, the config's)")
    if filters:
        p.add_argument("--since", help="from: 2026-11-01, 2026-11-01T08:00, or 7d / 12h ago")
        p.add_argument("--until", help="until (same forms)")
        p.add_argument("--door", help="one door only")
        p.add_argument("--limit", type=int, help="only the latest N")


def register(subs: Any) -> None:
    p = subs.add_parser("audit", help="who entered when: the resident's and the auditor's views")
    sub = p.add_subparsers(dest="audit_cmd", required=True, metavar="ACTION")
    show = sub.add_parser("show", help="who entered, when, which door, why (plain words)")
    _common(show)
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.add_argument("--all", action="store_true", help="every event, not only entries")
    show.set_defaults(handler=_show)
    verify = sub.add_parser("verify", help="check the audit chain; exit 0 intact, 1 broken")
    _common(verify, filters=False)
    verify.set_defaults(handler=_verify)
    export = sub.add_parser("export", help="every event as CSV or JSON")
    _common(export)
    export.add_argument("--format", choices=("csv", "json"), default="csv")
    export.add_argument("--out", help="write to this file instead of stdout")
    export.set_defaults(handler=_export)
