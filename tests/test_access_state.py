"""The access state on disk: checksums, and the safe side when a file is missing or damaged.

The controller is built as the daemon builds it, with what the journal says about the
past (:class:`StateHistory`); the real-process versions of these cases are in
``tests/test_state_faults.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cred_kit import ORG, RESIDENT, SIGNER, SITE, Site, attempt, make_site
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.access import AccessController
from gateway.access.state import StateDir, StateHistory, wrap
from protocols.control import MAX_AHEAD, Command, RevocationList
from protocols.errors import ControlMessageError, Reason
from protocols.token import decode_token

FILES = ("time_floor.json", "revocations.json", "commands.json", "alarm.json")
#: what a journal with events says when it shows no revocation list and no alarm
SEEN = StateHistory(has_events=True, complete=True)


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return make_site(tmp_path)


def phone(site: Site) -> Ed25519PrivateKey:
    return site.keys["phone"]


def state_dir(site: Site) -> Path:
    return site.root / "data" / "access"


def controller(site: Site, history: StateHistory | None) -> AccessController:
    return AccessController(
        site.config, history=history, clock=site.clock.time, monotonic=site.clock.monotonic
    )


def command(site: Site, valid_for: int = 60) -> bytes:
    c = Command.new(
        "unlock", site=SITE, actor="responder-4", door="front", now=site.clock.t,
        valid_for=valid_for,
    )  # fmt: skip
    return c.sign(site.keys[SIGNER])


def revocation(site: Site, seq: int, iss: str = ORG, **kw: object) -> bytes:
    return RevocationList.new(iss, seq, iat=int(site.clock.t), **kw).sign(site.keys[iss])  # type: ignore[arg-type]


def damage(path: Path, how: str) -> None:
    if how == "deleted":
        path.unlink()
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(b"\x00\xff garbage \x13" * 7)
    elif how == "wrong checksum":
        doc = json.loads(path.read_text())
        doc["data"] = _tampered(doc["data"])
        path.write_text(json.dumps(doc))
    else:  # pragma: no cover
        raise ValueError(how)


def _tampered(data: object) -> object:
    if isinstance(data, dict) and "floor" in data:
        return {**data, "floor": 0}
    if isinstance(data, dict) and "issuers" in data:
        return {**data, "issuers": {}, "awaiting": {}}
    if isinstance(data, dict) and "used" in data:
        return {**data, "used": {}}
    return {"raised": False, "until": None}


HOW = ("deleted", "truncated", "empty", "garbage", "wrong checksum")


# -- the format -----------------------------------------------------------------------------
def test_first_start_writes_every_state_file_checksummed_and_private(site: Site) -> None:
    ctl = controller(site, StateHistory())
    assert ctl.fallbacks == [] and ctl.state_notices() == []
    for name in FILES:
        path = state_dir(site) / name
        assert path.stat().st_mode & 0o777 == 0o600, name
        doc = json.loads(path.read_text())
        assert set(doc) == {"lockgw_state", "sha256", "data"}, name
    assert state_dir(site).stat().st_mode & 0o777 == 0o700


def test_a_file_of_the_older_form_is_still_read(site: Site) -> None:
    state = StateDir(state_dir(site))
    (state.root / "time_floor.json").write_text(json.dumps({"floor": site.clock.t + 3600}))
    ctl = controller(site, SEEN)
    assert not ctl.clock_status().trusted  # the floor an hour ahead was believed
    assert [f.file for f in ctl.fallbacks] == ["revocations.json", "commands.json", "alarm.json"]


def test_wrap_round_trips_and_a_changed_byte_is_caught(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "s")
    (state.root / "x.json").write_bytes(wrap({"floor": 1.5}))
    assert state.read("x.json").value == {"floor": 1.5}
    raw = (state.root / "x.json").read_bytes().replace(b"1.5", b"2.5")
    (state.root / "x.json").write_bytes(raw)
    loaded = state.read("x.json")
    assert loaded.problem == "damaged" and "checksum" in loaded.detail
    assert (state.root / "x.json.corrupt").read_bytes() == raw  # kept for inspection


def test_a_state_file_that_is_a_fifo_does_not_block(tmp_path: Path) -> None:
    import os

    state = StateDir(tmp_path / "s")
    os.mkfifo(state.root / "alarm.json")
    assert state.read("alarm.json").problem == "damaged"


# -- the time floor ---------------------------------------------------------------------------
@pytest.mark.parametrize("how", HOW)
def test_lost_time_floor_comes_from_the_journal_so_a_clock_set_back_revives_nothing(
    site: Site, how: str
) -> None:
    """The gateway ran until T (its journal's newest event); the token expired an hour
    before T. The file is lost, the clock set back two hours: the token stays expired."""
    controller(site, StateHistory()).flush()
    t_end = site.clock.t
    token = site.token(exp=int(t_end) - 3600, iat=int(t_end) - 7200)
    damage(state_dir(site) / "time_floor.json", how)
    site.clock.t -= 7200
    ctl = controller(site, StateHistory(has_events=True, newest_ts=t_end))
    assert not ctl.clock_status().trusted
    d = attempt(ctl, token, phone(site))
    assert not d.granted and d.reason in (Reason.EXPIRED, Reason.CLOCK_UNTRUSTED), d
    [fb] = [f for f in ctl.fallbacks if f.file == "time_floor.json"]
    assert fb.problem == ("missing" if how == "deleted" else "damaged")
    assert "journal" in fb.fallback
    assert [n.file for n in ctl.state_notices()] == ["time_floor.json"]
    # and the floor is on disk again, checksummed
    assert StateDir(state_dir(site)).read("time_floor.json").value["floor"] >= t_end


def test_without_the_fallback_the_clock_set_back_would_open(site: Site) -> None:
    """The case above, as main behaved: a first start (no journal history) starts at the
    build floor and the token opens — why the history matters."""
    controller(site, StateHistory()).flush()
    t_end = site.clock.t
    token = site.token(exp=int(t_end) - 3600, iat=int(t_end) - 7200)
    (state_dir(site) / "time_floor.json").unlink()
    site.clock.t -= 7200
    assert attempt(controller(site, StateHistory()), token, phone(site)).granted


# -- revocations --------------------------------------------------------------------------------
@pytest.mark.parametrize("how", HOW)
def test_lost_revocations_refuse_planned_care_until_the_list_is_back(
    site: Site, how: str
) -> None:
    ctl = controller(site, StateHistory())
    revoked = site.token(sub="carer-99")
    emergency = site.token(sub="carer-5", role="alarmopvolger", purposes=["emergency"])
    planned = site.token()
    assert ctl.apply_revocation(revocation(site, 7, sub=["carer-99"])).status == "applied"
    assert attempt(ctl, revoked, phone(site)).reason is Reason.REVOKED
    damage(state_dir(site) / "revocations.json", how)
    history = StateHistory(has_events=True, revocation_seqs={ORG: 7})
    again = controller(site, history)
    assert attempt(again, revoked, phone(site)).reason is Reason.REVOCATION_STALE
    d = attempt(again, planned, phone(site))
    assert d.reason is Reason.REVOCATION_STALE and "lost" in d.detail
    assert attempt(again, emergency, phone(site)).granted  # care safety first
    [fb] = [f for f in again.fallbacks if f.file == "revocations.json"]
    assert fb.issuers == [ORG]
    # a restart does not lift the wait
    again = controller(site, history)
    assert attempt(again, planned, phone(site)).reason is Reason.REVOCATION_STALE
    assert any(n.in_force for n in again.state_notices())
    # an older list is a rollback; the same seq again (the lost list) lifts it
    assert again.apply_revocation(revocation(site, 6)).status == "ignored"
    assert attempt(again, planned, phone(site)).reason is Reason.REVOCATION_STALE
    assert again.apply_revocation(revocation(site, 7, sub=["carer-99"])).status == "applied"
    assert attempt(again, planned, phone(site)).granted
    assert attempt(again, revoked, phone(site)).reason is Reason.REVOKED
    assert not any(n.in_force for n in again.state_notices())
    assert not controller(site, history).state_notices()  # lifted for good


def test_issuers_the_journal_never_saw_a_list_from_are_not_restricted(site: Site) -> None:
    controller(site, StateHistory())
    (state_dir(site) / "revocations.json").unlink()
    ctl = controller(site, StateHistory(has_events=True, revocation_seqs={ORG: 3}))
    mantelzorger = site.token(iss=RESIDENT, role="mantelzorger")
    assert attempt(ctl, mantelzorger, phone(site)).granted
    assert attempt(ctl, site.token(), phone(site)).reason is Reason.REVOCATION_STALE


def test_with_a_cut_journal_every_issuer_waits(site: Site) -> None:
    controller(site, StateHistory())
    (state_dir(site) / "revocations.json").unlink()
    ctl = controller(site, StateHistory(has_events=True, complete=False))
    mantelzorger = site.token(iss=RESIDENT, role="mantelzorger")
    assert attempt(ctl, mantelzorger, phone(site)).reason is Reason.REVOCATION_STALE
    assert ctl.apply_revocation(revocation(site, 1, iss=RESIDENT)).status == "applied"
    assert attempt(ctl, mantelzorger, phone(site)).granted


# -- used command ids -------------------------------------------------------------------------
@pytest.mark.parametrize("how", HOW)
def test_lost_command_ids_refuse_every_command_that_could_be_a_replay(
    site: Site, how: str
) -> None:
    ctl = controller(site, StateHistory())
    captured = command(site)
    ctl.verify_command(captured)
    with pytest.raises(ControlMessageError):
        ctl.verify_command(captured)
    damage(state_dir(site) / "commands.json", how)
    site.clock.advance(5)  # the gateway restarts
    again = controller(site, SEEN)
    with pytest.raises(ControlMessageError) as e:
        again.verify_command(captured)  # a replay
    assert e.value.reason is Reason.NONCE_REUSED and "lost" in e.value.detail
    with pytest.raises(ControlMessageError):
        again.verify_command(command(site, valid_for=60))  # could be a replay as well
    skew = site.config.access.skew_seconds
    site.clock.advance(skew)  # exp = start + MAX_AHEAD + skew is the first that can pass
    fresh = command(site, valid_for=MAX_AHEAD)
    assert again.verify_command(fresh).request_id
    # the cut-off survives a restart within the window
    site.clock.advance(1)
    third = controller(site, SEEN)
    with pytest.raises(ControlMessageError):
        third.verify_command(command(site, valid_for=10))
    assert any(n.file == "commands.json" and n.in_force for n in third.state_notices())
    site.clock.advance(MAX_AHEAD + 2 * skew)  # every suspect command has expired
    assert third.verify_command(command(site)).cmd == "unlock"
    assert not third.state_notices()


# -- alarm, held tokens -----------------------------------------------------------------------
@pytest.mark.parametrize("how", HOW)
def test_lost_alarm_state_is_taken_from_the_journal(site: Site, how: str) -> None:
    ctl = controller(site, StateHistory())
    ctl.set_alarm(True)
    raised_at = site.clock.t
    damage(state_dir(site) / "alarm.json", how)
    again = controller(site, StateHistory(has_events=True, alarm=(True, raised_at)))
    assert again.alarm_raised
    [fb] = again.fallbacks
    assert fb.file == "alarm.json" and "raised" in fb.fallback
    (state_dir(site) / "alarm.json").unlink()
    cleared = controller(site, StateHistory(has_events=True, alarm=(False, raised_at)))
    assert not cleared.alarm_raised


def test_a_damaged_held_token_is_set_aside_and_reported(site: Site) -> None:
    ctl = controller(site, StateHistory())
    claims = ctl.hold_token(site.token())
    path = state_dir(site) / "held" / f"{claims.cti.hex()}.cwt"
    path.write_bytes(path.read_bytes()[:20])
    again = controller(site, SEEN)
    assert again.held_token(claims.cti) is None
    assert [f.file for f in again.fallbacks] == [f"held/{path.name}"]
    assert path.with_name(path.name + ".corrupt").exists()
    assert decode_token(site.token()).iss == ORG


# -- the technician's way out of a floor set far ahead -------------------------------------------
async def test_clock_set_floor_brings_a_floor_far_ahead_back_to_now(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    """Deleting the file no longer resets the floor (it comes from the journal); a
    technician who knows the clock is right uses ``lockgw clock set-floor --yes``."""
    import time

    from gateway.cli import main

    state = StateDir(state_dir(site))
    state.save("time_floor.json", {"floor": time.time() + 10 * 86400})
    cfg = str(site.config_path)
    assert await main(["clock", "show", "--config", cfg]) == 0
    assert "is behind it" in capsys.readouterr().out
    assert await main(["clock", "set-floor", "--config", cfg]) == 1  # asks for --yes
    assert await main(["clock", "set-floor", "--config", cfg, "--yes"]) == 0
    floor = state.read("time_floor.json").value["floor"]
    assert abs(floor - time.time()) < 60
    assert await main(["clock", "show", "--config", cfg]) == 0
    assert "at or after it" in capsys.readouterr().out


def test_a_damaged_roster_file_is_reported(site: Site) -> None:
    controller(site, StateHistory())
    StateDir(state_dir(site)).save("rosters.json", {"v": 1, "issuers": {}})
    damage(state_dir(site) / "rosters.json", "garbage")
    ctl = controller(site, SEEN)
    [fb] = ctl.fallbacks
    assert fb.file == "rosters.json" and fb.problem == "damaged" and "roster" in fb.fallback
    assert (state_dir(site) / "rosters.json.corrupt").exists()


# -- key files ------------------------------------------------------------------------------------
def test_a_broken_issuer_or_signer_key_makes_only_that_one_unavailable(site: Site) -> None:
    """The resident's issuer key is not a key and the command signer's is gone: the
    config loads (the problems kept for check-config and health), the resident's tokens
    are refused with issuer_unavailable, the organisation's carers get in, and a command
    is refused with issuer_unavailable, naming the signer."""
    (site.root / "keys" / f"{RESIDENT}.pub").write_text("not a key")
    (site.root / "keys" / f"{SIGNER}.pub").unlink()
    cfg = site.config
    assert len(cfg.key_problems) == 2 and RESIDENT in cfg.key_problems[0], cfg.key_problems
    ctl = controller(site, StateHistory())
    assert set(ctl.unavailable) == {RESIDENT} and set(ctl.unavailable_signers) == {SIGNER}
    daughter = site.token(iss=RESIDENT, sub="daughter", role="mantelzorger")
    d = attempt(ctl, daughter, phone(site))
    assert (d.granted, d.reason) == (False, Reason.ISSUER_UNAVAILABLE), d
    assert RESIDENT in d.detail and d.iss is None, d  # not verified: not attributed
    assert attempt(ctl, site.token(), phone(site)).granted
    with pytest.raises(ControlMessageError) as exc:
        ctl.verify_command(command(site))
    assert exc.value.reason is Reason.ISSUER_UNAVAILABLE and SIGNER in exc.value.detail
