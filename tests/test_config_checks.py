"""``lockgw check-config`` checks everything ``lockgw run`` needs and prints every problem at
once; ``lockgw run`` refuses a broken config with EX_CONFIG (78), except a broken ``[mqtt]``
section, with which it runs without the broker so the doors keep working, and an issuer's or
command signer's key file that cannot be used, without which it runs on the other keys."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import check_config, load_config
from gateway.keys import write_key_pair
from protocols.errors import ConfigError
from simulators.broker import MosquittoBroker
from simulators.site import Carer, Org, SimSite
from tests.test_door_process import expect, home, lock_state, relock, west
from tests.test_state_faults import stop_gateway

LOCKGW = str(Path(sys.executable).parent / "lockgw")

GOOD = """
[site]
id = "site-3f9c2a7d"
data_dir = "data"

[[issuers]]
id = "org-a"
public_key = "keys/org-a.pub"
roles = ["verzorgende"]
purposes = ["planned"]
doors = ["front"]
"""


def write(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "lockgw.toml"
    p.write_text(body)
    return p


async def check(path: Path | str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = await main(["check-config", "--config", str(path)])
    out = capsys.readouterr()
    return code, out.out + out.err


async def test_check_config_reports_every_problem_run_would_meet_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The configs of issue 15 that check-config called OK and that then crashed ``run``
    (data_dir a file, a port that is not a number, port 99999, missing TLS files), the
    0644 TLS key and password file docs/install.md says are refused, ``/dev/zero`` as a
    key (it hung), and an unknown key before other problems (it hid them) — one run."""
    write_key_pair(tmp_path / "keys", "org-a")
    (tmp_path / "data").write_text("not a directory")
    (tmp_path / "keys" / "gateway.key").write_text("-----BEGIN PRIVATE KEY-----\n")
    (tmp_path / "keys" / "gateway.key").chmod(0o644)
    (tmp_path / "keys" / "mqtt.pw").write_text("secret\n")
    (tmp_path / "keys" / "mqtt.pw").chmod(0o644)
    body = GOOD + """
colour = "blue"

[mqtt]
url = "mqtts://broker.example:notaport"
password_file = "keys/mqtt.pw"

[mqtt.tls]
ca_file = "keys/missing-ca.pem"
cert_file = "keys/missing.crt"
key_file = "keys/gateway.key"

[phone_link]
loopback = "127.0.0.1:99999"

[health]
metrics = "localhost:metrics"

[[command_signers]]
id = "alarmcentrale"
public_key = "/dev/zero"

[[devices]]
id = "front-lock"
door = "front"
driver = "carelock-lock"
address = "loopback://127.0.0.1:70000"
"""
    code, out = await asyncio.wait_for(check(write(tmp_path, body), capsys), 30)
    assert code == 1
    for expected in (
        "colour: unknown key",
        "mqtt.url",  # the port that is not a number
        "phone_link.loopback",
        "99999",
        "health.metrics",
        "devices[0].address",
        "command_signers[0].public_key",  # /dev/zero: refused, not read
        "not a regular file",
        "data_dir",
        "not a directory",
    ):
        assert expected in out, (expected, out)
    assert "Traceback" not in out
    # the [mqtt] section set aside for its URL, its files are checked once the URL is right
    body = body.replace("broker.example:notaport", "broker.example:8883")
    code, out = await check(write(tmp_path, body), capsys)
    assert code == 1
    for expected in (
        "mqtt.tls.ca_file", "missing-ca.pem: not found",
        "mqtt.tls.cert_file", "mqtt.tls.key_file", "readable by others (mode 0644)",
        "mqtt.password_file", "mqtt.pw: readable by others",
    ):  # fmt: skip
        assert expected in out, (expected, out)


async def test_a_good_config_is_ok_and_tls_files_are_loaded_as_tls_will(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_key_pair(tmp_path / "keys", "org-a")
    path = write(tmp_path, GOOD)
    assert (await check(path, capsys))[0] == 0
    (tmp_path / "keys" / "gw.crt").write_text("not a certificate")
    (tmp_path / "keys" / "gw.key").write_text("not a key")
    (tmp_path / "keys" / "gw.key").chmod(0o600)
    tls = '[mqtt]\nurl = "mqtts://127.0.0.1:8883"\n[mqtt.tls]\ncert_file = "keys/gw.crt"\n'
    tls += 'key_file = "keys/gw.key"\n'
    code, out = await check(write(tmp_path, GOOD + tls), capsys)
    assert code == 1 and "TLS files cannot be used" in out, out


@pytest.mark.parametrize("target", ["dir", "fifo", "devzero", "missing", "unreadable"])
async def test_check_config_on_something_that_is_not_a_config_file_is_one_line(
    tmp_path: Path, target: str
) -> None:
    path = {
        "dir": tmp_path,
        "fifo": tmp_path / "fifo",
        "devzero": Path("/dev/zero"),
        "missing": tmp_path / "nope.toml",
        "unreadable": tmp_path / "secret.toml",
    }[target]
    if target == "fifo":
        os.mkfifo(path)
    if target == "unreadable":
        path.write_text(GOOD)
        path.chmod(0)
        if os.access(path, os.R_OK):  # root reads anything: use a file it cannot open
            path.chmod(0o600)
            path = tmp_path / "dangling"
            path.symlink_to(tmp_path / "nowhere")
    proc = await asyncio.create_subprocess_exec(
        LOCKGW, "check-config", "--config", str(path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(30):  # never blocks on a FIFO or a device
        _out, err = await proc.communicate()
    assert proc.returncode == 1, err
    lines = err.decode().strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith("  - "), lines  # the heading and one problem
    assert "Traceback" not in err.decode()


def test_an_unknown_key_does_not_hide_a_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, GOOD.replace('data_dir = "data"', 'data_dir = "data"\nx = 1')))
    problems = "\n".join(info.value.problems)
    assert "site.x: unknown key" in problems and "keys/org-a.pub: not found" in problems


def test_broker_problems_do_not_stop_the_rest_of_the_config(tmp_path: Path) -> None:
    write_key_pair(tmp_path / "keys", "org-a")
    body = GOOD + '[mqtt]\nurl = "mqtts://127.0.0.1:8883"\nkeepalve = 5\n[mqtt.tls]\nca_file = "x.pem"\n'
    cfg = load_config(write(tmp_path, body))
    assert any("keepalve" in p for p in cfg.broker_problems)
    _, problems = check_config(tmp_path / "lockgw.toml")
    assert any("mqtt.keepalve: unknown key" in p for p in problems)


@pytest.mark.slow
async def test_run_with_a_broken_broker_section_keeps_the_doors_working(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """Missing TLS files used to crash ``lockgw run`` (and with it offline door access).
    Now the gateway starts without the broker: a carer opens the door, ``lockgw health``
    says the broker was not started and why, ``check-config`` fails on it."""
    org = west()
    async with home(tmp_path, broker, [org]) as (sim, _platform):
        anna = Carer("Anna", "anna", org, "verzorgende")
        sim.issue(anna)
        await stop_gateway(sim)
        text = sim.config.read_text().replace(f'url = "{broker.url}"', 'url = "mqtts://127.0.0.1:8883"')
        text += '\n[mqtt.tls]\nca_file = "keys/ca.pem"\ncert_file = "keys/gw.crt"\nkey_file = "keys/gw.key"\n'
        sim.config.write_text(text)
        code, out = await sim.cli("check-config", "--config", str(sim.config))
        assert code == 1 and "mqtt.tls.ca_file" in out and "Traceback" not in out, out
        await sim.start_gateway()
        result = await sim.attempt(anna)
        assert result.reason == "ok", result
        assert await lock_state(sim) == "unlocked"
        code, out = await sim.cli("health", "--config", str(sim.config), "--lang", "en")
        assert code == 1 and "broker: not started" in out and "ca.pem" in out, out
        assert await sim.stop("gateway") == 0  # no broker link: nothing to wait for


async def test_check_config_checks_the_resident_pages_certificate_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_key_pair(tmp_path / "keys", "org-a")
    (tmp_path / "keys" / "web.key").write_text("key")
    (tmp_path / "keys" / "web.key").chmod(0o644)
    web = '[web]\nenabled = true\ncert_file = "keys/web.crt"\nkey_file = "keys/web.key"\n'
    code, out = await check(write(tmp_path, GOOD + web), capsys)
    assert code == 1
    assert "web.cert_file" in out and "web.crt: not found" in out, out
    assert "web.key_file" in out and "readable by others (mode 0644)" in out, out


def break_key(path: Path, how: str) -> None:
    if how == "missing":
        path.unlink()
    elif how == "not a key":
        path.write_text("-----BEGIN PUBLIC KEY-----\nnot base64 at all\n-----END PUBLIC KEY-----\n")
    else:  # a directory where the file was: cannot be read as a key
        path.unlink()
        path.mkdir()


async def reloaded(sim: SimSite, times: int) -> None:
    """Wait until the gateway's log says it finished its ``times``-th reload."""
    log = sim.dir / "gateway.log"
    async with asyncio.timeout(30):
        while True:
            if log.read_text(errors="replace").count('"reload.done"') >= times:
                return
            await asyncio.sleep(0.1)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["missing", "not a key", "a directory"])
async def test_run_with_one_issuers_key_broken_lets_the_other_organisations_in(
    tmp_path: Path, broker: MosquittoBroker, how: str
) -> None:
    """Oost's public key file is broken (missing, not a key, a directory). ``check-config``
    names it; ``lockgw run`` does not refuse to start — that locked out every carer —
    but runs without Oost's key: West's carer opens, Oost's carer hears
    ``issuer_unavailable`` (journaled, published), health names Oost's key file. Once the
    file is fixed, a reload (SIGHUP) lets Oost's carer in."""
    org = west()
    oost = Org("org-oost", "Thuiszorg Oost", roles=("verzorgende",), purposes=("planned",))
    async with home(tmp_path, broker, [org, oost]) as (sim, platform):
        anna = Carer("Anna", "anna", org, "verzorgende")
        olga = Carer("Olga", "olga", oost, "verzorgende")
        sim.issue(anna)
        sim.issue(olga)
        await stop_gateway(sim)
        pub = sim.dir / "keys" / f"{oost.id}.pub"
        good = pub.read_bytes()
        break_key(pub, how)
        code, out = await sim.cli("check-config", "--config", str(sim.config))
        assert code == 1 and f"issuer '{oost.id}'" in out and "Traceback" not in out, out
        await sim.start_gateway()
        refused = await expect(sim, platform, olga, "issuer_unavailable", verified=False)
        assert refused["type"] == "access.denied" and refused["iss"] is None, refused  # unverified
        assert await lock_state(sim) == "locked"
        await expect(sim, platform, anna, "ok")
        assert await lock_state(sim) == "unlocked"
        await relock(sim, platform)
        code, out = await sim.cli("health", "--config", str(sim.config), "--lang", "en")
        assert code == 1 and f"issuer {oost.id}'s key file cannot be used" in out, out
        assert org.id not in out, out
        if pub.is_dir():
            pub.rmdir()
        pub.write_bytes(good)
        sim.procs["gateway"].send_signal(signal.SIGHUP)
        await reloaded(sim, 1)
        await expect(sim, platform, olga, "ok")
        code, out = await sim.cli("health", "--config", str(sim.config), "--lang", "en")
        assert "key file cannot be used" not in out, out


@pytest.mark.slow
async def test_run_with_no_usable_key_at_all_exits_78_in_one_line(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """Every issuer's and the command signer's key file broken: nobody could be let in,
    so ``lockgw run`` refuses the config (EX_CONFIG, 78, one line per problem), as before."""
    org = west()
    async with home(tmp_path, broker, [org]) as (sim, _platform):
        await stop_gateway(sim)
        for pub in (sim.dir / "keys").glob("*.pub"):
            pub.write_text("garbage")
        proc = await asyncio.create_subprocess_exec(
            LOCKGW, "run", "--config", str(sim.config),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=sim.dir,
        )  # fmt: skip
        async with asyncio.timeout(60):
            _out, err = await proc.communicate()
        assert proc.returncode == 78, err
        text = err.decode()
        assert "no other issuer's or signer's key can be used" in text and "Traceback" not in text
