"""``lockgw audit show | verify | export``: the resident's and the auditor's views of the journal.

- ``show``: who entered, when, which door, why, in plain words (``--json`` for tools),
  day by day, in the site's language (``[site] language``, or ``--lang nl|en``), people
  named as their organisation's roster names them (:mod:`gateway.words`); by default
  only what a resident asks about (entries, refusals, visits, alarms, roster changes);
  ``--all`` shows every event.
- ``verify``: walks the hash chain; exit 0 intact, 1 broken (naming the first broken link).
  A restart after a damaged or lost journal (``journal.damaged`` / ``journal.lost``) is
  followed — the new rows link to the last row that verified — and named, with the seqs
  that are not in this journal.
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

from gateway.cli._conventions import add_config_option, default_config
from gateway.config import Config, load_config
from gateway.journal import Journal, journal_path
from gateway.words import People, describe
from protocols.errors import ConfigError
from protocols.events import Envelope
from protocols.i18n import LANGUAGES, Lang, first_upper, language

__all__ = ["register"]

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
    "roster.applied",
    "roster.over_limit",
)

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


def _config(args: argparse.Namespace) -> Config | None:
    if args.config:
        return load_config(args.config)
    return None if args.journal else load_config(default_config())


def _where(args: argparse.Namespace, cfg: Config | None = None) -> tuple[Path, str, ZoneInfo]:
    tz = ZoneInfo("Europe/Amsterdam")
    site = ""
    path: Path | None = Path(args.journal) if args.journal else None
    cfg = cfg or _config(args)
    if cfg is not None:
        tz, site = ZoneInfo(cfg.site.timezone), cfg.site.id
        path = path or journal_path(cfg.site.data_dir)
    if path is None:
        raise ConfigError("audit", ["give --config F (the site's config) or --journal PATH"])
    return path, site, tz


def _language(args: argparse.Namespace, cfg: Config | None) -> Lang:
    return language(args.lang or (cfg.site.language if cfg is not None else None))


async def _select(args: argparse.Namespace, j: Journal, tz: ZoneInfo, types: Any) -> list[Envelope]:
    since = parse_time(args.since, tz) if args.since else None
    until = parse_time(args.until, tz) if args.until else None
    newest = args.limit is not None
    events = await j.read(
        since=since, until=until, door=args.door, types=types, limit=args.limit, newest_first=newest
    )
    return list(reversed(events)) if newest else events


def _local(ts: str, tz: ZoneInfo) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone(tz)


async def _show(args: argparse.Namespace) -> int:
    cfg = _config(args)
    path, site, tz = _where(args, cfg)
    lang = _language(args, cfg)
    async with Journal(path, site, retention_days=1, read_only=True) as j:
        types = None if args.all else RESIDENT_TYPES
        events = await _select(args, j, tz, types)
    if args.json:
        print(json.dumps([e.to_wire() for e in events], ensure_ascii=False, indent=1))
        return 0
    if not events:
        print(lang.gettext("No entries recorded for this selection."))
        return 0
    people = await asyncio.to_thread(People.load, cfg) if cfg is not None else People()
    day = None
    for e in events:
        at = _local(e.ts, tz)
        if at.date() != day:
            if day is not None:
                print()
            day = at.date()
            print(first_upper(lang.date(at)))
        print(f"  {at:%H:%M:%S}  {describe(lang, e, people)}")
    return 0


async def _verify(args: argparse.Namespace) -> int:
    path, site, _ = _where(args)
    async with Journal(path, site, retention_days=1, read_only=True) as j:
        broken = await j.verify()
        head = await j.head()
        cp = await j.checkpoint()
        restarts = await j.restarts_recorded()
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
    for r in restarts:
        # not a silent break: the journal was started again and says so in its chain
        print(f"  documented restart: {r.describe()}")
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
    add_config_option(p, default=False)
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
    show.add_argument(
        "--lang", choices=LANGUAGES, default=None, help="nl or en (default: [site] language)"
    )
    show.set_defaults(handler=_show)
    verify = sub.add_parser("verify", help="check the audit chain; exit 0 intact, 1 broken")
    _common(verify, filters=False)
    verify.set_defaults(handler=_verify)
    export = sub.add_parser("export", help="every event as CSV or JSON")
    _common(export)
    export.add_argument("--format", choices=("csv", "json"), default="csv")
    export.add_argument("--out", help="write to this file instead of stdout")
    export.set_defaults(handler=_export)
