"""Interop with independent COSE implementations (python-cwt and pycose, test-only):
our tokens verify there, theirs are accepted here — and open the door."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import cbor2
import cwt
import pytest
from cred_kit import ORG, SITE, FakeClock, Site, attempt, make_site
from cryptography.hazmat.primitives import serialization as ser
from cwt import COSE, COSEKey
from pycose.algorithms import EdDSA
from pycose.headers import KID, Algorithm
from pycose.keys import OKPKey
from pycose.keys.curves import Ed25519
from pycose.messages import Sign1Message

from protocols.control import Command
from protocols.keys import kid_of, raw_public
from protocols.token import verify_token


@pytest.fixture
def site(tmp_path: Path) -> Site:
    s = make_site(tmp_path)
    s.clock = FakeClock(time.time())  # python-cwt checks exp against the real clock
    return s


def claims(site: Site) -> dict[Any, Any]:
    now = int(site.clock.t)
    return {
        1: ORG,
        2: "carer-interop",
        3: SITE,
        4: now + 3600,
        6: now,
        7: os.urandom(16),
        8: {1: {1: 1, -1: 6, -2: raw_public(site.keys["phone"])}},
        "doors": ["front"],
        "role": "verzorgende",
        "purpose": ["planned"],
        "win": [[127, 0, 1440]],
    }


def cwt_key(site: Site, name: str, *, private: bool) -> Any:
    k = site.keys[name]
    pem = (
        k.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
        if private
        else k.public_key().public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo)
    )
    return COSEKey.from_pem(pem, kid=kid_of(k))


def pycose_key(site: Site, name: str, *, private: bool) -> OKPKey:
    k = site.keys[name]
    x = raw_public(k)
    if not private:
        return OKPKey(crv=Ed25519, x=x)
    d = k.private_bytes(ser.Encoding.Raw, ser.PrivateFormat.Raw, ser.NoEncryption())
    return OKPKey(crv=Ed25519, x=x, d=d)


def test_our_token_verifies_with_python_cwt(site: Site) -> None:
    raw = site.token()  # tagged 61(18(...)): a CWT
    decoded = cwt.decode(raw, cwt_key(site, ORG, private=False))
    assert decoded[2] == "carer-17" and decoded["doors"] == ["front"]
    untagged = site.token(tag_cwt=False)  # a bare COSE_Sign1
    payload = COSE.new().decode(untagged, cwt_key(site, ORG, private=False))
    assert cbor2.loads(payload)[3] == SITE


def test_our_token_verifies_with_pycose(site: Site) -> None:
    raw = site.token(tag_cwt=False)
    msg = Sign1Message.decode(raw)
    msg.key = pycose_key(site, ORG, private=False)
    assert msg.verify_signature()
    assert msg.phdr[Algorithm] is EdDSA and msg.phdr[KID] == kid_of(site.keys[ORG])
    tagged = cbor2.loads(site.token()).value  # the CWT tag 61 peeled off
    assert Sign1Message.from_cose_obj(tagged.value, allow_unknown_attributes=False) is not None


def test_python_cwt_token_is_accepted_and_opens(site: Site) -> None:
    ctx = COSE.new(alg_auto_inclusion=True, kid_auto_inclusion=True)
    raw = ctx.encode_and_sign(cbor2.dumps(claims(site)), cwt_key(site, ORG, private=True))
    c = verify_token(raw, {ORG: site.keys[ORG].public_key()})
    assert c.sub == "carer-interop" and c.kid == kid_of(site.keys[ORG])
    assert attempt(site.controller(), raw, site.keys["phone"]).granted


def test_pycose_token_is_accepted_and_opens(site: Site) -> None:
    msg = Sign1Message(
        phdr={Algorithm: EdDSA, KID: kid_of(site.keys[ORG])}, payload=cbor2.dumps(claims(site))
    )
    msg.key = pycose_key(site, ORG, private=True)
    raw = msg.encode()
    assert verify_token(raw, {ORG: site.keys[ORG].public_key()}).sub == "carer-interop"
    assert attempt(site.controller(), raw, site.keys["phone"]).granted


def test_pycose_signed_command_is_accepted(site: Site) -> None:
    cmd = Command.new("unlock", site=SITE, actor="r", door="front", now=site.clock.t)
    msg = Sign1Message(
        phdr={Algorithm: EdDSA},
        uhdr={KID: kid_of(site.keys["alarmcentrale"])},
        payload=cmd.encode(),
    )
    msg.key = pycose_key(site, "alarmcentrale", private=True)
    got = site.controller().verify_command(msg.encode())
    assert got == cmd and got.signer == "alarmcentrale"
