"""Hostile bytes into every credential decoder: a typed error, never a grant, never a crash."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cred_kit import SITE, FakeClock, Site, make_site
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.access import AccessController, AccessRequest
from protocols.control import Command, RevocationList
from protocols.cose import sig_structure, strict_loads
from protocols.errors import ControlMessageError, ProtocolError, Reason, TokenError
from protocols.keys import kid_of
from protocols.proof import sign_proof
from protocols.token import decode_token, issue_token, verify_token

KEY = Ed25519PrivateKey.generate()
PHONE = Ed25519PrivateKey.generate()
KEYS = {"org": KEY.public_key()}
GOOD = issue_token(
    KEY, iss="org", sub="s", aud=SITE, holder_key=PHONE.public_key(), doors=["front"],
    role="verzorgende", purposes=["planned", "emergency"], exp=2_000_000_000, iat=1_700_000_000,
)  # fmt: skip
GOOD_CMD = Command.new("unlock", site=SITE, actor="a", door="front", now=1_800_000_000).sign(KEY)
GOOD_RL = RevocationList.new("org", 1, cti=[b"\x01" * 16], sub=["x"], iat=1).sign(KEY)

# plain CBOR values, nested a little, with the odd tag and float mixed in
cbor_leaves = (
    st.integers(-(2**64), 2**64) | st.binary(max_size=40) | st.text(max_size=20)
    | st.booleans() | st.none() | st.floats(allow_nan=False)
)  # fmt: skip
cbor_values = st.recursive(
    cbor_leaves,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.integers(-10, 10) | st.text(max_size=8), inner, max_size=5)
        | st.builds(cbor2.CBORTag, st.sampled_from([0, 1, 2, 18, 61, 258, 28, 29]), inner)
    ),
    max_leaves=20,
)


def _encodes(v: Any) -> bytes:
    try:
        return cbor2.dumps(v)
    except Exception:
        return b"\xa0"


hostile = (
    st.binary(max_size=1500)
    | cbor_values.map(_encodes)
    | st.builds(lambda v: _encodes(cbor2.CBORTag(18, v)), cbor_values)
    | st.builds(  # a real COSE_Sign1 shell around hostile protected header / payload
        lambda p, pl: cbor2.dumps(
            cbor2.CBORTag(
                18,
                [_encodes(p), {}, _encodes(pl), KEY.sign(sig_structure(_encodes(p), _encodes(pl)))],
            )
        ),
        cbor_values,
        cbor_values,
    )
)


def _mutations(base: bytes) -> st.SearchStrategy[bytes]:
    def flip(data: bytes, i: int, b: int) -> bytes:
        i %= len(data)
        return data[:i] + bytes([b]) + data[i + 1 :]

    return (
        st.tuples(st.integers(0, 10_000), st.integers(0, 255)).map(lambda t: flip(base, *t))
        | st.integers(0, len(base)).map(lambda n: base[:n])
        | st.binary(min_size=1, max_size=20).map(lambda extra: base + extra)
    )


def _typed(fn: Callable[[bytes], Any], data: bytes, error: type[ProtocolError]) -> Any:
    try:
        return fn(data)
    except error as exc:
        assert isinstance(exc.reason, Reason)
        return None


@given(hostile)
def test_token_decoders_raise_typed_errors(data: bytes) -> None:
    _typed(decode_token, data, TokenError)
    assert _typed(lambda d: verify_token(d, KEYS), data, TokenError) is None or data == GOOD


@given(_mutations(GOOD))
def test_mutated_token_never_verifies_unless_unchanged(data: bytes) -> None:
    result = _typed(lambda d: verify_token(d, KEYS), data, TokenError)
    if result is not None:
        assert cbor2.loads(data) == cbor2.loads(GOOD)


@given(hostile | _mutations(GOOD_CMD))
def test_command_decoders_raise_typed_errors(data: bytes) -> None:
    _typed(Command.decode, data, ControlMessageError)
    ok = _typed(
        lambda d: Command.verify(d, {"s": KEY.public_key()}, site=SITE, now=1_800_000_000),
        data,
        ControlMessageError,
    )
    if ok is not None:
        assert ok == Command.decode(GOOD_CMD)


@given(hostile | _mutations(GOOD_RL))
def test_revocation_decoders_raise_typed_errors(data: bytes) -> None:
    _typed(RevocationList.decode, data, ControlMessageError)
    ok = _typed(lambda d: RevocationList.verify(d, KEYS), data, ControlMessageError)
    if ok is not None:
        assert ok == RevocationList.decode(GOOD_RL)


@given(cbor_values.map(_encodes) | st.binary(max_size=200))
def test_strict_loads_is_total(data: bytes) -> None:
    _typed(lambda d: strict_loads(d, TokenError), data, TokenError)


@pytest.fixture(scope="module")
def fuzz_site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    site = make_site(tmp_path_factory.mktemp("fuzz"))
    site.clock = FakeClock()
    site.write_config(extra_access="rate_limit = 1000000\nsuspicious_after = 1000000")
    return site


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(token=hostile | _mutations(GOOD), proof=st.binary(max_size=80), door=st.text(max_size=10))
def test_hostile_attempts_are_never_granted(
    fuzz_site: Site, token: bytes, proof: bytes, door: str
) -> None:
    ctl: AccessController = fuzz_site.controller()
    nonce = ctl.new_challenge()
    d = ctl.decide(AccessRequest(door or "front", "unlock", nonce, proof, token=token, peer="fuzz"))
    assert not d.granted and isinstance(d.reason, Reason)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=100)
@given(
    kind=st.sampled_from(["flip", "cut", "extend", "none"]),
    i=st.integers(0, 2000),
    b=st.integers(0, 255),
    extra=st.binary(min_size=1, max_size=20),
)
def test_mutated_valid_tokens_with_valid_proofs_never_grant_unless_unchanged(
    fuzz_site: Site, kind: str, i: int, b: int, extra: bytes
) -> None:
    ctl = fuzz_site.controller()
    good = fuzz_site.token()
    i %= len(good)
    token = {
        "flip": good[:i] + bytes([b]) + good[i + 1 :],
        "cut": good[:i],
        "extend": good + extra,
        "none": good,
    }[kind]
    nonce = ctl.new_challenge()
    proof = sign_proof(fuzz_site.keys["phone"], nonce, SITE, "front", "unlock")
    d = ctl.decide(AccessRequest("front", "unlock", nonce, proof, token=token, peer="fuzz"))
    assert d.granted is (token == good)


def test_kid_helper_is_contract() -> None:
    import hashlib

    from protocols.keys import raw_public

    assert kid_of(KEY) == hashlib.sha256(raw_public(KEY)).digest()[:8]


def test_fuzz_site_path_exists(fuzz_site: Site) -> None:
    assert isinstance(fuzz_site.root, Path)


plain_values = st.recursive(
    st.integers(-(2**64), 2**64 - 1) | st.binary(max_size=300) | st.text(max_size=30)
    | st.booleans() | st.none(),
    lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(st.integers(-(2**64), 2**64 - 1) | st.text(max_size=8), inner, max_size=5),
    max_leaves=25,
)  # fmt: skip


@given(plain_values)
def test_strict_decoder_reads_what_cbor2_writes(value: Any) -> None:
    from protocols import strict_cbor

    assert strict_cbor.loads(cbor2.dumps(value)) == value


@given(hostile | plain_values.map(_encodes))
def test_strict_decoder_accepts_only_the_one_spelling(data: bytes) -> None:
    """Differential: whatever the strict decoder accepts, cbor2 reads the same and writes
    back byte for byte (so no second spelling, no duplicate key slipped through)."""
    from protocols import strict_cbor

    try:
        value = strict_cbor.loads(data)
    except strict_cbor.StrictCBORError:
        return
    assert cbor2.loads(data) == value
    assert cbor2.dumps(value) == data


def _claim_maps() -> st.SearchStrategy[bytes]:
    """Claims maps near the contract's shape: right keys, sometimes wrong values/encodings."""
    text = st.text(min_size=0, max_size=130) | st.integers(-5, 5)
    uint = st.integers(-2, 2**64 - 1) | st.booleans()
    claims = st.fixed_dictionaries(
        {
            1: text,
            2: text,
            3: text,
            4: uint,
            7: st.binary(min_size=15, max_size=17),
            8: st.just({1: {1: 1, -1: 6, -2: b"k" * 32}})
            | st.dictionaries(
                st.integers(-3, 3), st.integers(-3, 3) | st.binary(max_size=33), max_size=3
            ),
            "doors": st.lists(st.text(max_size=4), max_size=25),
            "role": text,
            "purpose": st.lists(st.sampled_from(["planned", "emergency", "x"]), max_size=3),
        },
        optional={
            5: uint,
            6: uint,
            "win": st.lists(st.lists(st.integers(-2, 2000), min_size=2, max_size=4), max_size=25),
            "extra": st.integers(),
        },
    )
    return claims.map(lambda c: cbor2.dumps(c, canonical=True)) | claims.map(_encodes)


@given(_claim_maps() | _mutations(cbor2.loads(GOOD).value.value[2]) | hostile)
def test_fast_claims_path_agrees_with_the_generic_strict_path(payload: bytes) -> None:
    from protocols.cose import Sign1
    from protocols.token import _fast_claims, _generic_claims

    fast = _fast_claims(payload, b"kid")
    if fast is None:
        return
    assert _generic_claims(Sign1(b"", b"kid", payload, b"\x00" * 64)) == fast


def test_issued_tokens_take_the_fast_path() -> None:
    from protocols.cose import decode_sign1
    from protocols.token import _fast_claims, _generic_claims
    from protocols.windows import parse_window

    for kw in (
        {},
        {"nbf": 1_700_000_000, "windows": parse_window("daily 22:00-06:00")},
        {"purposes": ["emergency"], "doors": ["front", "back", "x" * 100]},
    ):
        args: dict[str, Any] = {
            "iss": "org", "sub": "s" * 30, "aud": SITE, "holder_key": PHONE.public_key(),
            "doors": ["front"], "role": "verzorgende", "purposes": ["planned", "emergency"],
            "exp": 2_000_000_000,
        }  # fmt: skip
        args.update(kw)
        msg = decode_sign1(issue_token(KEY, **args), TokenError, max_size=1024)
        fast = _fast_claims(msg.payload, msg.kid)
        assert fast is not None and fast == _generic_claims(msg)


@given(hostile | _mutations(GOOD) | _mutations(GOOD_CMD) | _mutations(GOOD[2:]))
def test_fast_envelope_path_agrees_with_the_generic_strict_path(data: bytes) -> None:
    from protocols import cose

    decode_token(GOOD)  # the protected header of GOOD is known now
    fast = cose._fast_sign1(data)
    if fast is None:
        return
    assert fast == cose._generic_sign1(data, TokenError)
    assert cose._fast_sign1(GOOD) is not None
