"""Signed rosters: the message, the gateway's decision with and without them, the CLI.

A roster is an issuer's signed list of the people it authorises at one site (an
addition to CONTRACT §5). The gateway keeps the newest per issuer, refuses rollback,
and flags — or, with ``access.roster_check = "refuse"``, refuses — a token its
issuer's current roster does not list.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from cred_kit import ORG, RESIDENT, SITE, Site, attempt, make_site
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from gateway.access import AccessController
from gateway.access.state import StateHistory
from gateway.cli import main
from protocols.control import Roster, RosterEntry
from protocols.errors import ControlMessageError, Reason
from protocols.token import b64decode, b64encode, decode_token
from protocols.windows import Window

CTI_A = bytes(range(16))
CTI_B = bytes(range(16, 32))


def entry(sub: str = "carer-17", name: str = "Anna, verzorgende", **kw: object) -> RosterEntry:
    args: dict[str, object] = {
        "sub": sub,
        "name": name,
        "role": "verzorgende",
        "purposes": ("planned",),
        "doors": ("front",),
    }
    args.update(kw)
    return RosterEntry(**args)  # type: ignore[arg-type]


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return make_site(tmp_path)


def signed(site: Site, seq: int, *entries: RosterEntry, iss: str = ORG, to: str = SITE) -> bytes:
    return Roster.new(iss, to, seq, entries, iat=int(site.clock.t)).sign(site.keys[iss])


# -- the message ---------------------------------------------------------------------------
def test_a_signed_roster_verifies_and_keeps_every_field(site: Site) -> None:
    e = entry(
        cti=CTI_A,
        windows=(Window(31, 420, 600),),
        nbf=100,
        exp=200,
        purposes=("planned", "emergency"),
    )
    raw = signed(site, 3, e, entry("carer-9", "Bram, wijkverpleegkundige"))
    r = Roster.verify(raw, {ORG: site.keys[ORG].public_key()}, site=SITE)
    assert (r.iss, r.site, r.seq) == (ORG, SITE, 3)
    assert r.entries[0] == e
    assert r.lists("anyone", CTI_A) and r.lists("carer-9", CTI_B)
    assert not r.lists("carer-17", CTI_B)  # an entry with a cti lists that token only


def test_a_roster_for_another_site_is_refused_as_wrong_site(site: Site) -> None:
    raw = signed(site, 1, entry(), to="site-elsewhere")
    with pytest.raises(ControlMessageError) as exc:
        Roster.verify(raw, {ORG: site.keys[ORG].public_key()}, site=SITE)
    assert exc.value.reason is Reason.WRONG_SITE


def test_a_roster_signed_by_another_key_is_refused(site: Site) -> None:
    raw = Roster.new(ORG, SITE, 1, [entry()]).sign(site.keys["stranger"])
    with pytest.raises(ControlMessageError) as exc:
        Roster.verify(raw, {ORG: site.keys[ORG].public_key()}, site=SITE)
    assert exc.value.reason is Reason.BAD_SIGNATURE
    with pytest.raises(ControlMessageError) as exc:
        Roster.verify(raw, {RESIDENT: site.keys[RESIDENT].public_key()}, site=SITE)
    assert exc.value.reason is Reason.UNKNOWN_ISSUER


@pytest.mark.parametrize(
    "bad",
    [
        {"name": ""},
        {"name": "x" * 65},
        {"purposes": ("holiday",)},
        {"purposes": ()},
        {"doors": ("front", "front")},
        {"cti": b"short"},
    ],
)
def test_a_roster_with_a_bad_entry_is_never_signed(site: Site, bad: dict[str, object]) -> None:
    with pytest.raises(ControlMessageError) as exc:
        signed(site, 1, entry(**bad))
    assert exc.value.reason is Reason.MALFORMED


_VALID = Roster.new(
    ORG, SITE, 1, [entry(cti=CTI_A, windows=(Window(31, 420, 600),), exp=99)], iat=1
).sign(Ed25519PrivateKey.generate())


@given(st.integers(0, len(_VALID) - 1), st.integers(0, 255), st.binary(max_size=8))
def test_any_damaged_roster_decodes_or_raises_a_control_message_error(
    at: int, value: int, tail: bytes
) -> None:
    data = bytearray(_VALID)
    data[at] = value
    with contextlib.suppress(ControlMessageError):
        Roster.decode(bytes(data) + tail)


# -- the decision ----------------------------------------------------------------------------
def test_apply_reports_who_was_added_removed_and_changed(site: Site) -> None:
    ctl = site.controller()
    first = ctl.apply_roster(signed(site, 1, entry(), entry("carer-9", "Bram")))
    assert first.status == "applied" and first.people == 2
    assert [e.name for e in first.added] == ["Anna, verzorgende", "Bram"]
    second = ctl.apply_roster(
        signed(site, 2, entry(windows=(Window(1, 0, 60),)), entry("carer-3", "Chidi"))
    )
    assert second.status == "applied" and second.held_seq == 1
    assert [e.name for e in second.added] == ["Chidi"]
    assert [e.name for e in second.removed] == ["Bram"]
    assert [e.name for e in second.changed] == ["Anna, verzorgende"]
    assert ctl.site_people() == 2


def test_an_older_or_equal_roster_is_ignored(site: Site) -> None:
    ctl = site.controller()
    assert ctl.apply_roster(signed(site, 5, entry())).status == "applied"
    for seq in (5, 4):
        out = ctl.apply_roster(signed(site, seq, entry("carer-9", "Bram")))
        assert out.status == "ignored" and out.held_seq == 5
    assert [h.roster.seq for h in ctl.rosters()] == [5]


def test_a_refused_roster_changes_nothing_and_names_its_sender(site: Site) -> None:
    ctl = site.controller()
    out = ctl.apply_roster(signed(site, 1, entry(), to="site-elsewhere"))
    assert (out.status, out.reason, out.issuer, out.seq) == ("refused", Reason.WRONG_SITE, ORG, 1)
    assert ctl.apply_roster(b"\x00garbage").reason is Reason.MALFORMED
    assert ctl.rosters() == []


def test_without_a_roster_nothing_is_flagged(site: Site) -> None:
    d = attempt(site.controller(), site.token(), site.keys["phone"])
    assert d.granted and not d.not_on_roster


def test_a_listed_token_is_granted_unflagged_by_cti_or_by_sub(site: Site) -> None:
    ctl = site.controller()
    token = site.token(cti=CTI_A)
    ctl.apply_roster(signed(site, 1, entry(sub="someone-else", cti=CTI_A)))
    d = attempt(ctl, token, site.keys["phone"])
    assert d.granted and not d.not_on_roster
    ctl.apply_roster(signed(site, 2, entry(sub="carer-17")))  # every token of carer-17
    d = attempt(ctl, site.token(cti=CTI_B), site.keys["phone"])
    assert d.granted and not d.not_on_roster


def test_a_token_its_roster_does_not_list_is_granted_and_flagged(site: Site) -> None:
    ctl = site.controller()
    ctl.apply_roster(signed(site, 1, entry("carer-9", "Bram")))
    d = attempt(ctl, site.token(), site.keys["phone"])
    assert d.granted and d.reason is Reason.OK and d.not_on_roster


def test_refuse_mode_refuses_planned_care_but_lets_emergencies_in_flagged(site: Site) -> None:
    site.write_config(extra_access='roster_check = "refuse"')
    ctl = site.controller()
    ctl.apply_roster(signed(site, 1, entry("carer-9", "Bram")))
    d = attempt(ctl, site.token(), site.keys["phone"])
    assert not d.granted and d.reason is Reason.NOT_ON_ROSTER
    assert d.sub == "carer-17"  # attributed in the journal
    # an alarm responder outside any window, while an alarm is raised
    ctl.set_alarm(True)
    t = site.token(
        sub="responder-2",
        role="alarmopvolger",
        purposes=["emergency"],
        windows=[Window(1, 0, 1)],
    )
    d = attempt(ctl, t, site.keys["phone"])
    assert d.granted and d.purpose == "emergency" and d.not_on_roster
    # another issuer without a roster is not affected
    t = site.token(iss=RESIDENT, sub="daughter", role="mantelzorger")
    assert attempt(ctl, t, site.keys["phone"]).granted


@pytest.mark.parametrize("how", ["deleted", "garbage"])
def test_a_lost_roster_refuses_planned_care_until_it_is_back(site: Site, how: str) -> None:
    """roster_check = "refuse", rosters.json lost after the first start: the issuer the
    journal records a roster of waits for it again — its planned care refused
    (not_on_roster, saying the roster was lost), emergencies let in, a restart lifts
    nothing, an older roster is a rollback; the same seq again lifts the wait. An issuer
    that never sent a roster is not affected; with "flag" nothing is refused."""
    site.write_config(extra_access='roster_check = "refuse"')
    ctl = site.controller()
    assert ctl.apply_roster(signed(site, 5, entry())).status == "applied"
    path = site.root / "data" / "access" / "rosters.json"
    if how == "deleted":
        path.unlink()
    else:
        path.write_bytes(b"\x00not json")
    history = StateHistory(has_events=True, roster_seqs={ORG: 5})
    again = AccessController(site.config, history=history, clock=site.clock.time)
    d = attempt(again, site.token(), site.keys["phone"])
    assert (d.granted, d.reason) == (False, Reason.NOT_ON_ROSTER)
    assert "lost" in d.detail and "seq 5" in d.detail, d.detail
    [fb] = [f for f in again.fallbacks if f.file == "rosters.json"]
    assert fb.issuers == [ORG] and fb.problem == ("missing" if how == "deleted" else "damaged")
    [notice] = [n for n in again.state_notices() if n.file == "rosters.json"]
    assert notice.in_force and notice.issuers == [ORG] and "not_on_roster" in notice.fallback
    emergency = site.token(sub="responder-2", role="alarmopvolger", purposes=["emergency"])
    assert attempt(again, emergency, site.keys["phone"]).granted  # care safety first
    daughter = site.token(iss=RESIDENT, sub="daughter", role="mantelzorger")
    assert attempt(again, daughter, site.keys["phone"]).granted  # never sent a roster
    # a restart lifts nothing; an older roster is a rollback
    again = AccessController(site.config, history=history, clock=site.clock.time)
    assert attempt(again, site.token(), site.keys["phone"]).reason is Reason.NOT_ON_ROSTER
    assert again.apply_roster(signed(site, 4, entry())).status == "ignored"
    assert attempt(again, site.token(), site.keys["phone"]).reason is Reason.NOT_ON_ROSTER
    # "flag": the same wait restricts nothing
    site.write_config(extra_access='roster_check = "flag"')
    flag = AccessController(site.config, history=history, clock=site.clock.time)
    assert attempt(flag, site.token(), site.keys["phone"]).granted
    assert not any(n.in_force for n in flag.state_notices())
    # the lost roster again: the wait ends, for good
    site.write_config(extra_access='roster_check = "refuse"')
    again = AccessController(site.config, history=history, clock=site.clock.time)
    assert again.apply_roster(signed(site, 5, entry())).status == "applied"
    assert attempt(again, site.token(), site.keys["phone"]).granted
    assert not any(n.in_force for n in again.state_notices())
    assert not AccessController(site.config, history=history, clock=site.clock.time).state_notices()


def test_a_roster_file_deleted_while_running_is_not_written_over_by_a_reload(
    site: Site,
) -> None:
    """rosters.json deleted while the gateway runs, then SIGHUP: the reload does not
    write an empty file in its place, so the next start still finds the loss."""
    site.write_config(extra_access='roster_check = "refuse"')
    ctl = site.controller()
    ctl.apply_roster(signed(site, 2, entry()))
    path = site.root / "data" / "access" / "rosters.json"
    path.unlink()
    ctl.reload(site.config)
    assert not path.exists()
    history = StateHistory(has_events=True, roster_seqs={ORG: 2})
    again = AccessController(site.config, history=history, clock=site.clock.time)
    assert attempt(again, site.token(), site.keys["phone"]).reason is Reason.NOT_ON_ROSTER


def test_a_missing_roster_file_where_none_was_ever_sent_is_no_loss(site: Site) -> None:
    """An older version wrote rosters.json only with the first roster: a hub upgraded
    without ever receiving one starts without it — nothing lost, nothing reported."""
    site.write_config(extra_access='roster_check = "refuse"')
    site.controller()
    (site.root / "data" / "access" / "rosters.json").unlink()
    ctl = AccessController(
        site.config, history=StateHistory(has_events=True), clock=site.clock.time
    )
    assert not ctl.fallbacks and not ctl.state_notices()
    assert attempt(ctl, site.token(), site.keys["phone"]).granted


def test_the_roster_survives_a_restart_and_goes_when_its_issuer_does(site: Site) -> None:
    site.controller().apply_roster(signed(site, 4, entry("carer-9", "Bram")))
    again = site.controller()
    assert [h.roster.seq for h in again.rosters()] == [4]
    assert attempt(again, site.token(), site.keys["phone"]).not_on_roster
    assert again.apply_roster(signed(site, 3, entry())).status == "ignored"  # no rollback
    # the resident withdraws consent for the organisation: its roster is not used
    text = site.config_path.read_text()
    start = text.index("[[issuers]]")
    end = text.index("[[issuers]]", start + 1)
    site.config_path.write_text(text[:start] + text[end:])
    assert site.controller().rosters() == []


def test_names_stay_on_the_hub_after_a_person_leaves_the_roster_until_forgotten(
    site: Site,
) -> None:
    ctl = site.controller()
    ctl.apply_roster(signed(site, 1, entry(), entry("carer-9", "Bram")))
    ctl.apply_roster(signed(site, 2, entry()))
    names = site.controller().names()  # from disk
    assert names[(ORG, "carer-9")].name == "Bram"  # left the roster, still named
    assert names[(ORG, "carer-17")].role == "verzorgende"
    site.clock.advance(366 * 86400)  # past the journal's retention (365 days)
    ctl.apply_roster(signed(site, 3, entry()))
    assert set(ctl.names()) == {(ORG, "carer-17")}


def test_site_people_counts_only_entries_valid_now(site: Site) -> None:
    ctl = site.controller()
    now = int(site.clock.t)
    ctl.apply_roster(
        signed(site, 1, entry(), entry("carer-9", "Bram", exp=now - 1), entry("c-3", "C", nbf=now + 9))
    )
    assert ctl.site_people() == 1


# -- the command line --------------------------------------------------------------------------
async def test_token_issue_writes_the_roster_entry_and_roster_sign_signs_it(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    roster_file = tmp_path / "rosters" / f"{SITE}.json"
    base = [
        "token", "issue", "--key", str(tmp_path / "keys" / f"{ORG}.key"), "--iss", ORG,
        "--site", SITE, "--door", "front", "--holder-pub", str(tmp_path / "keys" / "phone.pub"),
        "--role", "verzorgende", "--purpose", "planned", "--window", "mon-fri 07:00-10:00",
        "--valid-for", "30d", "--roster", str(roster_file),
    ]  # fmt: skip
    assert await main([*base, "--sub", "carer-17", "--name", "Anna, verzorgende"]) == 0
    token = b64decode(capsys.readouterr().out.strip())
    assert await main([*base, "--sub", "carer-9", "--name", "Bram"]) == 0
    capsys.readouterr()
    data = json.loads(roster_file.read_text())
    assert (data["iss"], data["site"]) == (ORG, SITE)
    assert [e["name"] for e in data["entries"]] == ["Anna, verzorgende", "Bram"]
    assert data["entries"][0]["cti"] == decode_token(token).cti.hex()
    assert data["entries"][0]["win"] == [[31, 420, 600]]

    key = str(tmp_path / "keys" / f"{ORG}.key")
    sign = ["roster", "sign", "--key", key, "--file", str(roster_file)]
    assert await main([*sign, "--seq", "1"]) == 0
    raw = b64decode(capsys.readouterr().out.strip())
    ctl: AccessController = site.controller()
    out = ctl.apply_roster(raw)
    assert out.status == "applied" and [e.name for e in out.added] == ["Anna, verzorgende", "Bram"]

    assert await main(["roster", "remove", "--file", str(roster_file), "--sub", "carer-9"]) == 0
    assert await main([*sign, "--seq", "2"]) == 0
    # (in this process the controller's log lines go to stdout too: the roster is the last)
    out = ctl.apply_roster(b64decode(capsys.readouterr().out.strip().splitlines()[-1]))
    assert [e.name for e in out.removed] == ["Bram"]

    pub = str(tmp_path / "keys" / f"{ORG}.pub")
    capsys.readouterr()
    assert await main(["roster", "inspect", b64encode(raw), "--pub", pub]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["verified"] is True and shown["seq"] == 1
    other = str(tmp_path / "keys" / "stranger.pub")
    assert await main(["roster", "inspect", b64encode(raw), "--pub", other]) == 1
    assert "signature check failed" in capsys.readouterr().err


async def test_roster_cli_errors_are_one_line(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = str(tmp_path / "keys" / f"{ORG}.key")
    missing = str(tmp_path / "none.json")
    assert await main(["roster", "sign", "--key", key, "--file", missing, "--seq", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lists nobody" in err
    (tmp_path / "bad.json").write_text("{not json")
    bad = str(tmp_path / "bad.json")
    assert await main(["roster", "sign", "--key", key, "--file", bad, "--seq", "1"]) == 2
    assert "cannot read the roster file" in capsys.readouterr().err
    args = [
        "token", "issue", "--key", key, "--iss", ORG, "--sub", "s", "--site", SITE, "--door",
        "front", "--holder-pub", str(tmp_path / "keys" / "phone.pub"), "--role", "verzorgende",
        "--purpose", "planned", "--valid-for", "1d", "--roster", missing,
    ]  # fmt: skip
    assert await main(args) == 2
    assert "--roster and --name go together" in capsys.readouterr().err
    assert await main([*args, "--name", "x" * 80]) == 2
    assert "name must be text of 1..64" in capsys.readouterr().err
    assert await main(["roster", "inspect", "AAAA"]) == 1
    assert "not a valid roster" in capsys.readouterr().err
