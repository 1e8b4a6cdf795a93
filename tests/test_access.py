"""The access decision: every grant path and every denial reason (CONTRACT §3)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from cred_kit import ORG, RESIDENT, SIGNER, SITE, Site, attempt, make_site, windows
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.access import AccessController, AccessRequest, Decision
from protocols.control import Command, RevocationList
from protocols.errors import ControlMessageError, Reason, TokenError
from protocols.proof import sign_proof

pytestmark = pytest.mark.filterwarnings("error")


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return make_site(tmp_path)


@pytest.fixture
def ctl(site: Site) -> AccessController:
    return site.controller()


def phone(site: Site) -> Ed25519PrivateKey:
    return site.keys["phone"]


def test_valid_token_with_proof_is_granted_as_planned_care(
    site: Site, ctl: AccessController
) -> None:
    d = attempt(ctl, site.token(), phone(site))
    assert d.granted and d.reason is Reason.OK
    assert (d.iss, d.sub, d.role, d.purpose) == (ORG, "carer-17", "verzorgende", "planned")
    assert d.clock_trusted and not d.emergency_outside_window and not d.suspicious


def test_malformed_token_is_refused(site: Site, ctl: AccessController) -> None:
    assert attempt(ctl, b"\xa0garbage", phone(site)).reason is Reason.MALFORMED


def test_token_of_an_unconfigured_issuer_is_unknown_issuer(
    site: Site, ctl: AccessController
) -> None:
    t = site.token(iss="org-elsewhere", key=site.keys["stranger"])
    assert attempt(ctl, t, phone(site)).reason is Reason.UNKNOWN_ISSUER


def test_token_signed_by_another_key_is_bad_signature(site: Site, ctl: AccessController) -> None:
    t = site.token(key=site.keys["stranger"])
    assert attempt(ctl, t, phone(site)).reason is Reason.BAD_SIGNATURE


def test_tampered_token_is_bad_signature(site: Site, ctl: AccessController) -> None:
    t = bytearray(site.token())
    i = t.index(b"carer-17")
    t[i : i + 8] = b"carer-18"
    assert attempt(ctl, bytes(t), phone(site)).reason is Reason.BAD_SIGNATURE


def test_forwarded_token_is_refused_with_bad_proof(site: Site, ctl: AccessController) -> None:
    d = attempt(ctl, site.token(), site.keys["other-phone"])
    assert d.reason is Reason.BAD_PROOF
    assert d.iss == ORG  # still attributed in the journal


def test_proof_for_another_door_is_bad_proof(site: Site, ctl: AccessController) -> None:
    t = site.token(doors=["front", "back"])
    assert attempt(ctl, t, phone(site), door="front", proof_door="back").reason is Reason.BAD_PROOF


def test_reused_nonce_is_refused(site: Site, ctl: AccessController) -> None:
    t = site.token()
    nonce = ctl.new_challenge()
    req = AccessRequest(
        door="front",
        action="unlock",
        nonce=nonce,
        proof=sign_proof(phone(site), nonce, SITE, "front", "unlock"),
        token=t,
        peer="p",
    )
    assert ctl.decide(req).granted
    assert ctl.decide(req).reason is Reason.NONCE_REUSED


def test_expired_nonce_and_invented_nonce_are_refused(site: Site, ctl: AccessController) -> None:
    t = site.token()
    nonce = ctl.new_challenge()
    site.clock.advance(31)
    proof = sign_proof(phone(site), nonce, SITE, "front", "unlock")
    req = AccessRequest("front", "unlock", nonce, proof, token=t)
    assert ctl.decide(req).reason is Reason.NONCE_REUSED
    invented = b"\x01" * 16
    req2 = AccessRequest(
        "front", "unlock", invented, sign_proof(phone(site), invented, SITE, "front", "unlock"), t
    )
    assert ctl.decide(req2).reason is Reason.NONCE_REUSED


def test_token_for_another_site_is_wrong_site(site: Site, ctl: AccessController) -> None:
    assert attempt(ctl, site.token(aud="site-other"), phone(site)).reason is Reason.WRONG_SITE


def test_expired_and_not_yet_valid_respect_the_skew(site: Site, ctl: AccessController) -> None:
    now = int(site.clock.t)
    assert attempt(ctl, site.token(exp=now - 30), phone(site)).granted  # within 60 s skew
    assert attempt(ctl, site.token(exp=now - 61), phone(site)).reason is Reason.EXPIRED
    assert attempt(ctl, site.token(nbf=now + 30), phone(site)).granted
    assert attempt(ctl, site.token(nbf=now + 61), phone(site)).reason is Reason.NOT_YET_VALID


def test_door_not_in_token_or_consent_is_wrong_door(site: Site, ctl: AccessController) -> None:
    assert attempt(ctl, site.token(), phone(site), door="back").reason is Reason.WRONG_DOOR
    t = site.token(doors=["front", "garage"])
    assert attempt(ctl, t, phone(site), door="garage").reason is Reason.WRONG_DOOR


def test_role_outside_the_issuers_matrix_is_refused(site: Site, ctl: AccessController) -> None:
    t = site.token(role="mantelzorger")
    assert attempt(ctl, t, phone(site)).reason is Reason.ROLE_NOT_PERMITTED


def test_purpose_the_issuer_may_not_use_is_refused(site: Site, ctl: AccessController) -> None:
    t = site.token(iss=RESIDENT, role="mantelzorger", purposes=["emergency"])
    assert attempt(ctl, t, phone(site)).reason is Reason.PURPOSE_NOT_PERMITTED


def test_matrix_limits_purposes_per_role(site: Site) -> None:
    site.write_config(
        issuer_extra='[issuers.matrix]\nverzorgende = ["planned"]\nalarmopvolger = ["emergency"]'
    )
    ctl = site.controller()
    assert (
        attempt(ctl, site.token(purposes=["emergency"]), phone(site)).reason
        is Reason.PURPOSE_NOT_PERMITTED
    )
    t = site.token(role="wijkverpleegkundige")  # in roles but not in the matrix
    assert attempt(ctl, t, phone(site)).reason is Reason.ROLE_NOT_PERMITTED
    d = attempt(ctl, site.token(role="alarmopvolger", purposes=["emergency"]), phone(site))
    assert d.granted and d.purpose == "emergency"


def test_consent_dates_bound_the_issuer(site: Site) -> None:
    site.write_config(issuer_extra="consent_from = 2026-12-01")
    assert attempt(site.controller(), site.token(), phone(site)).reason is (
        Reason.ISSUER_NOT_CONSENTED
    )
    site.write_config(issuer_extra="consent_until = 2026-11-23")
    assert attempt(site.controller(), site.token(), phone(site)).reason is (
        Reason.ISSUER_NOT_CONSENTED
    )
    site.write_config(issuer_extra="consent_from = 2026-11-24\nconsent_until = 2026-11-24")
    assert attempt(site.controller(), site.token(), phone(site)).granted
    assert site.config.issuers[0].consent_until == date(2026, 11, 24)


# -- windows and emergencies (T0 is Tuesday 09:00 Amsterdam) ------------------------------
TUE = 2


def test_outside_window_is_refused_inside_is_granted(site: Site, ctl: AccessController) -> None:
    inside = site.token(windows=windows((TUE, 8 * 60, 10 * 60)))
    outside = site.token(windows=windows((TUE, 10 * 60, 12 * 60), (1 | 4, 0, 1440)))
    assert attempt(ctl, inside, phone(site)).granted
    assert attempt(ctl, outside, phone(site)).reason is Reason.OUTSIDE_WINDOW


def test_emergency_outside_window_only_while_alarm_raised(
    site: Site, ctl: AccessController
) -> None:
    t = site.token(
        role="alarmopvolger",
        purposes=["planned", "emergency"],
        windows=windows((TUE, 18 * 60, 20 * 60)),
    )
    assert attempt(ctl, t, phone(site)).reason is Reason.OUTSIDE_WINDOW
    ctl.set_alarm(True)
    d = attempt(ctl, t, phone(site))
    assert d.granted and d.purpose == "emergency" and d.emergency_outside_window
    ctl.set_alarm(False)
    assert attempt(ctl, t, phone(site)).reason is Reason.OUTSIDE_WINDOW


def test_alarm_expires_by_itself(site: Site, ctl: AccessController) -> None:
    ctl.set_alarm(True)
    assert ctl.alarm_raised
    site.clock.advance(2 * 3600 + 1)
    assert not ctl.alarm_raised


def test_alarm_survives_a_restart(site: Site, ctl: AccessController) -> None:
    ctl.set_alarm(True, until=site.clock.t + 600)
    assert site.controller().alarm_raised


def test_site_may_allow_emergency_outside_windows_without_alarm(site: Site) -> None:
    site.write_config(site_extra="emergency_outside_window_without_alarm = true")
    ctl = site.controller()
    t = site.token(purposes=["emergency"], windows=windows((TUE, 18 * 60, 20 * 60)))
    d = attempt(ctl, t, phone(site))
    assert d.granted and d.emergency_outside_window


def test_emergency_token_without_windows_opens_any_time(site: Site, ctl: AccessController) -> None:
    d = attempt(ctl, site.token(role="alarmopvolger", purposes=["emergency"]), phone(site))
    assert d.granted and d.purpose == "emergency" and not d.emergency_outside_window


# -- revocations --------------------------------------------------------------------------
def revocation(site: Site, seq: int, *, iss: str = ORG, **kw: object) -> bytes:
    return RevocationList.new(iss, seq, iat=int(site.clock.t), **kw).sign(site.keys[iss])  # type: ignore[arg-type]


def test_revoked_by_cti_and_by_sub(site: Site, ctl: AccessController) -> None:
    t1, t2 = site.token(), site.token(sub="carer-99")
    from protocols.token import decode_token

    out = ctl.apply_revocation(revocation(site, 1, cti=[decode_token(t1).cti]))
    assert out.status == "applied" and out.cti_count == 1
    assert attempt(ctl, t1, phone(site)).reason is Reason.REVOKED
    assert attempt(ctl, t2, phone(site)).granted
    ctl.apply_revocation(revocation(site, 2, sub=["carer-99"]))
    assert attempt(ctl, t2, phone(site)).reason is Reason.REVOKED
    assert attempt(ctl, t1, phone(site)).granted  # seq 2 replaced seq 1


def test_revocation_rollback_is_ignored_and_survives_restart(
    site: Site, ctl: AccessController
) -> None:
    t = site.token()
    assert ctl.apply_revocation(revocation(site, 5, sub=["carer-17"])).status == "applied"
    old = revocation(site, 4)
    assert ctl.apply_revocation(old).status == "ignored"
    assert ctl.apply_revocation(revocation(site, 5)).status == "ignored"
    again = site.controller()
    out = again.apply_revocation(old)
    assert (out.status, out.held_seq) == ("ignored", 5)
    assert attempt(again, t, phone(site)).reason is Reason.REVOKED


def test_revocation_with_bad_signature_or_unknown_issuer_is_refused(
    site: Site, ctl: AccessController
) -> None:
    forged = RevocationList.new(ORG, 9, iat=int(site.clock.t)).sign(site.keys["stranger"])
    out = ctl.apply_revocation(forged)
    assert (out.status, out.reason, out.issuer) == ("refused", Reason.BAD_SIGNATURE, ORG)
    unknown = RevocationList.new("org-x", 1).sign(site.keys["stranger"])
    assert ctl.apply_revocation(unknown).reason is Reason.UNKNOWN_ISSUER
    assert ctl.apply_revocation(b"\x00").reason is Reason.MALFORMED


def test_stale_revocations_refuse_planned_care_but_not_emergency(site: Site) -> None:
    site.write_config(issuer_extra="revocation_max_age = 3600")
    ctl = site.controller()
    planned = site.token()
    emergency = site.token(role="alarmopvolger", purposes=["emergency"])
    both = site.token(purposes=["planned", "emergency"])
    assert attempt(ctl, planned, phone(site)).reason is Reason.REVOCATION_STALE  # none yet
    assert attempt(ctl, emergency, phone(site)).granted
    ctl.apply_revocation(revocation(site, 1))
    assert attempt(ctl, planned, phone(site)).granted
    site.clock.advance(3601)
    planned = site.token()
    assert attempt(ctl, planned, phone(site)).reason is Reason.REVOCATION_STALE
    assert attempt(ctl, both, phone(site)).reason is Reason.REVOCATION_STALE
    ctl.set_alarm(True)
    d = attempt(ctl, both, phone(site))
    assert d.granted and d.purpose == "emergency"
    [status] = [s for s in ctl.revocation_status() if s.iss == ORG]
    assert status.stale and status.seq == 1 and status.max_age == 3600


# -- rate limiting ------------------------------------------------------------------------
def test_a_guessing_peer_is_rate_limited_then_released(site: Site) -> None:
    site.write_config(extra_access="rate_limit = 3\nrate_window = 60\nsuspicious_after = 3")
    ctl = site.controller()
    bad = site.token(key=site.keys["stranger"])
    reasons = [attempt(ctl, bad, phone(site), peer="evil").reason for _ in range(4)]
    assert reasons == [Reason.BAD_SIGNATURE] * 3 + [Reason.RATE_LIMITED]
    assert attempt(ctl, site.token(), phone(site), peer="evil").reason is Reason.RATE_LIMITED
    site.clock.advance(61)
    assert attempt(ctl, site.token(), phone(site), peer="evil").granted


def test_door_under_attack_hides_reasons_but_opens_for_valid_credentials(site: Site) -> None:
    site.write_config(extra_access="rate_limit = 3\nsuspicious_after = 3")
    ctl = site.controller()
    bad = site.token(key=site.keys["stranger"])
    ds = [attempt(ctl, bad, phone(site), peer=f"p{i}") for i in range(4)]
    assert [d.reason for d in ds[:3]] == [Reason.BAD_SIGNATURE] * 3
    assert ds[3].reason is Reason.RATE_LIMITED
    assert [d.suspicious for d in ds] == [False, False, True, False]
    assert ds[2].denials == 3
    assert attempt(ctl, site.token(), phone(site), peer="carer").granted


# -- clock ----------------------------------------------------------------------------------
def test_clock_set_back_cannot_revive_an_expired_token(site: Site) -> None:
    ctl = site.controller()
    t = site.token(exp=int(site.clock.t) + 600, purposes=["planned"])
    live = site.token(exp=int(site.clock.t) + 9000, purposes=["planned"])
    site.clock.advance(3600)
    ctl.flush()
    site.clock.t -= 7200  # someone sets the clock back two hours, then restarts lockgw
    again = site.controller()
    assert not again.clock_status().trusted
    d = attempt(again, t, phone(site))
    assert d.reason is Reason.EXPIRED and not d.clock_trusted  # judged at the floor
    assert attempt(again, live, phone(site)).reason is Reason.CLOCK_UNTRUSTED


def test_untrusted_clock_still_opens_for_emergency_by_default(site: Site) -> None:
    ctl = site.controller()
    emergency = site.token(
        role="alarmopvolger", purposes=["emergency"], exp=int(site.clock.t) + 9000
    )
    expired_emergency = site.token(
        role="alarmopvolger", purposes=["emergency"], exp=int(site.clock.t) + 600
    )
    site.clock.advance(3600)
    site.clock.t -= 7200  # set back while running: the monotonic clock keeps the floor
    assert not ctl.clock_status().trusted
    d = attempt(ctl, emergency, phone(site))
    assert d.granted and d.purpose == "emergency" and not d.clock_trusted
    assert attempt(ctl, expired_emergency, phone(site)).reason is Reason.EXPIRED


def test_untrusted_clock_none_and_all(site: Site) -> None:
    emergency = site.token(
        role="alarmopvolger", purposes=["emergency"], exp=int(site.clock.t) + 9000
    )
    planned = site.token(exp=int(site.clock.t) + 9000)
    site.write_config(extra_access='untrusted_clock_allows = "none"')
    ctl = site.controller()
    site.clock.mono += 100
    site.clock.t -= 3600
    assert attempt(ctl, emergency, phone(site)).reason is Reason.CLOCK_UNTRUSTED
    site.write_config(extra_access='untrusted_clock_allows = "all"')
    ctl.reload(site.config)
    assert attempt(ctl, planned, phone(site)).granted


def test_time_floor_is_persisted_and_never_below_build_floor(site: Site) -> None:
    ctl = site.controller()
    site.clock.advance(10)
    ctl.flush()
    stored = json.loads((site.root / "data" / "access" / "time_floor.json").read_text())
    assert stored["data"]["floor"] == site.clock.t
    site.clock.t = 0.0  # a Pi that booted at 1970
    assert not site.controller().clock_status().trusted


# -- held tokens, commands -------------------------------------------------------------
def test_held_token_is_presented_by_cti_and_survives_restart(
    site: Site, ctl: AccessController
) -> None:
    t = site.token()
    claims = ctl.hold_token(t)
    assert ctl.held_token(claims.cti) == t
    d = attempt(site.controller(), None, phone(site), token_ref=claims.cti)
    assert d.granted
    assert attempt(ctl, None, phone(site), token_ref=b"\x00" * 16).reason is Reason.MALFORMED


def test_hold_token_refuses_bad_tokens(site: Site, ctl: AccessController) -> None:
    with pytest.raises(TokenError) as e:
        ctl.hold_token(site.token(aud="elsewhere"))
    assert e.value.reason is Reason.WRONG_SITE
    with pytest.raises(TokenError) as e:
        ctl.hold_token(site.token(exp=int(site.clock.t) - 3600))
    assert e.value.reason is Reason.EXPIRED
    with pytest.raises(TokenError) as e:
        ctl.hold_token(site.token(key=site.keys["stranger"]))
    assert e.value.reason is Reason.BAD_SIGNATURE


def command(s: Site, cmd: str = "unlock", *, key: str = SIGNER, **kw: object) -> bytes:
    args: dict[str, object] = {"site": SITE, "actor": "responder-4", "now": s.clock.t}
    if cmd != "alarm":
        args["door"] = "front"
    args.update(kw)
    return Command.new(cmd, **args).sign(s.keys[key])  # type: ignore[arg-type]


def test_signed_remote_unlock_is_verified_once(site: Site, ctl: AccessController) -> None:
    raw = command(site, reason="alarm")
    cmd = ctl.verify_command(raw)
    assert (cmd.cmd, cmd.signer, cmd.door) == ("unlock", SIGNER, "front")
    d = Decision.for_command(cmd)
    assert d.granted and d.purpose == "emergency" and d.iss == SIGNER and d.sub == "responder-4"
    with pytest.raises(ControlMessageError) as e:
        ctl.verify_command(raw)
    assert e.value.reason is Reason.NONCE_REUSED
    with pytest.raises(ControlMessageError) as e:
        site.controller().verify_command(raw)  # the request id is remembered on disk
    assert e.value.reason is Reason.NONCE_REUSED


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"key": "stranger"}, Reason.UNKNOWN_ISSUER),
        ({"site": "site-other"}, Reason.WRONG_SITE),
        ({"valid_for": -120}, Reason.EXPIRED),
        ({"valid_for": 600}, Reason.MALFORMED),
        ({"cmd": "lock"}, Reason.ROLE_NOT_PERMITTED),
    ],
)
def test_bad_commands_are_refused(
    site: Site, ctl: AccessController, kw: dict[str, object], reason: Reason
) -> None:
    cmd = str(kw.pop("cmd", "unlock"))
    with pytest.raises(ControlMessageError) as e:
        ctl.verify_command(command(site, cmd, **kw))
    assert e.value.reason is reason


def test_command_with_a_forged_signature_is_bad_signature(
    site: Site, ctl: AccessController
) -> None:
    from protocols.cose import sign1
    from protocols.keys import kid_of

    c = Command.new("unlock", site=SITE, actor="x", door="front", now=site.clock.t)
    forged = sign1(site.keys["stranger"], c.encode(), kid=kid_of(site.keys[SIGNER]))
    with pytest.raises(ControlMessageError) as e:
        ctl.verify_command(forged)
    assert e.value.reason is Reason.BAD_SIGNATURE


def test_alarm_command_verifies(site: Site, ctl: AccessController) -> None:
    cmd = ctl.verify_command(command(site, "alarm", state="raised"))
    assert (cmd.cmd, cmd.state) == ("alarm", "raised")


def test_reload_keeps_state_and_applies_new_rules(site: Site, ctl: AccessController) -> None:
    t = site.token(sub="carer-99")
    ctl.apply_revocation(revocation(site, 3, sub=["carer-99"]))
    ctl.set_alarm(True)
    site.write_config(issuer_extra="consent_until = 2026-01-01")
    ctl.reload(site.config)
    assert ctl.alarm_raised
    assert attempt(ctl, t, phone(site)).reason is Reason.REVOKED
    assert attempt(ctl, site.token(), phone(site)).reason is Reason.ISSUER_NOT_CONSENTED


def test_held_tokens_expire_and_are_dropped_after_restart(
    site: Site, ctl: AccessController
) -> None:
    short = ctl.hold_token(site.token(exp=int(site.clock.t) + 600))
    long = ctl.hold_token(site.token(exp=int(site.clock.t) + 90_000))
    site.clock.advance(3600)
    again = site.controller()
    assert again.held_token(short.cti) is not None  # kept until the next hold prunes
    again.hold_token(site.token(exp=int(site.clock.t) + 600))
    assert again.held_token(short.cti) is None
    assert again.held_token(long.cti) is not None
    assert attempt(again, None, phone(site), token_ref=short.cti).reason is Reason.MALFORMED


def test_unreadable_state_is_set_aside_and_reported(site: Site, ctl: AccessController) -> None:
    ctl.apply_revocation(revocation(site, 1, sub=["x"]))
    state = site.root / "data" / "access"
    (state / "revocations.json").write_text("{not json")
    (state / "held" / ("00" * 16 + ".cwt")).write_bytes(b"junk")
    again = site.controller()
    assert any("revocations.json" in p for p in again.state_problems)
    assert any(".cwt" in p for p in again.state_problems)
    assert (state / "revocations.json.corrupt").exists()
    assert again.apply_revocation(revocation(site, 1)).status == "applied"


def test_clock_status_and_flush(site: Site, ctl: AccessController) -> None:
    st = ctl.clock_status()
    assert st.trusted and st.now == site.clock.t and "floor" in st.detail
    site.clock.t -= 3600
    st = ctl.clock_status()
    assert not st.trusted and st.floor > st.now and "behind" in st.detail


def test_clock_trust_changes_are_logged(site: Site, ctl: AccessController) -> None:
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        site.clock.t -= 3600
        assert not ctl.alarm_raised  # any decision-time read notices
        site.clock.t += 7200
        assert not ctl.alarm_raised
    assert [e["event"] for e in logs] == ["access.clock_untrusted", "access.clock_trusted"]


def test_outstanding_challenges_are_bounded_and_expired_ones_swept(
    site: Site, ctl: AccessController
) -> None:
    from gateway.access.controller import _MAX_NONCES

    first = ctl.new_challenge()
    for _ in range(_MAX_NONCES + 10):  # a flood of hellos that never answer
        ctl.new_challenge()
    assert len(ctl._nonces) <= _MAX_NONCES
    t = site.token()
    proof = sign_proof(phone(site), first, SITE, "front", "unlock")
    assert ctl.decide(AccessRequest("front", "unlock", first, proof, t)).reason is (
        Reason.NONCE_REUSED
    )  # the oldest gave way
    site.clock.advance(31)  # every challenge so far has expired ...
    for _ in range(300):  # ... and goes at the next refill of random bytes (every 256)
        ctl.new_challenge()
    assert len(ctl._nonces) <= 300


def test_the_time_floor_is_saved_off_the_decision_path(site: Site) -> None:
    """A decision never writes the floor's file (an fsync on an SD card is tens of ms);
    the daemon's clock check does, once it is PERSIST_EVERY seconds behind."""
    from gateway.access.clock import PERSIST_EVERY

    ctl = site.controller()
    path = site.root / "data" / "access" / "time_floor.json"
    assert path.exists()  # a first start writes every state file at once
    assert not ctl.persist_time_floor()  # saved; nothing due now
    before = path.read_bytes()
    site.clock.advance(PERSIST_EVERY + 1)
    assert attempt(ctl, site.token(), phone(site)).granted
    assert path.read_bytes() == before  # the decision wrote nothing
    assert ctl.persist_time_floor()
    assert json.loads(path.read_text())["data"]["floor"] == site.clock.t
    assert not ctl.persist_time_floor()  # and not again until it is due again
