"""A simulated carer's phone: ``lockgw-sim phone unlock`` (CONTRACT §6).

Speaks the CONTRACT §3 exchange over the loopback TCP transport, signing the
challenge with the phone key named in the token's ``cnf``. Prints the result frame
as JSON; exit 0 granted, 1 denied, 2 error (no answer, broken exchange, bad input).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from protocols.errors import FrameError, KeyFileError
from protocols.phone import (
    MAX_FRAME,
    Challenge,
    Hello,
    PhoneFrame,
    Proof,
    Result,
    decode_frame,
    encode_frame,
    pack,
)
from protocols.proof import proof_message

__all__ = ["PhoneError", "UnlockAttempt", "load_phone_key", "register", "unlock"]


class PhoneError(Exception):
    """The exchange did not complete (no gateway, timeout, a broken frame)."""


@dataclass(frozen=True)
class UnlockAttempt:
    """What the phone sends. ``key`` may differ from the token's ``cnf`` key (a forwarded token)."""

    door: str
    action: str
    key: Ed25519PrivateKey
    token: bytes | None = None
    token_ref: bytes | None = None


def load_phone_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise KeyFileError(str(path), f"cannot read it ({exc.strerror})") from None
    except ValueError:
        raise KeyFileError(str(path), "not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(str(path), "not an Ed25519 key")
    return key


async def _read(reader: asyncio.StreamReader) -> PhoneFrame:
    n = int.from_bytes(await reader.readexactly(4), "big")
    if n > MAX_FRAME:
        raise FrameError(f"declared frame length {n} exceeds {MAX_FRAME}")
    return decode_frame(await reader.readexactly(n))


async def unlock(
    gateway: str, attempt: UnlockAttempt, *, timeout: float = 15.0, nonce_out: list[bytes] | None = None
) -> Result:
    """One attempt. ``nonce_out`` (tests) receives the challenge nonce."""
    host, _, port = gateway.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise PhoneError(f"--gateway {gateway!r}: give host:port, e.g. 127.0.0.1:47100")
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host or "127.0.0.1", int(port))
            try:
                hello = Hello(
                    door=attempt.door,
                    action=attempt.action,
                    token=attempt.token,
                    token_ref=attempt.token_ref,
                )
                writer.write(pack(encode_frame(hello)))
                frame = await _read(reader)
                if isinstance(frame, Result):  # refused before a challenge (malformed hello)
                    return frame
                if not isinstance(frame, Challenge):
                    raise PhoneError(f"expected a challenge, got {type(frame).__name__}")
                if nonce_out is not None:
                    nonce_out.append(frame.nonce)
                msg = proof_message(frame.nonce, frame.site, attempt.door, attempt.action)
                writer.write(pack(encode_frame(Proof(sig=attempt.key.sign(msg)))))
                result = await _read(reader)
                if not isinstance(result, Result):
                    raise PhoneError(f"expected a result, got {type(result).__name__}")
                return result
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
    except TimeoutError:
        raise PhoneError(f"no answer from the gateway at {gateway} within {timeout:g} s") from None
    except (OSError, asyncio.IncompleteReadError) as exc:
        raise PhoneError(f"gateway {gateway}: {exc}") from None
    except FrameError as exc:
        raise PhoneError(f"gateway {gateway} sent a broken frame: {exc.detail}") from None


def _b64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise argparse.ArgumentTypeError("not base64url") from None


async def _cmd_unlock(args: argparse.Namespace) -> int:
    try:
        key = load_phone_key(Path(args.key))
    except KeyFileError as exc:
        print(f"lockgw-sim phone: {exc}", file=sys.stderr)
        return 2
    token_ref = None
    if args.token_ref:
        try:
            token_ref = bytes.fromhex(args.token_ref)
        except ValueError:
            print("lockgw-sim phone: --token-ref must be hex", file=sys.stderr)
            return 2
    attempt = UnlockAttempt(
        door=args.door,
        action=args.action,
        key=key,
        token=args.token,
        token_ref=token_ref,
    )
    try:
        result = await unlock(args.gateway, attempt, timeout=args.timeout)
    except PhoneError as exc:
        print(f"lockgw-sim phone: {exc}", file=sys.stderr)
        return 2
    out: dict[str, Any] = result.to_map()
    print(json.dumps(out))
    return 0 if result.granted else 1


def register(subs: Any) -> None:
    p = subs.add_parser("phone", help="a simulated carer's phone")
    sub = p.add_subparsers(dest="phone_cmd", required=True, metavar="ACTION")
    u = sub.add_parser("unlock", help="one unlock attempt; exit 0 granted, 1 denied, 2 error")
    u.add_argument("--gateway", required=True, help="host:port of the gateway's phone link")
    src = u.add_mutually_exclusive_group(required=True)
    src.add_argument("--token", type=_b64, help="the token, base64url")
    src.add_argument("--token-ref", help="cti (hex) of a token the gateway holds")
    u.add_argument("--key", required=True, help="the phone's Ed25519 private key (PEM)")
    u.add_argument("--door", required=True)
    u.add_argument("--action", default="unlock", choices=["unlock", "unlatch", "open"])
    u.add_argument("--timeout", type=float, default=15.0)
    u.set_defaults(handler=_cmd_unlock)
