"""Every file and directory lockgw creates is the owner's only, whatever the umask; names
from the command line stay inside their directory."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulators.broker import MosquittoBroker
from simulators.site import Carer
from tests.test_door_process import expect, home, relock, west
from tests.test_state_faults import stop_gateway

LOCKGW = str(Path(sys.executable).parent / "lockgw")


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def loose(root: Path) -> list[str]:
    """Every path under ``root`` (itself included) that group or others may use."""
    out = []
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if mode & 0o077:
            out.append(f"{path.relative_to(root.parent)} {mode:04o}")
    return out


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


async def lockgw(*argv: str, cwd: Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        LOCKGW, *argv, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


@pytest.mark.slow
async def test_a_running_gateway_under_umask_022_creates_nothing_others_can_read(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """``lockgw pair`` and ``lockgw run`` started from a shell with umask 022: the data
    directory, the journal with its -wal and -shm, health.json, the state files, held
    tokens and pairing keys are all 0600 / 0700."""
    org = west()
    with umask(0o022):
        async with home(tmp_path, broker, [org]) as (sim, platform):
            anna = Carer("Anna", "anna", org, "verzorgende")
            sim.issue(anna)
            await platform.send_credential(anna.token)
            await expect(sim, platform, anna, "ok")
            await relock(sim, platform)  # a signed command: commands.json
            data = sim.dir / "data"
            for name in ("journal.sqlite3-wal", "journal.sqlite3-shm", "health.json"):
                assert (data / name).exists(), sorted(p.name for p in data.iterdir())
            held = data / "access" / "held"
            async with asyncio.timeout(10):
                while not any(held.iterdir()):  # noqa: ASYNC110 - a file, no event to wait on
                    await asyncio.sleep(0.05)
            assert loose(data) == []
            await stop_gateway(sim)
        assert loose(data) == []


async def test_keys_new_under_umask_022_writes_owner_only_files(tmp_path: Path) -> None:
    with umask(0o022):
        code, _, err = await lockgw("keys", "new", "--out", "k/sub", "--name", "org", cwd=tmp_path)
    assert code == 0, err
    assert loose(tmp_path / "k") == []
    assert {p.name for p in (tmp_path / "k" / "sub").iterdir()} == {"org.key", "org.pub"}


@pytest.mark.parametrize("name", ["../../x", "../x", "a/b", "/tmp/x", ".hidden", "", "x\ny"])
async def test_keys_new_refuses_a_name_that_leaves_its_directory(tmp_path: Path, name: str) -> None:
    out_dir = tmp_path / "a" / "b"
    code, out, err = await lockgw("keys", "new", "--out", str(out_dir), "--name", name, cwd=tmp_path)
    assert code == 1, (out, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "plain key name" in err
    assert files_under(tmp_path) == []
