"""A simulated carer's phone: ``lockgw-sim phone unlock`` (CONTRACT §6).

Speaks the CONTRACT §3 exchange over the loopback TCP transport: ``lockgw-unlock-v2``
(``protocols/exchange.py``) with the site keys its credential carries (``--site-keys``,
the JSON of ``lockgw site-key show``, or ``--bundle`` from ``lockgw token issue
--bundle``): it seals the hello to the site, checks that the challenge is signed by the
site for this very hello before it signs anything, and checks the result's signature.
``--v1`` speaks the old exchange (for sites still migrating, ``[phone_link] accept_v1``).
Prints the result frame as JSON; exit 0 granted, 1 denied, 2 error (no answer, broken
exchange, bad input, or a gateway that is not the site's: nothing was signed then).
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
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from protocols.errors import FrameError, KeyFileError
from protocols.exchange import ImpostorError, PhoneExchange
from protocols.phone import (
    MAX_FRAME,
    Challenge,
    Hello,
    PhoneFrame,
    Proof,
    Result,
    SignedChallenge,
    SignedResult,
    decode_frame,
    encode_frame,
    pack,
)
from protocols.proof import proof_message

__all__ = [
    "FrameChannel",
    "ImpostorDetected",
    "PhoneError",
    "UnlockAttempt",
    "exchange",
    "load_phone_key",
    "load_site_keys",
    "register",
    "site_keys_from",
    "unlock",
]


class PhoneError(Exception):
    """The exchange did not complete (no gateway, timeout, a broken frame)."""


class ImpostorDetected(PhoneError):
    """What answered did not sign with the site's key for this hello: the phone stopped
    before signing anything."""


@dataclass(frozen=True)
class UnlockAttempt:
    """What the phone sends. ``key`` may differ from the token's ``cnf`` key (a forwarded token)."""

    door: str
    action: str
    key: Ed25519PrivateKey
    token: bytes | None = None
    token_ref: bytes | None = None
    #: lockgw-unlock-v2 with these site keys; None = the old v1 exchange
    site: PhoneExchange | None = None


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def site_keys_from(data: dict[str, Any]) -> PhoneExchange:
    """The site keys of a credential bundle or of ``lockgw site-key show``'s JSON."""
    try:
        advert = data.get("advert_key")
        return PhoneExchange(
            str(data["site"]), _b64d(str(data["sign_key"])), _b64d(str(data["exchange_key"])),
            None if advert is None else _b64d(str(advert)),
        )
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise ValueError(
            'needs "site", "sign_key" and "exchange_key" (32 bytes each, base64url; '
            'over BLE also "advert_key")'
        ) from None


def load_site_keys(path: Path) -> tuple[PhoneExchange, dict[str, Any]]:
    """(site keys, the whole JSON object) from a file; ValueError with the problem."""
    try:
        data = json.loads(path.read_bytes()[: 64 * 1024])
    except OSError as exc:
        raise ValueError(f"{path}: cannot read it ({exc.strerror})") from None
    except (ValueError, UnicodeDecodeError):
        raise ValueError(f"{path}: not JSON") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object")
    try:
        return site_keys_from(data), data
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


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
                if attempt.site is not None:
                    return await _v2(
                        reader,
                        writer,
                        attempt=attempt,
                        hello=hello,
                        site=attempt.site,
                        nonce_out=nonce_out,
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
    except ImpostorError as exc:
        raise ImpostorDetected(f"gateway {gateway}: {exc.detail}") from None


class FrameChannel(Protocol):
    """A transport that moves whole frames (BLE GATT: :mod:`simulators.phone_ble`)."""

    async def send(self, frame: PhoneFrame) -> None: ...

    async def recv(self) -> PhoneFrame: ...


async def exchange(
    channel: FrameChannel,
    attempt: UnlockAttempt,
    *,
    nonce_out: list[bytes] | None = None,
    vanish_after: str | None = None,
) -> Result | None:
    """The phone's side of the exchange over a frame channel (v2 with ``attempt.site``,
    else v1), as :func:`unlock` speaks it over TCP. ``vanish_after`` (``"challenge"`` or
    ``"proof"``, a simulated fault) returns None instead of going on: after the challenge
    arrived, or after the proof went out."""
    hello = Hello(
        door=attempt.door, action=attempt.action, token=attempt.token, token_ref=attempt.token_ref
    )
    site = attempt.site
    if site is not None:
        sealed, h = site.seal(hello)
        await channel.send(sealed)
    else:
        await channel.send(hello)
    frame = await channel.recv()
    if site is not None:
        if isinstance(frame, SignedResult):  # refused before a challenge
            return site.check_result(frame, h)
        if not isinstance(frame, SignedChallenge):
            raise ImpostorDetected(
                f"expected a signed challenge, got {type(frame).__name__}: not a "
                "lockgw-unlock-v2 gateway of this site; nothing was signed"
            )
        site.check_challenge(frame, h)  # ImpostorError before the phone signs anything
        nonce = frame.nonce
        proof: PhoneFrame = site.proof(attempt.key, hello, frame.nonce, h)
    else:
        if isinstance(frame, Result):  # refused before a challenge (malformed hello)
            return frame
        if not isinstance(frame, Challenge):
            raise PhoneError(f"expected a challenge, got {type(frame).__name__}")
        nonce = frame.nonce
        msg = proof_message(frame.nonce, frame.site, attempt.door, attempt.action)
        proof = Proof(sig=attempt.key.sign(msg))
    if nonce_out is not None:
        nonce_out.append(nonce)
    if vanish_after == "challenge":
        return None
    await channel.send(proof)
    if vanish_after == "proof":
        return None
    result = await channel.recv()
    if site is not None:
        if not isinstance(result, SignedResult):
            raise ImpostorDetected(f"expected a signed result, got {type(result).__name__}")
        return site.check_result(result, h)
    if not isinstance(result, Result):
        raise PhoneError(f"expected a result, got {type(result).__name__}")
    return result


async def _v2(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    attempt: UnlockAttempt,
    hello: Hello,
    site: PhoneExchange,
    nonce_out: list[bytes] | None,
) -> Result:
    sealed, h = site.seal(hello)
    writer.write(pack(encode_frame(sealed)))
    frame = await _read(reader)
    if isinstance(frame, SignedResult):  # refused before a challenge (e.g. malformed)
        return site.check_result(frame, h)
    if not isinstance(frame, SignedChallenge):
        raise ImpostorDetected(
            f"expected a signed challenge, got {type(frame).__name__}: not a "
            "lockgw-unlock-v2 gateway of this site; nothing was signed"
        )
    site.check_challenge(frame, h)  # ImpostorError before the phone signs anything
    if nonce_out is not None:
        nonce_out.append(frame.nonce)
    writer.write(pack(encode_frame(site.proof(attempt.key, hello, frame.nonce, h))))
    result = await _read(reader)
    if not isinstance(result, SignedResult):
        raise ImpostorDetected(f"expected a signed result, got {type(result).__name__}")
    return site.check_result(result, h)


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
    site: PhoneExchange | None = None
    token = args.token
    if args.bundle:
        try:
            site, bundle = load_site_keys(Path(args.bundle))
            if token is None and args.token_ref is None:
                token = _b64(str(bundle["token"]))
        except (ValueError, KeyError, argparse.ArgumentTypeError) as exc:
            print(f"lockgw-sim phone: --bundle {exc or 'has no token'}", file=sys.stderr)
            return 2
    elif args.site_keys:
        try:
            site, _ = load_site_keys(Path(args.site_keys))
        except ValueError as exc:
            print(f"lockgw-sim phone: --site-keys {exc}", file=sys.stderr)
            return 2
    elif not args.v1:
        print(
            "lockgw-sim phone: give --site-keys FILE or --bundle FILE (the site's keys, from "
            "lockgw site-key show), or --v1 for the old exchange",
            file=sys.stderr,
        )
        return 2
    if token is None and args.token_ref is None:
        print("lockgw-sim phone: give --token, --token-ref or --bundle", file=sys.stderr)
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
        token=None if token_ref else token,
        token_ref=token_ref,
        site=site,
    )
    try:
        if args.bluez:
            from simulators.phone_ble import unlock_ble

            found = await unlock_ble(
                attempt,
                adapter=args.adapter,
                gateway=args.gateway,
                timeout=args.timeout,
                vanish_after=args.vanish_after,
            )
            if found is None:
                print(json.dumps({"vanished_after": args.vanish_after}))
                return 2
            result = found
        elif args.gateway is None or args.vanish_after:
            print(
                "lockgw-sim phone: --gateway host:port is needed (or --bluez); "
                "--vanish-after only with --bluez",
                file=sys.stderr,
            )
            return 2
        else:
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
    u.add_argument(
        "--gateway",
        help="host:port of the gateway's loopback phone link; with --bluez, the gateway's "
        "BLE address (default: the first gateway advertising the lockgw service)",
    )
    u.add_argument(
        "--bluez", action="store_true", help="over BLE GATT through BlueZ, as a real phone"
    )
    u.add_argument("--adapter", default=None, help="with --bluez: the phone's adapter (hci1, ...)")
    u.add_argument(
        "--vanish-after",
        choices=["challenge", "proof"],
        help="with --bluez: disconnect after the challenge arrived or the proof went out "
        "(a phone that walks away); exit 2",
    )
    src = u.add_mutually_exclusive_group()
    src.add_argument("--token", type=_b64, help="the token, base64url")
    src.add_argument("--token-ref", help="cti (hex) of a token the gateway holds")
    ver = u.add_mutually_exclusive_group()
    ver.add_argument(
        "--bundle",
        help="credential bundle (JSON: token and site keys; lockgw token issue --bundle)",
    )
    ver.add_argument("--site-keys", help="the site's keys (JSON of lockgw site-key show)")
    ver.add_argument(
        "--v1", action="store_true", help="the old lockgw-unlock-v1 exchange (token in the clear)"
    )
    u.add_argument("--key", required=True, help="the phone's Ed25519 private key (PEM)")
    u.add_argument("--door", required=True)
    u.add_argument("--action", default="unlock", choices=["unlock", "unlatch", "open"])
    u.add_argument("--timeout", type=float, default=15.0)
    u.set_defaults(handler=_cmd_unlock)
