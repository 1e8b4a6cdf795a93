"""A tail that cannot be cut (issue 18 item 2): the journal's head is signed with the site
key, kept beside the journal and published in the retained status; ``lockgw audit verify``
checks the journal against the newest signed head it finds — beside the journal, or the
platform's copy given with ``--head`` — and reports rows cut from the end."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.journal import Journal, journal_path
from gateway.journal.heads import KEEP, HeadSigner, heads_path, read_heads, write_heads
from gateway.site_keys import b64url, load_or_create
from protocols.events import BatteryEvent, GatewayEvent
from protocols.journal_head import HeadError, sign_head
from simulators.broker import MosquittoBroker
from simulators.platform import Platform
from simulators.site import SimSite

SITE = "site-heads"


async def _journal_with(data: Path, n: int) -> None:
    async with Journal(journal_path(data), SITE, retention_days=30) as j:
        for i in range(n):
            await j.emit(BatteryEvent(device="front-lock", door="front", level=90 - i, low=False,
                                      critical=False))  # fmt: skip


def _cut(data: Path, after: int) -> None:
    with sqlite3.connect(journal_path(data)) as db:
        db.execute("DELETE FROM events WHERE seq > ?", (after,))
        db.execute("DELETE FROM outbox WHERE seq > ?", (after,))


async def test_an_old_journal_verifies_and_says_its_tail_is_not_proven(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A journal written before heads were signed (no heads file, no site key): the chain
    verifies as before, and verify says plainly that the tail is not proven."""
    await _journal_with(tmp_path, 5)
    assert await main(["audit", "verify", "--journal", str(journal_path(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "intact: seq 1..5" in out and "tail not proven: no signed head" in out, out


async def test_rows_cut_from_the_end_are_reported_against_the_signed_head(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = load_or_create(tmp_path)
    await _journal_with(tmp_path, 54)
    async with Journal(journal_path(tmp_path), SITE, retention_days=30) as j:
        signer = HeadSigner(j, SITE, keys.sign.private, interval=60)
        await signer.start()
        assert signer.latest is not None and signer.latest.seq == 54
        assert await signer.sign_now() is signer.latest  # nothing new: no new head
    journal = str(journal_path(tmp_path))
    assert await main(["audit", "verify", "--journal", journal]) == 0
    out = capsys.readouterr().out
    assert "tail proven: the journal holds the signed head of" in out and "(seq 54)" in out

    _cut(tmp_path, 49)
    assert await main(["audit", "verify", "--journal", journal]) == 1
    out = capsys.readouterr().out
    assert "rows after seq 49 were removed: the signed head of" in out, out
    assert "covers seq 54, the journal ends at 49" in out


async def test_the_platforms_copy_catches_a_cut_that_also_replaced_the_local_heads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Root on the hub cuts rows and signs a new head over the shorter journal with the
    site key it holds: the hub's own file agrees, the platform's older copy does not."""
    keys = load_or_create(tmp_path)
    await _journal_with(tmp_path, 12)
    async with Journal(journal_path(tmp_path), SITE, retention_days=30) as j:
        signer = HeadSigner(j, SITE, keys.sign.private, interval=60)
        await signer.start()
        platform_copy = signer.latest
    assert platform_copy is not None
    kept = tmp_path / "platform-status.json"
    kept.write_text(json.dumps({"state": "online", "head": platform_copy.wire()}))

    _cut(tmp_path, 9)
    with sqlite3.connect(journal_path(tmp_path)) as db:
        link = bytes(db.execute("SELECT hash FROM events WHERE seq = 9").fetchone()[0]).hex()
    forged = sign_head(keys.sign.private, SITE, 9, link, "2026-12-07T12:05:00.000Z")
    write_heads(heads_path(journal_path(tmp_path)), [forged])

    journal = str(journal_path(tmp_path))
    assert await main(["audit", "verify", "--journal", journal]) == 0  # the hub fools itself
    capsys.readouterr()
    assert await main(["audit", "verify", "--journal", journal, "--head", str(kept)]) == 1
    out = capsys.readouterr().out
    assert "rows after seq 9 were removed" in out and "covers seq 12" in out, out
    assert f"--head {kept}" in out
    # the same, as JSON on the command line, checked with the key the platform pinned
    given = json.dumps(platform_copy.wire())
    # (--key=: a base64url key may start with "-")
    argv = ["audit", "verify", "--journal", journal, "--head", given,
            f"--key={b64url(keys.sign.public)}"]  # fmt: skip
    assert await main(argv) == 1
    assert "rows after seq 9 were removed" in capsys.readouterr().out


async def test_a_head_that_is_forged_or_for_another_key_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = load_or_create(tmp_path)
    other = load_or_create(tmp_path / "elsewhere")
    await _journal_with(tmp_path, 3)
    journal = str(journal_path(tmp_path))
    with sqlite3.connect(journal_path(tmp_path)) as db:
        link = bytes(db.execute("SELECT hash FROM events WHERE seq = 3").fetchone()[0]).hex()
    good = sign_head(keys.sign.private, SITE, 3, link, "2026-12-07T12:00:00.000Z")
    altered = good.model_copy(update={"seq": 2})
    argv = ["audit", "verify", "--journal", journal, "--head"]
    assert await main([*argv, json.dumps(altered.wire())]) == 1
    assert "NOT PROVEN" in (out := capsys.readouterr().out) and "does not hold" in out, out
    foreign = sign_head(other.sign.private, SITE, 3, link, "2026-12-07T12:00:00.000Z")
    assert await main([*argv, json.dumps(foreign.wire())]) == 1
    assert f"signed with key {other.sign.kid}" in capsys.readouterr().out
    assert await main([*argv, "{not json"]) == 1
    assert "not a signed journal head" in capsys.readouterr().err
    assert await main([*argv, json.dumps(good.wire())]) == 0
    assert "tail proven" in capsys.readouterr().out


async def test_the_heads_file_keeps_the_newest_few_and_a_damaged_one_is_set_aside(
    tmp_path: Path,
) -> None:
    keys = load_or_create(tmp_path)
    async with Journal(journal_path(tmp_path), SITE, retention_days=30) as j:
        signer = HeadSigner(j, SITE, keys.sign.private, interval=60)
        await signer.start()
        for _ in range(KEEP + 3):
            await j.emit(GatewayEvent(type="gateway.started", version="t"))
            await signer.sign_now()
    path = heads_path(journal_path(tmp_path))
    heads = read_heads(path)
    assert len(heads) == KEEP and heads[-1].seq == KEEP + 3
    raw = json.loads(path.read_text())
    raw["heads"][0]["seq"] = 1000
    path.write_text(json.dumps(raw))
    with pytest.raises(HeadError, match="checksum"):
        read_heads(path)
    async with Journal(journal_path(tmp_path), SITE, retention_days=30) as j:
        signer = HeadSigner(j, SITE, keys.sign.private, interval=60)
        await signer.start()
    assert [h.seq for h in read_heads(path)] == [KEEP + 3]
    assert len(_set_aside(tmp_path)) == 1


def _set_aside(data: Path) -> list[Path]:
    return list(data.glob("journal-heads.json.damaged-*"))


@pytest.mark.slow
async def test_the_running_gateway_publishes_signed_heads_and_the_platforms_copy_proves_a_cut(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """``lockgw run``: heads on the retained status (the last one at stop); rows cut and
    the hub's heads file re-signed over the shorter journal → verify with the head the
    platform kept fails; a door edit fails too."""
    async with SimSite(tmp_path) as site:
        site.write_config(broker.url, extra="[journal]\nhead_interval = 1\n")
        async with Platform(broker.url, site.site) as platform:
            await site.start_gateway()
            await platform.wait_until(
                lambda: (platform.status or {}).get("head") is not None, timeout=20
            )
            await site.stop("gateway")
            await platform.wait_until(
                lambda: (platform.status or {}).get("state") == "offline", timeout=20
            )
            status = dict(platform.status or {})
        head = status["head"]
        data = tmp_path / "data"
        last = await _last_seq(data)
        assert head["seq"] == last and head["site"] == site.site  # covers gateway.stopping
        assert head["kid"] == load_or_create(data).sign.kid
        kept = tmp_path / "platform-head.json"
        kept.write_text(json.dumps(status))
        cfg = str(site.config)
        rc, out = await site.cli("audit", "verify", "--config", cfg, "--head", str(kept))
        assert rc == 0 and "tail proven" in out, out

        # root on the hub: cut the last rows and re-sign the hub's own heads over them
        _cut(data, last - 2)
        keys = load_or_create(data)
        with sqlite3.connect(journal_path(data)) as db:
            link = bytes(
                db.execute("SELECT hash FROM events WHERE seq = ?", (last - 2,)).fetchone()[0]
            ).hex()
        forged = sign_head(keys.sign.private, site.site, last - 2, link, head["ts"])
        write_heads(heads_path(journal_path(data)), [forged])
        rc, out = await site.cli("audit", "verify", "--config", cfg)
        assert rc == 0, out  # on its own word the hub is whole
        rc, out = await site.cli("audit", "verify", "--config", cfg, "--head", str(kept))
        assert rc == 1, out
        assert f"rows after seq {last - 2} were removed" in out and f"covers seq {last}" in out

        with sqlite3.connect(journal_path(data)) as db:
            db.execute("UPDATE events SET door = 'back' WHERE seq = 1")
        rc, out = await site.cli("audit", "verify", "--config", cfg)
        assert rc == 1 and "door column differs" in out, out


async def _last_seq(data: Path) -> int:
    with sqlite3.connect(journal_path(data)) as db:
        return int(db.execute("SELECT max(seq) FROM events").fetchone()[0])
