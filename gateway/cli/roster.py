"""``lockgw roster``: the signed list of who an organisation authorises at one site.

An organisation keeps a roster file (JSON, unsigned) per site; ``lockgw token issue
--roster FILE --name "Anna, verzorgende"`` writes each new token's entry into it, and
``lockgw roster remove`` takes people out. ``lockgw roster sign`` turns the file into the
signed roster (CONTRACT §5 addition, ``protocols.control.Roster``) that the platform
publishes, retained, on ``lockgw/v1/org/<issuer>/rosters/<site>``::

    lockgw token issue ... --roster rosters/site-3f9c.json --name "Anna, verzorgende"
    lockgw roster sign --key keys/org.key --file rosters/site-3f9c.json --seq 7
    lockgw roster inspect <ROSTER> [--pub keys/org.pub]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from gateway.cli.token import UsageError, read_blob
from gateway.keys import load_private_key, load_public_key, read_regular_file
from protocols.control import MAX_ROSTER_ENTRIES, Roster, RosterEntry
from protocols.errors import ControlMessageError, KeyFileError
from protocols.token import TokenClaims, b64encode

__all__ = ["add_token_entry", "read_roster_file", "register"]


#: a roster file is JSON text of at most MAX_ROSTER_ENTRIES short entries
_MAX_FILE = 16 * 1024 * 1024


def read_roster_file(path: Path) -> dict[str, Any]:
    """The roster file, or an empty one when it does not exist yet."""
    if not path.exists() and not path.is_symlink():
        return {"iss": None, "site": None, "entries": []}
    try:
        raw, _ = read_regular_file(path, _MAX_FILE, "roster file")
        data = json.loads(raw.decode("utf-8"))
    except ValueError as exc:  # also UnicodeDecodeError, JSONDecodeError
        raise UsageError(f"cannot read the roster file {path}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
        raise UsageError(f"{path} is not a roster file (an object with an entries array)")
    return data


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _entries(path: Path, data: dict[str, Any]) -> list[RosterEntry]:
    out = []
    for n, e in enumerate(data["entries"]):
        try:
            out.append(RosterEntry.from_json(e))
        except ControlMessageError as exc:
            raise UsageError(f"{path}: entry {n + 1}: {exc.detail}") from None
    return out


def add_token_entry(path: Path, claims: TokenClaims, name: str) -> int:
    """Put a token's entry into the roster file (replacing one with the same token id);
    returns the number of entries. UsageError when the file is for another issuer or site."""
    data = read_roster_file(path)
    for key, value in (("iss", claims.iss), ("site", claims.aud)):
        if data.get(key) not in (None, value):
            raise UsageError(f"{path} is the roster of {key} {data[key]!r}, not {value!r}")
        data[key] = value
    try:
        entry = RosterEntry(
            sub=claims.sub,
            name=name,
            role=claims.role,
            purposes=tuple(claims.purposes),
            doors=tuple(claims.doors),
            cti=claims.cti,
            windows=tuple(claims.windows),
            nbf=claims.nbf,
            exp=claims.exp,
        )
        RosterEntry.from_cbor(entry.to_cbor())  # the gateway's own checks (name length ...)
    except ControlMessageError as exc:
        raise UsageError(f"--name: {exc.detail}") from None
    entries = [e for e in _entries(path, data) if e.cti != claims.cti]
    entries.append(entry)
    if len(entries) > MAX_ROSTER_ENTRIES:
        raise UsageError(f"a roster holds at most {MAX_ROSTER_ENTRIES} entries")
    data["entries"] = [e.to_json() for e in entries]
    _write(path, data)
    return len(entries)


def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="ascii")


def _fail(args: argparse.Namespace, msg: str, code: int = 2) -> int:
    print(f"lockgw roster {args.roster_command}: {msg}", file=sys.stderr)
    return code


async def _sign(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        data = read_roster_file(path)
        if data.get("iss") is None and not data["entries"]:
            raise UsageError(f"{path} does not exist or lists nobody")
        entries = _entries(path, data)
        iss = args.iss or data.get("iss")
        site = args.site or data.get("site")
        if not iss or not site:
            raise UsageError("the file names no issuer or site: give --iss and --site")
    except UsageError as exc:
        return _fail(args, str(exc))
    key = load_private_key(args.key)
    try:
        raw = Roster.new(iss, site, args.seq, entries).sign(key)
    except ControlMessageError as exc:
        return _fail(args, f"cannot sign this roster: {exc.detail}", 1)
    text = b64encode(raw)
    if args.out:
        _write_text(Path(args.out), text + "\n")
    else:
        print(text)
    people = len({e.sub for e in entries})
    print(
        f"roster {args.seq} of {iss} for {site}: {people} people, {len(entries)} entries, "
        f"{len(raw)} bytes",
        file=sys.stderr,
    )
    return 0


async def _remove(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        data = read_roster_file(path)
        entries = _entries(path, data)
    except UsageError as exc:
        return _fail(args, str(exc))
    ctis = set()
    for c in args.cti:
        try:
            ctis.add(bytes.fromhex(c))
        except ValueError:
            return _fail(args, f"--cti {c!r} is not hex")
    keep = [e for e in entries if e.sub not in args.sub and e.cti not in ctis]
    if len(keep) == len(entries):
        return _fail(args, "no entry matched; nothing changed", 1)
    data["entries"] = [e.to_json() for e in keep]
    _write(path, data)
    print(f"{len(entries) - len(keep)} entries removed; {len(keep)} left", file=sys.stderr)
    return 0


async def _inspect(args: argparse.Namespace) -> int:
    try:
        raw = read_blob(args.roster)
    except UsageError as exc:
        return _fail(args, str(exc))
    try:
        roster = Roster.decode(raw)
    except ControlMessageError as exc:
        return _fail(args, f"not a valid roster ({exc.reason.value}): {exc.detail}", 1)
    out: dict[str, Any] = {
        "iss": roster.iss,
        "site": roster.site,
        "seq": roster.seq,
        "iat": roster.iat,
        "entries": [e.to_json() for e in roster.entries],
        "verified": None,
    }
    if args.pub is not None:
        try:
            pub = load_public_key(args.pub)
        except KeyFileError as exc:
            return _fail(args, str(exc), 1)
        try:
            Roster.verify(raw, {roster.iss: pub}, site=roster.site)
        except ControlMessageError as exc:
            out["verified"] = False
            print(json.dumps(out, indent=2, ensure_ascii=False))
            return _fail(args, f"signature check failed ({exc.reason.value}): {exc.detail}", 1)
        out["verified"] = True
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return 0


def register(subs: Any) -> None:
    p = subs.add_parser("roster", help="who an organisation authorises at a site: sign, inspect")
    sub = p.add_subparsers(dest="roster_command", required=True, metavar="ACTION")
    s = sub.add_parser("sign", help="sign a roster file; prints the signed roster, base64url")
    s.add_argument("--key", required=True, help="the issuer's private key (PEM, mode 0600)")
    s.add_argument("--file", required=True, help="the roster file (JSON; token issue --roster)")
    s.add_argument("--seq", required=True, type=int, help="higher than the last one published")
    s.add_argument("--iss", default=None, help="issuer id (default: the file's)")
    s.add_argument("--site", default=None, help="site id (default: the file's)")
    s.add_argument("--out", default=None, help="write to this file instead of stdout")
    s.set_defaults(handler=_sign)
    r = sub.add_parser("remove", help="take people (--sub) or tokens (--cti) off a roster file")
    r.add_argument("--file", required=True)
    r.add_argument("--sub", action="append", default=[], help="holder id; repeat for more")
    r.add_argument("--cti", action="append", default=[], help="token id (hex); repeat for more")
    r.set_defaults(handler=_remove)
    i = sub.add_parser("inspect", help="print a signed roster as JSON")
    i.add_argument("roster", help="base64url, - for stdin, or @FILE")
    i.add_argument("--pub", default=None, help="verify the signature with this public key")
    i.set_defaults(handler=_inspect)
