"""protocols.cose / token / proof / control: strict decoding, the contract's shapes."""

from __future__ import annotations

import os
import time
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocols.control import Command, RevocationList
from protocols.cose import sig_structure, sign1
from protocols.errors import ControlMessageError, ProtocolError, Reason, TokenError
from protocols.keys import kid_of, raw_public
from protocols.proof import proof_message, sign_proof, verify_proof
from protocols.token import decode_token, issue_token, verify_token

ISSUER = Ed25519PrivateKey.generate()
PHONE = Ed25519PrivateKey.generate()
KEYS = {"org": ISSUER.public_key()}
NOW = int(time.time())


def claims(**over: Any) -> dict[Any, Any]:
    c: dict[Any, Any] = {
        1: "org",
        2: "carer-1",
        3: "site-1",
        4: NOW + 3600,
        6: NOW,
        7: os.urandom(16),
        8: {1: {1: 1, -1: 6, -2: raw_public(PHONE)}},
        "doors": ["front"],
        "role": "verzorgende",
        "purpose": ["planned"],
    }
    for k, v in over.items():
        key: Any = {
            "iss": 1,
            "sub": 2,
            "aud": 3,
            "exp": 4,
            "nbf": 5,
            "iat": 6,
            "cti": 7,
            "cnf": 8,
        }.get(k, k)
        if v is None:
            c.pop(key, None)
        else:
            c[key] = v
    return c


def signed(payload: bytes, *, protected: bytes | None = None, unprotected: Any = None,
           key: Ed25519PrivateKey = ISSUER, tag: int | None = 18) -> bytes:  # fmt: skip
    prot = protected if protected is not None else cbor2.dumps({1: -8, 4: kid_of(key)})
    sig = key.sign(sig_structure(prot, payload))
    arr = [prot, unprotected if unprotected is not None else {}, payload, sig]
    return cbor2.dumps(cbor2.CBORTag(tag, arr) if tag is not None else arr)


def test_issued_token_round_trips() -> None:
    raw = issue_token(
        ISSUER, iss="org", sub="carer-1", aud="site-1", holder_key=PHONE.public_key(),
        doors=["front", "back"], role="verzorgende", purposes=["planned", "emergency"],
        exp=NOW + 60, nbf=NOW - 5, iat=NOW, cti=b"\x07" * 16,
    )  # fmt: skip
    assert raw[:2] == b"\xd8\x3d"  # tag 61 (CWT) around tag 18
    c = verify_token(raw, KEYS)
    assert (c.iss, c.sub, c.aud, c.doors, c.purposes) == (
        "org", "carer-1", "site-1", ("front", "back"), ("planned", "emergency"),
    )  # fmt: skip
    assert c.holder_key == raw_public(PHONE) and c.kid == kid_of(ISSUER) and c.cti == b"\x07" * 16


def test_untagged_cwt_and_kid_in_unprotected_are_accepted() -> None:
    payload = cbor2.dumps(claims())
    raw = signed(payload, protected=cbor2.dumps({1: -8}), unprotected={4: kid_of(ISSUER)})
    assert verify_token(raw, KEYS).sub == "carer-1"


@pytest.mark.parametrize(
    ("mutate", "why"),
    [
        (lambda: signed(cbor2.dumps(claims()), protected=cbor2.dumps({1: -7})), "algorithm"),
        (lambda: signed(cbor2.dumps(claims()), protected=b""), "empty protected"),
        (lambda: signed(cbor2.dumps(claims()), protected=cbor2.dumps({1: -8, 2: [1]})), "labels"),
        (lambda: signed(cbor2.dumps(claims()), unprotected={1: -8}), "unprotected"),
        (lambda: signed(cbor2.dumps(claims()), unprotected={4: b"other"}), "kid differ"),
        (lambda: signed(cbor2.dumps(claims()), tag=None), "tag 18"),
        (lambda: signed(cbor2.dumps(claims()), tag=17), "tag 18"),
        (lambda: signed(cbor2.dumps(claims(cnf=None))), "cnf is required"),
        (lambda: signed(cbor2.dumps(claims(exp=True))), "exp"),
        (lambda: signed(cbor2.dumps(claims(exp=1.5))), "float"),
        (lambda: signed(cbor2.dumps(claims(cti=b"short"))), "cti"),
        (lambda: signed(cbor2.dumps(claims(aud=["site-1"]))), "aud"),
        (lambda: signed(cbor2.dumps(claims(purpose=["fun"]))), "purpose"),
        (lambda: signed(cbor2.dumps(claims(doors=[]))), "doors"),
        (lambda: signed(cbor2.dumps(claims(win=[[0, 1, 2]]))), "win"),
        (lambda: signed(cbor2.dumps(claims(win=[[1, 600, 500]]))), "win"),
        (
            lambda: signed(
                cbor2.dumps(claims(cnf={1: {1: 1, -1: 6, -2: b"x" * 32, -4: b"d" * 32}}))
            ),
            "private",
        ),
        (lambda: signed(cbor2.dumps(claims(cnf={1: {1: 2, -1: 1, -2: b"x" * 32}}))), "Ed25519"),
        (lambda: signed(cbor2.dumps(claims(extra=cbor2.CBORTag(1, 5)))), "tag 1 is not allowed"),
        (lambda: signed(cbor2.dumps(claims(role="x" * 200))), "role"),
        (lambda: signed(cbor2.dumps(claims(doors=["a"] * 40))), "doors"),
        (lambda: signed(cbor2.dumps(claims(sub="x" * 2000))), "limit"),
    ],
)
def test_malformed_tokens_are_refused_with_a_reason(mutate: Any, why: str) -> None:
    with pytest.raises(TokenError) as e:
        verify_token(mutate(), KEYS)
    assert e.value.reason is Reason.MALFORMED
    assert why in e.value.detail


def test_non_preferred_encodings_are_refused() -> None:
    good = cbor2.dumps(claims())
    # duplicate key: append a second "role" entry by rewriting the map header
    dup = bytes([good[0] + 1]) + good[1:] + cbor2.dumps("role")[0:] + cbor2.dumps("admin")
    # indefinite-length map
    indef = b"\xbf" + good[1:] + b"\xff"
    # exp as an 8-byte integer although it fits in 4
    c = claims()
    long_int = cbor2.dumps(c).replace(
        b"\x04\x1a" + c[4].to_bytes(4, "big"), b"\x04\x1b" + c[4].to_bytes(8, "big")
    )
    for payload in (dup, indef, long_int, good + b"\x00"):
        with pytest.raises(TokenError) as e:
            verify_token(signed(payload), KEYS)
        assert e.value.reason is Reason.MALFORMED


def test_unknown_issuer_and_wrong_key() -> None:
    raw = signed(cbor2.dumps(claims(iss="nobody")))
    with pytest.raises(TokenError) as e:
        verify_token(raw, KEYS)
    assert e.value.reason is Reason.UNKNOWN_ISSUER
    other = Ed25519PrivateKey.generate()
    with pytest.raises(TokenError) as e:
        verify_token(signed(cbor2.dumps(claims()), key=other), KEYS)
    assert e.value.reason is Reason.BAD_SIGNATURE  # kid is not the issuer's
    prot = cbor2.dumps({1: -8})
    with pytest.raises(TokenError) as e:
        verify_token(signed(cbor2.dumps(claims()), key=other, protected=prot), KEYS)
    assert e.value.reason is Reason.BAD_SIGNATURE  # no kid: the signature itself fails


def test_decode_token_does_not_verify() -> None:
    other = Ed25519PrivateKey.generate()
    assert decode_token(signed(cbor2.dumps(claims()), key=other)).sub == "carer-1"


def test_too_big_token_is_malformed_before_parsing() -> None:
    with pytest.raises(TokenError, match="limit of 1024"):
        decode_token(b"\xd2" + b"\x00" * 2000)


def test_proof_binds_nonce_site_door_action() -> None:
    nonce = os.urandom(16)
    sig = sign_proof(PHONE, nonce, "site-1", "front", "unlock")
    verify_proof(PHONE.public_key(), sig, nonce=nonce, site="site-1", door="front", action="unlock")
    verify_proof(raw_public(PHONE), sig, nonce=nonce, site="site-1", door="front", action="unlock")
    assert proof_message(nonce, "s", "d", "a") == cbor2.dumps(
        ["lockgw-unlock-v1", nonce, "s", "d", "a"], canonical=True
    )
    for kw in (
        {"nonce": os.urandom(16), "site": "site-1", "door": "front", "action": "unlock"},
        {"nonce": nonce, "site": "site-2", "door": "front", "action": "unlock"},
        {"nonce": nonce, "site": "site-1", "door": "back", "action": "unlock"},
        {"nonce": nonce, "site": "site-1", "door": "front", "action": "open"},
    ):
        with pytest.raises(ProtocolError) as e:
            verify_proof(PHONE.public_key(), sig, **kw)  # type: ignore[arg-type]
        assert e.value.reason is Reason.BAD_PROOF
    with pytest.raises(ProtocolError):
        verify_proof(b"\x00" * 31, sig, nonce=nonce, site="s", door="d", action="a")
    with pytest.raises(ProtocolError):
        verify_proof(PHONE.public_key(), sig[:63], nonce=nonce, site="s", door="d", action="a")


def test_command_round_trip_and_lifetime() -> None:
    c = Command.new("unlock", site="site-1", actor="r-4", door="front", reason="alarm", now=NOW)
    raw = c.sign(ISSUER)
    v = Command.verify(raw, {"ac": ISSUER.public_key()}, site="site-1", now=NOW)
    assert v == c and v.signer == "ac"
    with pytest.raises(ControlMessageError) as e:
        Command.verify(raw, {"ac": ISSUER.public_key()}, site="site-1", now=NOW + 61)
    assert e.value.reason is Reason.EXPIRED
    unsigned = sign1(ISSUER, c.encode(), kid=b"")
    with pytest.raises(ControlMessageError):
        Command.verify(unsigned, {"ac": ISSUER.public_key()}, site="site-1", now=NOW)


@pytest.mark.parametrize(
    "payload",
    [
        {"cmd": "explode", "site": "s", "door": "d", "request_id": "r", "exp": 1, "actor": "a"},
        {"cmd": "unlock", "site": "s", "request_id": "r", "exp": 1, "actor": "a"},
        {"cmd": "alarm", "site": "s", "request_id": "r", "exp": 1, "actor": "a"},
        {"cmd": "alarm", "site": "s", "request_id": "r", "exp": 1, "actor": "a", "state": "up"},
        {"cmd": "unlock", "site": "s", "door": "d", "request_id": "r", "exp": -1, "actor": "a"},
        {
            "cmd": "unlock",
            "site": "s",
            "door": "d",
            "request_id": "r",
            "exp": 1,
            "actor": "a",
            "x": 1,
        },
        {"cmd": "unlock", "site": "s", "door": "d", "request_id": 7, "exp": 1, "actor": "a"},
    ],
)
def test_malformed_commands(payload: dict[str, Any]) -> None:
    with pytest.raises(ControlMessageError) as e:
        Command.decode(sign1(ISSUER, cbor2.dumps(payload, canonical=True)))
    assert e.value.reason is Reason.MALFORMED


def test_revocation_list_round_trip_and_checks() -> None:
    rl = RevocationList.new("org", 4, cti=[b"\x01" * 16], sub=["carer-1"], iat=NOW)
    assert RevocationList.verify(rl.sign(ISSUER), KEYS) == rl
    for bad in (
        {"iss": "org", "seq": 1, "iat": 1, "cti": [b"short"], "sub": []},
        {"iss": "org", "seq": -1, "iat": 1, "cti": [], "sub": []},
        {"iss": "org", "seq": 1, "iat": 1, "cti": [], "sub": [""]},
        {"iss": "org", "seq": 1, "iat": 1, "cti": {}, "sub": []},
    ):
        with pytest.raises(ControlMessageError) as e:
            RevocationList.decode(sign1(ISSUER, cbor2.dumps(bad, canonical=True)))
        assert e.value.reason is Reason.MALFORMED
    with pytest.raises(ControlMessageError) as e:
        RevocationList.verify(rl.sign(Ed25519PrivateKey.generate()), KEYS)
    assert e.value.reason is Reason.BAD_SIGNATURE


def test_verify_presentation_checks_token_then_proof_like_the_two_calls() -> None:
    from protocols.cose import KeyRing
    from protocols.token import ProofError, verify_presentation

    ring = KeyRing(KEYS)
    raw = issue_token(
        ISSUER, iss="org", sub="carer-1", aud="site-1", holder_key=PHONE.public_key(),
        doors=["front"], role="verzorgende", purposes=["planned"], exp=NOW + 3600,
    )  # fmt: skip
    nonce = os.urandom(16)
    where = {"nonce": nonce, "site": "site-1", "door": "front", "action": "unlock"}
    good = sign_proof(PHONE, nonce, "site-1", "front", "unlock")
    assert verify_presentation(raw, ring, good, **where) == verify_token(raw, KEYS)

    # the wrong phone, a proof for another door, a proof of the wrong size: bad_proof,
    # and the (good) token's claims travel with the error for the journal
    other = Ed25519PrivateKey.generate()
    for proof in (
        sign_proof(other, nonce, "site-1", "front", "unlock"),
        sign_proof(PHONE, nonce, "site-1", "back", "unlock"),
        good[:63],
        "x" * 64,
    ):
        with pytest.raises(ProofError) as exc:
            verify_presentation(raw, ring, proof, **where)  # type: ignore[arg-type]
        assert exc.value.reason is Reason.BAD_PROOF and exc.value.claims.sub == "carer-1"

    # a tampered token is bad_signature even when its proof is also wrong: the token first
    tampered = raw[:-1] + bytes([raw[-1] ^ 1])
    with pytest.raises(TokenError) as terr:
        verify_presentation(tampered, ring, b"\x00" * 64, **where)
    assert terr.value.reason is Reason.BAD_SIGNATURE
    with pytest.raises(TokenError) as uerr:
        verify_presentation(raw, KeyRing({}), good, **where)
    assert uerr.value.reason is Reason.UNKNOWN_ISSUER
