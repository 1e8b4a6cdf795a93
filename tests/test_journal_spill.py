"""The journal's fallback file (gateway/journal/_spill.py): what it keeps, what it refuses,
and that its reserved room takes thousands of events on a disk that is full."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from gateway.journal._spill import HEADER, RESERVE, Held, Spill
from protocols.events import AccessDecisionEvent, Channel


def access(i: int) -> Held:
    body = AccessDecisionEvent(
        type="access.granted", door="front", device="front-lock", iss="org-west",
        sub=f"carer-{i:04d}", role="verzorgende", purpose="planned", action="unlock",
        token_id="ab" * 16, channel=Channel.PHONE, reason="ok",
    )  # fmt: skip
    return Held(f"id-{i}", 1_700_000_000_000_000_000 + i, body.type, "front", body.model_dump_json())


def reopen(path: Path) -> list[Held]:
    s = Spill(path)
    try:
        return s.open()
    finally:
        s.close()


def test_what_is_appended_is_read_back_in_order(tmp_path: Path) -> None:
    path = tmp_path / "journal.spill"
    s = Spill(path)
    assert s.open() == []
    s.append([access(0), access(1)])
    s.append([access(2)])
    s.close()
    got = reopen(path)
    assert [h.id for h in got] == ["id-0", "id-1", "id-2"]
    assert (got[1].ns, got[1].type, got[1].door, got[1].body_json) == (
        access(1).ns, "access.granted", "front", access(1).body_json,
    )  # fmt: skip
    assert all(h.durable for h in got)
    assert path.stat().st_size >= RESERVE  # its room is reserved
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_a_torn_last_record_is_not_read_and_is_written_over(tmp_path: Path) -> None:
    path = tmp_path / "journal.spill"
    s = Spill(path)
    s.open()
    s.append([access(0), access(1)])
    end = s._end
    s.close()
    with path.open("r+b") as f:  # a power cut in the middle of the second record
        f.seek(end - 20)
        f.write(b"\0" * 20)
    assert [h.id for h in reopen(path)] == ["id-0"]
    s = Spill(path)
    s.open()
    s.append([access(2)])
    s.close()
    assert [h.id for h in reopen(path)] == ["id-0", "id-2"]


def test_after_a_reset_nothing_earlier_counts(tmp_path: Path) -> None:
    path = tmp_path / "journal.spill"
    s = Spill(path)
    s.open()
    s.append([access(i) for i in range(5)])
    s.reset()
    assert reopen(path) == []
    s.append([access(9)])  # written over the first old record; the old ones after it
    s.close()  # belong to the previous epoch and end the file
    assert [h.id for h in reopen(path)] == ["id-9"]


def test_a_file_that_is_no_spill_file_is_started_over(tmp_path: Path) -> None:
    path = tmp_path / "journal.spill"
    path.write_bytes(b"something else entirely" * 10)
    assert reopen(path) == []
    header = path.read_bytes()[:HEADER]
    assert header.startswith(b"LGWSPILL")


def test_a_write_that_fails_moves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "journal.spill"
    s = Spill(path)
    s.open()
    s.append([access(0)])
    s.close()
    with pytest.raises(OSError):
        s.append([access(1)])
    assert [h.id for h in reopen(path)] == ["id-0"]


def test_on_a_full_disk_the_reserved_room_takes_thousands_of_events(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        s = Spill(disk / "journal.spill")
        s.open()
        fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:  # the disk is full now
            with pytest.raises(OSError):
                while True:
                    os.write(fd, b"\xff" * 4096)
        finally:
            os.close(fd)
        n = 0
        for i in range(0, 3000, 100):
            s.append([access(i + k) for k in range(100)])
            n += 100
        s.close()
        assert len(reopen(disk / "journal.spill")) == n == 3000
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True, check=False)
