"""``lockgw audit show | verify | export``: the resident's and the auditor's views of the journal.

- ``show``: who entered, when, which door, why, in plain words (``--json`` for tools),
  day by day, in the site's language (``[site] language``, or ``--lang nl|en``), people
  named as their organisation's roster names them (:mod:`gateway.words`); by default
  only what a resident asks about (entries, refusals, visits, alarms, roster changes);
  ``--all`` shows every event.
- ``verify``: walks the hash chain, and checks the journal against every signed head it
  finds (beside the journal, and ``--head`` from the platform's copy): a journal cut
  short or rewritten after a head was signed is reported; exit 0 intact, 1 not.
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
import base64
import binascii
import csv
import io
import json
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway import site_keys
from gateway.cli._conventions import add_config_option, default_config
from gateway.config import Config, load_config
from gateway.journal import Journal, journal_path
from gateway.journal.heads import check_head, heads_path, read_heads
from gateway.words import People, describe
from protocols.errors import ConfigError, KeyFileError
from protocols.events import Envelope
from protocols.i18n import LANGUAGES, Lang, first_upper, language
from protocols.journal_head import HeadError, SignedHead, parse_head

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
    cfg = _config(args)
    path, site, _ = _where(args, cfg)
    data_dir = cfg.site.data_dir if cfg is not None and not args.journal else path.parent
    key, key_problem = _site_public_key(args, data_dir)
    given = [_read_given_head(text) for text in args.head or ()]
    local: list[tuple[str, SignedHead]] = []
    warnings: list[str] = []
    local_file = heads_path(path)
    try:
        local = [(f"{local_file}", h) for h in read_heads(local_file)]
    except HeadError as exc:
        warnings.append(f"the signed heads beside the journal ({local_file}) {exc}; not used")
    async with Journal(path, site, retention_days=1, read_only=True) as j:
        broken = await j.verify()
        head = await j.head()
        cp = await j.checkpoint()
        restarts = await j.restarts_recorded()
        last_seq = j.last_seq
        heads: list[tuple[str, SignedHead]] = []
        if key is None and local:
            warnings.append(f"the signed heads beside the journal were not checked: {key_problem}")
            local = []
        for source, h in [*given, *local]:
            problem = _head_problem(h, site, key, key_problem)
            if problem is not None:
                print(f"audit chain NOT PROVEN: the signed head from {source} {problem}")
                return 1
            heads.append((source, h))
        links = {h.seq: await j.link_at(h.seq) for _, h in heads}
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
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
    checkpoint = (cp.seq, cp.hash) if cp is not None else None
    checks = [
        (source, h, check_head(h, last_seq=last_seq, link=links[h.seq], checkpoint=checkpoint,
                               restarts=restarts))
        for source, h in heads
    ]
    failed = [(source, c) for source, _, c in checks if not c.ok]
    if failed:
        for source, c in failed:
            print(f"audit chain NOT WHOLE: {c.text} (signed head from {source})")
        print("Keep this file and the platform's copy of the events, and report it.")
        return 1
    if not checks:
        where = "none beside the journal" + (f"; {key_problem}" if key_problem else "")
        print(
            f"tail not proven: no signed head ({where}); give the platform's copy of the "
            "newest head with --head FILE to prove no event was cut from the end"
        )
        return 0
    source, newest, c = max(checks, key=lambda x: (x[1].seq, x[1].ts))
    after = last_seq - newest.seq
    tail = f"; {after} newer event(s) not yet covered by a signed head" if after > 0 else ""
    print(f"tail proven: {c.text}, signed by site key {newest.kid} (from {source}){tail}")
    return 0


def _site_public_key(args: argparse.Namespace, data_dir: Path) -> tuple[bytes | None, str | None]:
    """The raw public key heads are checked with: ``--key``, else the site's own."""
    if args.key:
        return _parse_key(args.key), None
    try:
        return site_keys.load(data_dir).sign.public, None
    except KeyFileError as exc:
        return None, f"no site key to check signatures with ({exc}); give --key"


def _parse_key(text: str) -> bytes:
    """``--key``: the public key as ``lockgw site-key show`` prints it, or a PEM file."""
    p = Path(text)
    if p.is_file():
        from gateway.keys import load_public_key

        raw: bytes = load_public_key(p).public_bytes(Encoding.Raw, PublicFormat.Raw)
        return raw
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, binascii.Error):
        raw = b""
    if len(raw) != 32:
        raise ConfigError("audit", [f"--key {text!r}: not a file, nor a 32-byte base64url key"])
    return raw


def _read_given_head(text: str) -> tuple[str, SignedHead]:
    """``--head``: a head (JSON or a file holding it), the retained status holding one,
    or a heads file (its newest)."""
    source = "--head (JSON)"
    raw = text
    if not text.lstrip().startswith("{"):
        source = f"--head {text}"
        try:
            raw = Path(text).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError("audit", [f"{source}: cannot be read ({exc})"]) from None
    try:
        obj = json.loads(raw)
        if isinstance(obj, dict) and isinstance(obj.get("heads"), list) and obj["heads"]:
            obj = obj["heads"][-1]
        elif isinstance(obj, dict) and isinstance(obj.get("head"), dict):
            obj = obj["head"]  # the retained status as the platform kept it
        return source, parse_head(obj)
    except (ValueError, HeadError) as exc:
        raise ConfigError("audit", [f"{source}: not a signed journal head ({exc})"]) from None


def _head_problem(
    h: SignedHead, site: str, key: bytes | None, key_problem: str | None
) -> str | None:
    if site and h.site != site:
        return f"is for site {h.site!r}, not {site!r}"
    if key is None:
        return f"cannot be checked: {key_problem}"
    try:
        h.verify(key)
    except HeadError as exc:
        return f"is not valid: {exc}"
    return None


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
    verify = sub.add_parser(
        "verify", help="check the audit chain and its signed heads; exit 0 intact, 1 not"
    )
    _common(verify, filters=False)
    verify.add_argument(
        "--head",
        action="append",
        metavar="FILE|JSON",
        help="a signed journal head kept elsewhere (the platform's copy: the retained "
        "status, its head, or a heads file); repeatable",
    )
    verify.add_argument(
        "--key",
        metavar="KEY|FILE",
        help="the site's public signing key to check heads with, as lockgw site-key show "
        "prints it (write --key=KEY: it may start with '-') or a PEM file (default: the "
        "site's own, <data_dir>/site/sign.key)",
    )
    verify.set_defaults(handler=_verify)
    export = sub.add_parser("export", help="every event as CSV or JSON")
    _common(export)
    export.add_argument("--format", choices=("csv", "json"), default="csv")
    export.add_argument("--out", help="write to this file instead of stdout")
    export.set_defaults(handler=_export)
