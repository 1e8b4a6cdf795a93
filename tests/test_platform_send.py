"""``lockgw-sim platform send``: what a technician or the platform team publishes by hand
(a roster, a revocation list, a remote command, a pushed credential) reaches a running
``lockgw run`` on the right topic and is applied; bad files get one line and exit 2."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from test_door_process import expect, home, west, windows_now

from protocols.control import Command
from protocols.token import b64encode
from simulators.broker import MosquittoBroker
from simulators.platform import _Usage, classify
from simulators.site import Carer, SimSite

SIM = (sys.executable, "-m", "simulators.cli")


async def sim_cli(*argv: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *SIM,
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate(stdin)
    return proc.returncode or 0, out.decode(), err.decode()


def test_each_signed_message_goes_to_its_topic(tmp_path: Path) -> None:
    org = west()
    sim = SimSite(tmp_path, devices=[])
    sim.add_org(org)
    anna = Carer("Anna", "c-7f31", org, "verzorgende")
    token = sim.issue(anna)

    cmd = classify(sim.command("unlock"), sim.site)
    assert (cmd.topic, cmd.retain) == (f"lockgw/v1/{sim.site}/commands", False)
    assert "unlock front" in cmd.what
    rl = classify(sim.revocation(org, 4, cti=(anna.cti,)), None)
    assert (rl.topic, rl.retain) == (f"lockgw/v1/org/{org.id}/revocations", True)
    assert rl.what.startswith(f"revocation list 4 of {org.id}")
    ro = classify(sim.roster(org, 2, [anna]), None)
    assert (ro.topic, ro.retain) == (f"lockgw/v1/org/{org.id}/rosters/{sim.site}", True)
    cred = classify(token, sim.site)
    assert (cred.topic, cred.retain) == (f"lockgw/v1/{sim.site}/credentials", False)

    with pytest.raises(_Usage, match="give --site"):
        classify(token, None)
    with pytest.raises(_Usage, match="a command for site"):
        classify(sim.command("unlock"), "another-home")
    with pytest.raises(_Usage, match="a roster for site"):
        classify(sim.roster(org, 2, [anna]), "another-home")
    with pytest.raises(_Usage, match="not a signed lockgw"):
        classify(b"\xd2garbage", sim.site)


async def test_bad_files_get_one_line_and_send_nothing(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.txt"
    garbage.write_text("this is not a roster\n")
    binary = tmp_path / "photo.jpg"
    binary.write_bytes(b"\xff\xd8\xff\xe0 not text")
    url = "mqtt://127.0.0.1:1"  # never reached: the files are read first
    for argv, says in (
        ((str(garbage),), "not a signed lockgw command, revocation list, roster"),
        ((str(binary),), "neither base64url text nor raw COSE bytes"),
        ((str(tmp_path / "missing"),), "No such file"),
        (("-",), "not a signed lockgw"),
        (("--password-file", str(tmp_path / "missing"), str(garbage)), "--password-file"),
    ):
        code, out, err = await sim_cli(
            "platform", "send", "--broker", url, *argv, stdin=b"QUJD" if "-" in argv else None
        )
        lines = err.strip().splitlines()
        assert code == 2 and out == "", (argv, out, err)
        assert len(lines) == 1 and says in lines[0], (argv, err)
        assert lines[0].startswith("lockgw-sim platform send: "), err


@pytest.mark.slow
async def test_sent_by_hand_a_running_gateway_applies_them(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    inside, _ = windows_now()
    org = west()
    async with home(tmp_path, broker, [org]) as (sim, platform):
        anna = Carer("Anna", "c-7f31", org, "verzorgende")
        bram = Carer("Bram", "c-2a90", org, "verzorgende")
        for c in (anna, bram):
            sim.issue(c, windows=inside)
        files = tmp_path / "out"
        files.mkdir()
        # base64url text as `lockgw roster sign` / `lockgw revoke` print it, and raw bytes
        (files / "roster.txt").write_text(b64encode(sim.roster(org, 1, [anna, bram])) + "\n")
        (files / "revoked.cose").write_bytes(sim.revocation(org, 1, cti=(bram.cti,)))
        raw_cmd = sim.command("unlock")
        (files / "command.txt").write_text(b64encode(raw_cmd))
        code, out, err = await sim_cli(
            "platform", "send", "--broker", broker.url, "--site", sim.site,
            str(files / "roster.txt"), str(files / "revoked.cose"), str(files / "command.txt"),
        )  # fmt: skip
        assert code == 0, err
        said = out.strip().splitlines()
        assert len(said) == 3, out
        assert said[0].startswith(f"sent roster 1 of {org.id}") and said[0].endswith("retained")
        assert said[1].startswith(f"sent revocation list 1 of {org.id}")
        assert said[2].startswith("sent command unlock front")

        applied = await platform.wait_for(lambda e: e["type"] == "roster.applied")
        assert (applied["iss"], applied["list_seq"], applied["people"]) == (org.id, 1, 2)
        await platform.wait_for(
            lambda e: e["type"] == "revocation.applied" and e.get("iss") == org.id
        )
        rid = Command.decode(raw_cmd).request_id
        res = await platform.wait_for(
            lambda e: e["type"] == "command.result" and e.get("request_id") == rid, timeout=15
        )
        assert res["ok"] and res["cmd"] == "unlock", res
        # the revocation list took effect: Bram is refused, Anna still gets in
        await expect(sim, platform, bram, "revoked")
        await expect(sim, platform, anna, "ok")
        # retained where a gateway installed later finds them
        held = await platform.retained(f"lockgw/v1/org/{org.id}/revocations")
        assert held == (files / "revoked.cose").read_bytes()
