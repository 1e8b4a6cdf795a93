"""``lockgw token issue`` and ``lockgw token inspect`` (CONTRACT §6).

Example::

    lockgw token issue --key keys/org.key --iss org-thuiszorg-west --sub carer-17 \\
        --site site-3f9c2a7d --door front --holder-pub phone.pub --role verzorgende \\
        --purpose planned --window "mon-fri 07:00-10:00" --valid-for 30d
    lockgw token inspect <TOKEN> [--pub keys/org.pub]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.keys import load_private_key, load_public_key, read_regular_file
from protocols.errors import KeyFileError, ProtocolError
from protocols.token import b64decode, b64encode, decode_token, issue_token, verify_token
from protocols.windows import WindowSpecError, windows_from_specs

__all__ = ["UsageError", "parse_duration", "parse_time", "read_blob", "register"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class UsageError(ValueError):
    """Bad command-line input; the message says what to type instead."""


def parse_duration(text: str) -> int:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` or plain seconds."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhdw]?)\s*", text)
    if m is None or int(m.group(1)) <= 0:
        raise UsageError(f"duration {text!r} is not like 30d, 12h, 90m, 45s or 2w")
    return int(m.group(1)) * _UNITS[m.group(2) or "s"]


def parse_time(text: str, tz: str) -> int:
    """Unix seconds, or ISO 8601 (``2026-12-01``, ``2026-12-01T08:00``, with ``Z`` or an
    offset); a time without offset is local time in ``tz``."""
    if re.fullmatch(r"\d{9,11}", text.strip()):
        return int(text)
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"time {text!r} is not unix seconds or ISO 8601 (2026-12-01T08:00)"
        ) from None
    if dt.tzinfo is None:
        try:
            dt = dt.replace(tzinfo=ZoneInfo(tz))
        except (ZoneInfoNotFoundError, ValueError):
            raise UsageError(f"unknown time zone {tz!r}") from None
    return int(dt.timestamp())


def read_blob(text: str) -> bytes:
    """A token or control message given as base64url, ``-`` (stdin) or ``@file``
    (base64url text or raw COSE bytes)."""
    if text == "-":
        text = sys.stdin.read()
    elif text.startswith("@"):
        try:
            data, _ = read_regular_file(Path(text[1:]), 1024 * 1024, "token or message file")
        except ValueError as exc:
            raise UsageError(f"{text[1:]}: {exc}") from None
        if data[:1] in (b"\xd8", b"\xd2"):  # a CBOR tag: raw COSE bytes
            return data
        text = data.decode("ascii", "replace")
    try:
        return b64decode(text)
    except ValueError:
        raise UsageError("not base64url text (paste the token exactly as printed)") from None


def _holder_key(value: str) -> Ed25519PublicKey | bytes:
    if Path(value).exists():
        return load_public_key(value)
    try:
        raw = b64decode(value)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise UsageError(
            f"--holder-pub {value!r}: not a public key file nor a base64url raw 32-byte key"
        )
    return raw


def register(subs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tok = subs.add_parser("token", help="issue or inspect credential tokens")
    tsubs = tok.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    iss = tsubs.add_parser("issue", help="sign a token for one carer's phone; prints base64url")
    iss.add_argument("--key", required=True, help="the issuer's private key (PEM, mode 0600)")
    iss.add_argument("--iss", required=True, help="issuer id, as in the site's config")
    iss.add_argument("--sub", required=True, help="pseudonymous holder id (no names)")
    iss.add_argument("--site", required=True, help="site id (the token's aud)")
    iss.add_argument("--door", action="append", required=True, help="door id; repeat for more")
    iss.add_argument(
        "--holder-pub", required=True, help="the phone's public key: .pub file or base64url"
    )
    iss.add_argument(
        "--role", required=True, help="e.g. wijkverpleegkundige, verzorgende, alarmopvolger"
    )
    iss.add_argument(
        "--purpose",
        action="append",
        required=True,
        choices=["planned", "emergency"],
        help="planned or emergency; repeat for both",
    )
    iss.add_argument(
        "--window",
        action="append",
        default=[],
        help='time window in the site\'s zone, e.g. "mon-fri 07:00-10:00"; repeat for more',
    )
    iss.add_argument("--not-before", default=None, help="unix seconds or ISO 8601 (default: now)")
    iss.add_argument("--valid-for", required=True, help="lifetime from not-before: 30d, 12h, 90m")
    iss.add_argument("--timezone", default="Europe/Amsterdam", help="zone for times without offset")
    iss.add_argument("--cti", default=None, help="token id, 32 hex digits (default: random)")
    iss.add_argument(
        "--roster",
        default=None,
        metavar="FILE",
        help="also write the token's entry into this roster file (lockgw roster sign)",
    )
    iss.add_argument(
        "--name",
        default=None,
        help='with --roster: the name the resident sees, e.g. "Anna, verzorgende"',
    )
    iss.add_argument(
        "--site-keys",
        default=None,
        metavar="FILE",
        help="the site's public keys (JSON of lockgw site-key show --phone); with --bundle",
    )
    iss.add_argument(
        "--bundle",
        default=None,
        metavar="OUT",
        help="also write the phone's credential bundle here: the token and the site's keys "
        "(JSON, mode 0600; lockgw-sim phone unlock --bundle reads it)",
    )
    iss.set_defaults(handler=_issue)

    ins = tsubs.add_parser("inspect", help="print a token's claims as JSON")
    ins.add_argument("token", help="base64url, - for stdin, or @FILE")
    ins.add_argument("--pub", default=None, help="verify the signature with this public key")
    ins.set_defaults(handler=_inspect)


def _fail(args: argparse.Namespace, msg: str, code: int = 2) -> int:
    name = " ".join(x for x in (args.command, getattr(args, "token_command", None)) if x)
    print(f"lockgw {name}: {msg}", file=sys.stderr)
    return code


def _site_keys(path: str, site: str) -> dict[str, str]:
    """The site keys a phone needs, checked: the site id matches the token's, the two
    public keys and the advertising key are 32 bytes of base64url."""
    try:
        data, _ = read_regular_file(Path(path), 64 * 1024, "site keys file")
        keys = json.loads(data)
    except ValueError as exc:
        raise UsageError(f"--site-keys {path}: {exc}") from None
    if not isinstance(keys, dict):
        raise UsageError(f"--site-keys {path}: not a JSON object (lockgw site-key show --phone)")
    if keys.get("site") != site:
        raise UsageError(
            f"--site-keys {path} is for site {keys.get('site')!r}, the token for {site!r}"
        )
    if "advert_key" not in keys:  # the quiet advertisement's key (protocols/advert.py)
        print(
            f"lockgw token issue: warning: --site-keys {path} has no advert_key (printed by "
            "an older gateway): this phone cannot find the hub over BLE; print the keys "
            "again with lockgw site-key show --phone",
            file=sys.stderr,
        )
    out = {"site": site}
    for name in ("sign_key", "exchange_key", "advert_key"):
        value = keys.get(name)
        if value is None and name == "advert_key":
            continue
        try:
            ok = isinstance(value, str) and len(b64decode(value)) == 32
        except ValueError:
            ok = False
        if not ok:
            raise UsageError(f"--site-keys {path}: {name!r} must be 32 bytes, base64url")
        out[name] = str(value)
    return out


def _write_bundle(path: Path, bundle: dict[str, str]) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(json.dumps(bundle) + "\n")
    except OSError as exc:
        raise UsageError(f"--bundle {path}: cannot be written ({exc.strerror})") from None


async def _issue(args: argparse.Namespace) -> int:
    try:
        now = int(time.time())
        nbf = parse_time(args.not_before, args.timezone) if args.not_before else None
        exp = (nbf if nbf is not None else now) + parse_duration(args.valid_for)
        windows = windows_from_specs(args.window)
        cti = None
        if args.cti is not None:
            try:
                cti = bytes.fromhex(args.cti)
            except ValueError:
                cti = b""
            if len(cti) != 16:
                raise UsageError("--cti must be 32 hex digits (16 bytes)")
        holder = _holder_key(args.holder_pub)
        if (args.roster is None) != (args.name is None):
            raise UsageError("--roster and --name go together (the file, and the name it lists)")
        if (args.site_keys is None) != (args.bundle is None):
            raise UsageError("--site-keys and --bundle go together (the site's keys, the file)")
        site_keys = _site_keys(args.site_keys, args.site) if args.site_keys else None
    except (UsageError, WindowSpecError) as exc:
        return _fail(args, str(exc))
    key = load_private_key(args.key)
    try:
        raw = issue_token(
            key,
            iss=args.iss,
            sub=args.sub,
            aud=args.site,
            holder_key=holder,
            doors=args.door,
            role=args.role,
            purposes=args.purpose,
            exp=exp,
            nbf=nbf,
            iat=now,
            windows=windows,
            cti=cti,
        )
    except ProtocolError as exc:
        return _fail(args, f"cannot issue this token: {exc.detail}")
    claims = decode_token(raw)
    until = datetime.fromtimestamp(exp, UTC).isoformat()
    if args.roster is not None:
        from gateway.cli.roster import add_token_entry

        try:
            n = add_token_entry(Path(args.roster), claims, args.name)
        except UsageError as exc:
            return _fail(args, str(exc))
        print(f"entry for {args.name!r} written to {args.roster} ({n} entries)", file=sys.stderr)
    if site_keys is not None:
        try:
            _write_bundle(Path(args.bundle), {"token": b64encode(raw), **site_keys})
        except UsageError as exc:
            return _fail(args, str(exc))
        print(f"credential bundle for the phone written to {args.bundle}", file=sys.stderr)
    print(b64encode(raw))
    print(f"token {claims.token_id}, {len(raw)} bytes, valid until {until}", file=sys.stderr)
    return 0


async def _inspect(args: argparse.Namespace) -> int:
    try:
        raw = read_blob(args.token)
    except UsageError as exc:
        return _fail(args, str(exc))
    try:
        claims = decode_token(raw)
    except ProtocolError as exc:
        return _fail(args, f"not a valid token ({exc.reason.value}): {exc.detail}", 1)
    out = claims.to_json()
    for k in ("exp", "nbf", "iat"):
        if out[k] is not None:
            out[f"{k}_utc"] = datetime.fromtimestamp(out[k], UTC).isoformat()
    out["size"] = len(raw)
    out["verified"] = None
    if args.pub is not None:
        try:
            pub = load_public_key(args.pub)
        except KeyFileError as exc:
            return _fail(args, str(exc), 1)
        try:
            verify_token(raw, {claims.iss: pub})
        except ProtocolError as exc:
            out["verified"] = False
            print(json.dumps(out, indent=2))
            return _fail(args, f"signature check failed ({exc.reason.value}): {exc.detail}", 1)
        out["verified"] = True
    print(json.dumps(out, indent=2))
    return 0
