"""Hostile neighbours on the phone link (issue 17): ``lockgw-unlock-v2`` against a passive
listener, a gateway impostor and a man in the middle, through the real gateway process.

- a passive capture of a whole exchange holds no token field;
- a phone facing an impostor gateway stops before it signs anything;
- a token swapped in the middle is refused (the honest phone stops; a phone that does not
  check is still refused by the gateway: ``bad_proof``), and the lock does not move;
- a v1 hello is refused (``malformed``, journaled) unless ``[phone_link] accept_v1``;
- the site keys: created once, 0600, journaled, in the inventory and ``lockgw site-key
  show``; a damaged one stops the start and is never replaced.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from gateway.phone_link import PhoneLink
from protocols.exchange import PhoneExchange, token_hash
from protocols.phone import (
    MAX_FRAME,
    Challenge,
    Hello,
    Proof,
    Result,
    SignedChallenge,
    SignedResult,
    decode_frame,
    encode_frame,
    pack,
)
from protocols.proof import proof_message_v2
from protocols.token import decode_token
from simulators.broker import MosquittoBroker
from simulators.phone import ImpostorDetected, UnlockAttempt, unlock
from simulators.site import Carer, write_key
from tests.exchange_kit import site_pair
from tests.test_door_process import (
    check_fields,
    event_for,
    expect,
    home,
    lock_state,
    restart_gateway,
    west,
    windows_now,
)

pytestmark = pytest.mark.slow

LOCKGW = str(Path(sys.executable).parent / "lockgw")
LOCKGW_SIM = str(Path(sys.executable).parent / "lockgw-sim")

Transform = Callable[[bytes], bytes]


async def _frame(reader: asyncio.StreamReader) -> bytes:
    n = int.from_bytes(await reader.readexactly(4), "big")
    assert n <= MAX_FRAME
    return await reader.readexactly(n)


@contextlib.asynccontextmanager
async def middle(
    upstream_port: int, *, to_gateway: Transform | None = None
) -> AsyncIterator[tuple[int, list[bytes]]]:
    """A man in the middle on loopback: forwards whole frames both ways, records every byte
    that passes (a passive listener's capture), and may rewrite what the phone sends."""
    capture: list[bytes] = []

    async def serve(pr: asyncio.StreamReader, pw: asyncio.StreamWriter) -> None:
        gr, gw = await asyncio.open_connection("127.0.0.1", upstream_port)

        async def pump(
            src: asyncio.StreamReader, dst: asyncio.StreamWriter, change: Transform | None
        ) -> None:
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                while True:
                    body = await _frame(src)
                    if change is not None:
                        body = change(body)
                    capture.append(pack(body))
                    dst.write(pack(body))
                    await dst.drain()
            dst.close()

        try:
            await asyncio.gather(pump(pr, gw, to_gateway), pump(gr, pw, None))
        finally:
            pw.close()
            gw.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1]), capture
    finally:
        server.close()


def _secrets_of(token: bytes, carer: Carer, site: str) -> dict[str, bytes]:
    """Every token field a listener must not learn, as bytes that would appear on the wire."""
    claims = decode_token(token)
    pub = claims.holder_key
    win = cbor2.dumps([[w.days, w.start, w.end] for w in claims.windows])
    return {
        "the token": token,
        "the holder pseudonym": carer.sub.encode(),
        "the organisation": carer.org.id.encode(),
        "the role": carer.role.encode(),
        "the phone's public key": pub,
        "the token id": carer.cti,
        "the schedule": win,
        "the site id": site.encode(),
        "the door": b"front",
    }


async def test_a_passive_capture_of_an_exchange_holds_no_token_field(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """Everything that crossed the phone link for a granted unlock, both directions, as a
    listener at the door would record it: no pseudonym, organisation, role, schedule,
    phone key, token id, site id or door — only an HPKE ciphertext, a nonce, signatures
    and the result."""
    inside, _ = windows_now()
    org = west()
    async with home(tmp_path, broker, [org]) as (sim, platform):
        anna = Carer("Anna", "anna-7f3c", org, "verzorgende")
        sim.issue(anna, windows=inside)
        site = await sim.site_keys()
        async with middle(sim.phone_port) as (port, capture):
            result = await unlock(
                f"127.0.0.1:{port}",
                UnlockAttempt(door="front", action="unlock", key=anna.phone, token=anna.token,
                              site=site),
            )  # fmt: skip
        assert result.granted, result
        wire = b"".join(capture)
        assert len(capture) == 4, capture  # hello2, challenge2, proof, result2
        for what, secret in _secrets_of(anna.token, anna, sim.site).items():
            assert secret not in wire, f"{what} is readable on the phone link"
        ev = await event_for(platform, result)
        check_fields(ev, reason="ok", granted=True)
        assert ev["sub"] == "anna-7f3c"  # the gateway did read it: it was sealed, not lost


class _Impostor:
    """A gateway that is not the site's: right site id, its own keys (it cannot have the
    site's private keys). It records whatever a phone sends it."""

    def __init__(self, site: str) -> None:
        self.exchange, _ = site_pair(site, accept_v1=True)
        self.proofs: list[Proof] = []
        self.malformed_details: list[str] = []

    def challenge(self) -> Challenge:
        return Challenge(nonce=b"\x09" * 16, site=self.exchange.site)

    async def attempt(
        self,
        hello: Hello,
        challenge: Challenge,
        proof: Proof,
        peer: str,
        *,
        binding: tuple[bytes, bytes] | None = None,
    ) -> Result:
        self.proofs.append(proof)
        return Result(granted=True, reason="ok", event="fake")

    async def malformed(self, peer: str, door: str | None, detail: str) -> Result:
        self.malformed_details.append(detail)
        return Result(granted=False, reason="malformed", event="fake")


async def test_a_gateway_impostor_is_detected_and_the_phone_signs_nothing(tmp_path: Path) -> None:
    """Someone's box at the door pretends to be the home's gateway. It cannot open the
    sealed hello (the token stays secret), and its challenge is not signed by the site:
    the phone — the library and ``lockgw-sim phone unlock`` alike — stops and says so
    before signing; the impostor never receives a proof."""
    _, phone_site = site_pair("site-home")  # the phone's credential: the real site's keys
    anna_key = Ed25519PrivateKey.generate()
    impostor = _Impostor("site-home")
    async with PhoneLink(impostor, "127.0.0.1:0") as link:
        with pytest.raises(ImpostorDetected, match="not signed by this site's key"):
            await unlock(
                link.address,
                UnlockAttempt(door="front", action="unlock", key=anna_key, token=b"T" * 300,
                              site=phone_site),
            )  # fmt: skip
        # its link could not even read the hello
        assert impostor.malformed_details and "does not open" in impostor.malformed_details[0]

        # the same from the command line a tester uses
        keys = tmp_path / "site-keys.json"
        keys.write_text(
            json.dumps(
                {
                    "site": "site-home",
                    "sign_key": _b64(phone_site.sign_key.public_bytes_raw()),
                    "exchange_key": _b64(phone_site.exchange_key.public_bytes_raw()),
                }
            )
        )
        write_key(tmp_path / "anna.key", anna_key)
        proc = await asyncio.create_subprocess_exec(
            LOCKGW_SIM, "phone", "unlock", "--gateway", link.address, "--token", "VFRU",
            "--key", str(tmp_path / "anna.key"), "--door", "front", "--site-keys", str(keys),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
        assert proc.returncode == 2, (out, err)
        assert out == b""
        lines = err.decode().strip().splitlines()
        assert len(lines) == 1 and "not the site's gateway" in lines[0], lines
    assert impostor.proofs == []  # nothing was ever signed for it


async def test_an_impostor_speaking_v1_is_detected_too() -> None:
    """An impostor that takes the hello for a v1 one (or only knows v1) answers with an
    unsigned challenge: a v2 phone does not sign it."""
    _, phone_site = site_pair("site-home")

    async def v1_box(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await _frame(r)
        w.write(pack(encode_frame(Challenge(nonce=b"\x01" * 16, site="site-home"))))
        await w.drain()
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            got.append(await _frame(r))
        w.close()

    got: list[bytes] = []
    server = await asyncio.start_server(v1_box, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(ImpostorDetected, match="expected a signed challenge"):
            await unlock(
                f"127.0.0.1:{port}",
                UnlockAttempt(door="front", action="unlock", key=Ed25519PrivateKey.generate(),
                              token=b"T" * 300, site=phone_site),
            )  # fmt: skip
    finally:
        server.close()
    assert got == []


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def test_a_token_swapped_in_the_middle_is_refused(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """A man in the middle replaces Anna's sealed hello with one carrying another token
    bound to the same phone key — an emergency token, say (the site's exchange key is
    public, so he can seal). The honest phone sees a challenge signed for a hello it did
    not send and stops. A phone that skipped that check would sign — and the gateway
    still refuses: the proof covers the hash of the token Anna presented (``bad_proof``,
    journaled with the swapped token's id). The lock never moves."""
    inside, _ = windows_now()
    org = west()
    async with home(tmp_path, broker, [org]) as (sim, platform):
        anna = Carer("Anna", "anna", org, "verzorgende")
        sim.issue(anna, windows=inside)
        swap = Carer("Anna", "anna", org, "verzorgende", purposes=("emergency",),
                     phone=anna.phone)  # fmt: skip
        sim.issue(swap)
        site = await sim.site_keys()

        def replace_hello(body: bytes) -> bytes:
            frame = decode_frame(body)
            if isinstance(frame, Proof) or not hasattr(frame, "sealed"):
                return body
            sealed, _ = site.seal(Hello(door="front", action="unlock", token=swap.token))
            return encode_frame(sealed)

        async with middle(sim.phone_port, to_gateway=replace_hello) as (port, _):
            with pytest.raises(ImpostorDetected, match="hello was replaced"):
                await unlock(
                    f"127.0.0.1:{port}",
                    UnlockAttempt(door="front", action="unlock", key=anna.phone,
                                  token=anna.token, site=site),
                )  # fmt: skip
            result = await _careless_phone(port, site, anna, anna.token)
        assert (result.granted, result.reason) == (False, "bad_proof"), result
        ev = await event_for(platform, result)
        check_fields(ev, reason="bad_proof", granted=False)
        assert ev["token_id"] == swap.cti.hex()  # the swapped-in token was refused
        assert await lock_state(sim) == "locked"
        assert not [e for e in platform.checker.events if e["type"] == "access.granted"]
        await expect(sim, platform, anna, "ok")  # without the man in the middle: in


async def _careless_phone(port: int, site: PhoneExchange, carer: Carer, token: bytes) -> Result:
    """A phone that signs whatever challenge comes back without checking the gateway's
    signature (what v2 forbids; here to show the gateway's own defence)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        hello = Hello(door="front", action="unlock", token=token)
        sealed, h = site.seal(hello)
        writer.write(pack(encode_frame(sealed)))
        ch = decode_frame(await _frame(reader))
        assert isinstance(ch, SignedChallenge), ch
        msg = proof_message_v2(
            ch.nonce, site.site, "front", "unlock", token_hash=token_hash(hello), hello_hash=h
        )
        writer.write(pack(encode_frame(Proof(sig=carer.phone.sign(msg)))))
        res = decode_frame(await _frame(reader))
        assert isinstance(res, SignedResult), res
        return res.result()  # signed over the swapped hello: this phone cannot check it
    finally:
        writer.close()


async def test_v1_is_refused_unless_the_site_accepts_it(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """A phone still speaking lockgw-unlock-v1 hears ``malformed``; the platform hears the
    denial with every field and the lock stays locked. With ``[phone_link] accept_v1 =
    true`` (a site migrating) the same phone gets in, and v2 phones too."""
    inside, _ = windows_now()
    org = west()
    async with home(tmp_path, broker, [org]) as (sim, platform):
        anna = Carer("Anna", "anna", org, "verzorgende")
        sim.issue(anna, windows=inside)
        result = await sim.attempt(anna, v1=True)
        assert (result.granted, result.reason) == (False, "malformed"), result
        ev = await event_for(platform, result)
        check_fields(ev, reason="malformed", granted=False)
        assert await lock_state(sim) == "locked"
        log = (sim.dir / "gateway.log").read_text()
        assert "lockgw-unlock-v1 hello refused" in log

        text = sim.config.read_text()
        sim.config.write_text(text.replace("[phone_link]\n", "[phone_link]\naccept_v1 = true\n"))
        await restart_gateway(sim, platform)
        result = await sim.attempt(anna, v1=True)
        assert result.granted, result
        await expect(sim, platform, anna, "ok")


def _events(platform: Any, kind: str) -> list[dict[str, Any]]:
    return [e for e in platform.checker.events if e["type"] == kind]


async def test_site_keys_are_created_once_journaled_published_and_shown(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """First start: ``<data_dir>/site/sign.key`` and ``exchange.key`` (0600, directory
    0700), one ``site.key_created`` each; the public halves in the retained inventory and
    in ``lockgw site-key show --phone`` agree. A restart keeps them and creates nothing.
    An issuer turns them into a phone's credential bundle, and that phone gets in."""
    async with home(tmp_path, broker, [west()]) as (sim, platform):
        site_dir = sim.dir / "data" / "site"
        assert oct(site_dir.stat().st_mode & 0o777) == "0o700"
        for name in ("sign.key", "exchange.key"):
            assert oct((site_dir / name).stat().st_mode & 0o777) == "0o600"
        before = {n: (site_dir / n).read_bytes() for n in ("sign.key", "exchange.key")}
        code, out = await sim.cli("site-key", "show", "--phone", "--config", str(sim.config))
        assert code == 0, out
        shown = json.loads(out)
        assert shown["site"] == sim.site
        await sim.site_keys()
        assert sim.site_keys_json == shown  # what the test phones use
        created = await platform.wait_for(
            lambda e: e["type"] == "site.key_created" and e["key"] == "exchange"
        )
        assert (created["algorithm"], created["public"]) == ("X25519", shown["exchange_key"])
        sign = next(e for e in _events(platform, "site.key_created") if e["key"] == "sign")
        assert sign["public"] == shown["sign_key"]
        async with asyncio.timeout(15):
            while platform.inventory is None:  # noqa: ASYNC110 - retained message, polled
                await asyncio.sleep(0.05)
        entry = platform.inventory[-1]
        assert entry["kind"] == "site" and entry["id"] == "@site", platform.inventory
        assert (entry["sign_key"], entry["exchange_key"]) == (
            shown["sign_key"], shown["exchange_key"],
        )  # fmt: skip

        await restart_gateway(sim, platform)
        assert {n: (site_dir / n).read_bytes() for n in before} == before
        assert len(_events(platform, "site.key_created")) == 2

        # the issuer's way to the phone: site-key show → token issue --bundle → the phone
        anna = Carer("Anna", "anna", sim.orgs[0], "verzorgende")
        write_key(sim.dir / "anna.key", anna.phone)
        (sim.dir / "site-keys.json").write_text(json.dumps(shown))
        code, err = await _run(
            "token", "issue", "--key", str(sim.keys / f"{anna.org.id}.key"), "--iss",
            anna.org.id, "--sub", "anna", "--site", sim.site, "--door", "front",
            "--holder-pub", str(sim.dir / "anna.pub"), "--role", "verzorgende",
            "--purpose", "planned", "--valid-for", "1d",
            "--site-keys", "site-keys.json", "--bundle", "anna.json", cwd=sim.dir,
        )  # fmt: skip
        assert code == 0, err
        assert oct((sim.dir / "anna.json").stat().st_mode & 0o777) == "0o600"
        bundle = json.loads((sim.dir / "anna.json").read_text())
        assert bundle["advert_key"] == shown["advert_key"]  # how it finds the hub over BLE
        assert "advert_key" not in entry  # the inventory carries public keys only
        # keys printed by an older gateway: a bundle without it, and a warning that says so;
        # a broken one: one line, no bundle
        issue = (
            "token", "issue", "--key", str(sim.keys / f"{anna.org.id}.key"), "--iss",
            anna.org.id, "--sub", "anna", "--site", sim.site, "--door", "front",
            "--holder-pub", str(sim.dir / "anna.pub"), "--role", "verzorgende",
            "--purpose", "planned", "--valid-for", "1d", "--site-keys", "old-keys.json",
        )  # fmt: skip
        old = {k: v for k, v in shown.items() if k != "advert_key"}
        (sim.dir / "old-keys.json").write_text(json.dumps(old))
        code, err = await _run(*issue, "--bundle", "old.json", cwd=sim.dir)
        assert code == 0 and "has no advert_key" in err and "cannot find the hub over BLE" in err
        assert "advert_key" not in json.loads((sim.dir / "old.json").read_text())
        (sim.dir / "old-keys.json").write_text(json.dumps({**old, "advert_key": "short"}))
        code, err = await _run(*issue, "--bundle", "broken.json", cwd=sim.dir)
        assert code != 0 and "'advert_key' must be 32 bytes" in err, err
        assert not (sim.dir / "broken.json").exists()
        proc = await asyncio.create_subprocess_exec(
            LOCKGW_SIM, "phone", "unlock", "--gateway", f"127.0.0.1:{sim.phone_port}",
            "--bundle", str(sim.dir / "anna.json"), "--key", str(sim.dir / "anna.key"),
            "--door", "front", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err_b = await proc.communicate()
        assert proc.returncode == 0, (out, err_b)
        assert json.loads(out)["granted"] is True


async def _run(*argv: str, cwd: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        LOCKGW, *argv, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(60):
            _, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, err.decode()


async def _wait_for(pred: Callable[[], Any], what: str, tries: int = 300) -> None:
    """Until ``pred()`` (sync or async) is true, looking every 0.2 s."""
    for _ in range(tries):
        got = pred()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"never: {what}")


async def _cli_out(*argv: str, cwd: Path) -> tuple[int, str]:
    """``lockgw ARGV --config lockgw.toml``: (exit code, stdout)."""
    proc = await asyncio.create_subprocess_exec(
        LOCKGW, *argv, "--config", "lockgw.toml", cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


@pytest.mark.slow
async def test_a_damaged_site_key_is_moved_aside_made_anew_and_said_never_a_stop(
    tmp_path: Path,
) -> None:
    """A hub that will not start opens no door, not even for the alarm centre: a damaged
    site key does not stop ``lockgw run`` (it did: exit 78, and systemd left every door
    shut). The file is moved aside for forensics, a new key is made, and it is said —
    ``state.fallback`` and ``site.key_created`` in the journal, health unhealthy (no
    carer's phone with the old bundle opens) until the next restart. A key readable by
    others is set back to 0600 and kept."""
    (tmp_path / "lockgw.toml").write_text(
        '[site]\nid = "site-k"\ndata_dir = "data"\n\n[phone_link]\nloopback = ""\n'
    )
    site_dir = tmp_path / "data" / "site"
    site_dir.mkdir(parents=True, mode=0o700)
    sign = site_dir / "sign.key"  # good, but readable by others
    sign.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
        )
    )
    sign.chmod(0o644)
    sign_before = sign.read_bytes()
    key = site_dir / "exchange.key"
    damaged = b"-----BEGIN PRIVATE KEY-----\ngarbage\n"
    key.write_bytes(damaged)
    key.chmod(0o600)
    code, err = await _run("check-config", "--config", "lockgw.toml", cwd=tmp_path)
    assert code != 0 and "exchange.key" in err and "is damaged" in err, err

    proc = await asyncio.create_subprocess_exec(
        LOCKGW, "run", "--config", "lockgw.toml", cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        kept = lambda: list(site_dir.glob("exchange.key.damaged-*"))  # noqa: E731
        await _wait_for(lambda: bool(kept()) and key.exists(), "the key moved aside")
        assert kept()[0].read_bytes() == damaged  # kept for forensics, as it was
        assert oct(key.stat().st_mode & 0o777) == "0o600"
        assert oct(sign.stat().st_mode & 0o777) == "0o600" and sign.read_bytes() == sign_before

        async def said() -> list[dict[str, Any]]:
            code, out = await _cli_out("audit", "show", "--all", "--json", cwd=tmp_path)
            return json.loads(out) if code == 0 and out.strip() else []

        async def fell_back() -> bool:
            return any(e["type"] == "state.fallback" for e in await said())

        await _wait_for(fell_back, "state.fallback journaled")
        events = await said()
        fb = [e for e in events if e["type"] == "state.fallback"]
        assert [(e["file"], e["problem"]) for e in fb] == [("site/exchange.key", "damaged")]
        assert fb[0]["kept_as"] == str(kept()[0]), fb
        created = [e["key"] for e in events if e["type"] == "site.key_created"]
        assert created == ["exchange"], created  # the sign key was kept

        health: list[tuple[int, str]] = []

        async def unhealthy() -> bool:
            health[:] = [await _cli_out("health", "--json", cwd=tmp_path)]
            return "site/exchange.key" in health[0][1]

        await _wait_for(unhealthy, "health names the new site key")
        code, out = health[0]
        assert code == 1, out
        reasons = [r for r in json.loads(out)["reasons"] if r.get("subject") == "site/exchange.key"]
        assert reasons and reasons[0]["level"] == "unhealthy", out
        assert proc.returncode is None  # still running: never a stop
    finally:
        if proc.returncode is None:
            proc.terminate()
            async with asyncio.timeout(60):
                await proc.wait()
