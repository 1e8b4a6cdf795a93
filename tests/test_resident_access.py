"""One-time links and sessions for the resident's page (gateway.web.sessions), and the
login limiter: the parts with a clock, tested with one."""

from __future__ import annotations

import stat
from pathlib import Path

from cred_kit import FakeClock

from gateway.web import LoginLimiter, ResidentAccess


def test_a_link_works_once_and_becomes_a_session_that_expires(tmp_path: Path) -> None:
    clock = FakeClock()
    access = ResidentAccess(tmp_path, clock=clock.time)
    link = access.new_link(3600, "tablet")
    secret = access.redeem(link, session_for=86400)
    assert secret is not None and secret != link
    assert access.redeem(link, session_for=86400) is None  # spent
    session = access.session(secret)
    assert session is not None and session.label == "tablet"
    assert access.session(link) is None  # a link is no session
    clock.advance(86401)
    assert access.session(secret) is None


def test_an_expired_link_lets_nobody_in(tmp_path: Path) -> None:
    clock = FakeClock()
    access = ResidentAccess(tmp_path, clock=clock.time)
    link = access.new_link(60)
    clock.advance(61)
    assert access.redeem(link, session_for=86400) is None


def test_the_file_holds_digests_only_and_is_private(tmp_path: Path) -> None:
    access = ResidentAccess(tmp_path)
    link = access.new_link(60)
    secret = access.redeem(access.new_link(60), session_for=60)
    assert secret is not None
    text = access.path.read_text()
    assert link not in text and secret not in text
    assert stat.S_IMODE(access.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(access.dir.stat().st_mode) == 0o700


def test_revoke_all_ends_every_session_and_link_seen_by_another_process(tmp_path: Path) -> None:
    daemon, cli = ResidentAccess(tmp_path), ResidentAccess(tmp_path)
    secret = daemon.redeem(cli.new_link(60), session_for=60)
    assert secret is not None and daemon.session(secret) is not None
    unused = cli.new_link(60)
    assert cli.revoke_all() == (1, 1)
    assert daemon.session(secret) is None
    assert daemon.redeem(unused, session_for=60) is None


def test_an_unreadable_file_lets_nobody_in_until_a_new_link(tmp_path: Path) -> None:
    access = ResidentAccess(tmp_path)
    secret = access.redeem(access.new_link(60), session_for=60)
    assert secret is not None
    access.path.write_text("{broken")
    assert access.session(secret) is None
    assert access.redeem(access.new_link(60), session_for=60) is not None


def test_failed_logins_are_limited_per_address_and_in_all() -> None:
    clock = FakeClock()
    limiter = LoginLimiter(per_peer=2, overall=3, window=60, monotonic=clock.monotonic)
    for _ in range(2):
        assert not limiter.blocked("a")
        limiter.failed("a")
    assert limiter.blocked("a") and not limiter.blocked("b")
    limiter.failed("b")
    assert limiter.blocked("c")  # three in all
    clock.advance(61)
    assert not limiter.blocked("a") and not limiter.blocked("c")
