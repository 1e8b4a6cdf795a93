"""``lockgw revoke`` and ``lockgw command``: signed control messages (CONTRACT §5, §6).

Both print base64url; the platform publishes the raw bytes on MQTT::

    lockgw revoke --key keys/org.key --iss org-thuiszorg-west --seq 8 --sub carer-17
    lockgw command --key keys/alarmcentrale.key --site site-3f9c2a7d --door front \\
        --cmd unlock --actor responder-4 --reason alarm
"""

from __future__ import annotations

import argparse
import sys

from gateway.cli.token import UsageError, parse_duration, parse_time
from gateway.keys import load_private_key
from protocols.control import ALARM_STATES, COMMANDS, MAX_AHEAD, Command, RevocationList
from protocols.errors import ProtocolError
from protocols.token import b64encode

__all__ = ["register"]


def register(subs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rv = subs.add_parser("revoke", help="sign an issuer's revocation list; prints base64url")
    rv.add_argument("--key", required=True, help="the issuer's private key (PEM, mode 0600)")
    rv.add_argument("--iss", required=True, help="issuer id, as in the sites' configs")
    rv.add_argument("--seq", required=True, type=int, help="higher than the last list's seq")
    rv.add_argument("--cti", action="append", default=[], help="token id (32 hex digits); repeat")
    rv.add_argument(
        "--sub", action="append", default=[], help="holder id: all their tokens; repeat"
    )
    rv.add_argument("--iat", default=None, help="issued-at, unix seconds or ISO 8601 (default now)")
    rv.set_defaults(handler=_revoke)

    cm = subs.add_parser("command", help="sign a remote command; prints base64url")
    cm.add_argument("--key", required=True, help="the command signer's private key")
    cm.add_argument("--site", required=True)
    cm.add_argument("--cmd", required=True, choices=COMMANDS)
    cm.add_argument("--door", default=None, help="door id (all commands but alarm)")
    cm.add_argument("--actor", required=True, help="who asks (pseudonymous id)")
    cm.add_argument("--reason", default=None, help="alarm, service, …")
    cm.add_argument("--state", default=None, choices=ALARM_STATES, help="for --cmd alarm")
    cm.add_argument("--request-id", default=None, help="default: a random UUID")
    cm.add_argument("--valid-for", default="60s", help=f"at most {MAX_AHEAD}s (default 60s)")
    cm.set_defaults(handler=_command)


def _fail(args: argparse.Namespace, msg: str) -> int:
    print(f"lockgw {args.command}: {msg}", file=sys.stderr)
    return 2


async def _revoke(args: argparse.Namespace) -> int:
    if args.seq < 0:
        return _fail(args, "--seq must be 0 or more (and above the last list's)")
    ctis = []
    for c in args.cti:
        try:
            b = bytes.fromhex(c)
        except ValueError:
            b = b""
        if len(b) != 16:
            return _fail(args, f"--cti {c!r} is not 32 hex digits (lockgw token inspect shows it)")
        ctis.append(b)
    try:
        iat = parse_time(args.iat, "UTC") if args.iat else None
    except UsageError as exc:
        return _fail(args, str(exc))
    key = load_private_key(args.key)
    try:
        raw = RevocationList.new(args.iss, args.seq, cti=ctis, sub=args.sub, iat=iat).sign(key)
    except ProtocolError as exc:
        return _fail(args, exc.detail)
    print(b64encode(raw))
    print(
        f"revocation list {args.iss} seq {args.seq}: {len(ctis)} token(s), "
        f"{len(set(args.sub))} holder(s); publish retained on lockgw/v1/org/{args.iss}/revocations",
        file=sys.stderr,
    )
    return 0


async def _command(args: argparse.Namespace) -> int:
    try:
        valid_for = parse_duration(args.valid_for)
    except UsageError as exc:
        return _fail(args, str(exc))
    if valid_for > MAX_AHEAD:
        return _fail(args, f"--valid-for {args.valid_for}: a command lives at most {MAX_AHEAD}s")
    try:
        cmd = Command.new(
            args.cmd,
            site=args.site,
            actor=args.actor,
            door=args.door,
            reason=args.reason,
            state=args.state,
            valid_for=valid_for,
            request_id=args.request_id,
        )
    except ProtocolError as exc:
        return _fail(args, exc.detail)
    raw = cmd.sign(load_private_key(args.key))
    print(b64encode(raw))
    print(f"command {cmd.cmd} request_id {cmd.request_id}, expires {cmd.exp}", file=sys.stderr)
    return 0
