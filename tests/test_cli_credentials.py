"""``lockgw token issue|inspect``, ``revoke``, ``command``: output the gateway accepts,
clear errors on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cred_kit import ORG, SIGNER, SITE, FakeClock, Site, attempt, make_site

from gateway.access import AccessController
from gateway.cli import main
from protocols.control import Command, RevocationList
from protocols.token import b64decode, decode_token
from protocols.windows import Window


@pytest.fixture
def site(tmp_path: Path) -> Site:
    s = make_site(tmp_path)
    s.clock = FakeClock(time.time())  # the CLI signs with the real clock
    return s


async def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await main(list(argv))
    out, err = capsys.readouterr()
    return code, out.strip(), err.strip()


def issue_args(site: Site, *extra: str) -> list[str]:
    k = site.root / "keys"
    return [
        "token", "issue", "--key", str(k / f"{ORG}.key"), "--iss", ORG, "--sub", "carer-17",
        "--site", SITE, "--door", "front", "--holder-pub", str(k / "phone.pub"),
        "--role", "verzorgende", "--purpose", "planned", "--valid-for", "30d", *extra,
    ]  # fmt: skip


async def test_issued_token_opens_the_door(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = await run(capsys, *issue_args(site, "--window", "daily 00:00-24:00"))
    assert code == 0, err
    raw = b64decode(out)
    claims = decode_token(raw)
    assert claims.windows == (Window(127, 0, 1440),)
    assert claims.exp - claims.iat == 30 * 86400  # type: ignore[operator]
    ctl: AccessController = site.controller()
    assert attempt(ctl, raw, site.keys["phone"]).granted


async def test_window_across_midnight_is_split(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = await run(capsys, *issue_args(site, "--window", "fri 22:00-06:00"))
    assert code == 0
    assert decode_token(b64decode(out)).windows == (Window(16, 1320, 1440), Window(32, 0, 360))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--window", "someday 7-10"], "is not like"),
        (["--window", "mon 07:00-25:00"], "not a time of day"),
        (["--not-before", "next tuesday"], "ISO 8601"),
        (["--cti", "abc"], "32 hex digits"),
    ],
)
async def test_bad_issue_input_says_what_is_wrong(
    site: Site, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    code, out, err = await run(capsys, *issue_args(site, *extra))
    assert code == 2 and out == "" and message in err


async def test_bad_duration_and_holder_key(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    args = issue_args(site)
    args[args.index("30d")] = "a month"
    code, _, err = await run(capsys, *args)
    assert code == 2 and "is not like 30d" in err
    args = issue_args(site)
    args[args.index("--holder-pub") + 1] = "nonsense"
    code, _, err = await run(capsys, *args)
    assert code == 2 and "not a public key file" in err


async def test_key_readable_by_others_is_refused(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    os.chmod(site.root / "keys" / f"{ORG}.key", 0o644)
    code, _, err = await run(capsys, *issue_args(site))
    assert code == 1 and "chmod 600" in err


async def test_inspect_prints_claims_and_verifies(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    _, token, _ = await run(capsys, *issue_args(site))
    code, out, _ = await run(capsys, "token", "inspect", token)
    data = json.loads(out)
    assert code == 0 and data["sub"] == "carer-17" and data["verified"] is None
    pub = str(site.root / "keys" / f"{ORG}.pub")
    code, out, _ = await run(capsys, "token", "inspect", token, "--pub", pub)
    assert code == 0 and json.loads(out)["verified"] is True
    wrong = str(site.root / "keys" / "stranger.pub")
    code, out, err = await run(capsys, "token", "inspect", token, "--pub", wrong)
    assert code == 1 and "bad_signature" in err
    code, _, err = await run(capsys, "token", "inspect", "AAAA")
    assert code == 1 and "malformed" in err
    code, _, err = await run(capsys, "token", "inspect", "!!not base64!!")
    assert code == 2 and "base64url" in err


async def test_revoke_output_is_applied_by_the_gateway(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    key = str(site.root / "keys" / f"{ORG}.key")
    code, out, _ = await run(
        capsys, "revoke", "--key", key, "--iss", ORG, "--seq", "3", "--sub", "carer-17",
        "--cti", "00" * 16,
    )  # fmt: skip
    assert code == 0
    rl = RevocationList.decode(b64decode(out))
    assert (rl.seq, rl.sub, rl.cti) == (3, frozenset({"carer-17"}), frozenset({b"\x00" * 16}))
    assert site.controller().apply_revocation(b64decode(out)).status == "applied"
    code, _, err = await run(
        capsys, "revoke", "--key", key, "--iss", ORG, "--seq", "4", "--cti", "xyz"
    )
    assert code == 2 and "32 hex digits" in err


async def test_command_output_is_verified_by_the_gateway(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    key = str(site.root / "keys" / f"{SIGNER}.key")
    code, out, _ = await run(
        capsys, "command", "--key", key, "--site", SITE, "--door", "front", "--cmd", "unlock",
        "--actor", "responder-4", "--reason", "alarm",
    )  # fmt: skip
    assert code == 0
    cmd = site.controller().verify_command(b64decode(out))
    assert isinstance(cmd, Command) and cmd.signer == SIGNER and cmd.reason == "alarm"
    code, _, err = await run(
        capsys, "command", "--key", key, "--site", SITE, "--cmd", "unlock", "--actor", "a"
    )
    assert code == 2 and "names a door" in err
    code, _, err = await run(
        capsys, "command", "--key", key, "--site", SITE, "--door", "front", "--cmd", "unlock",
        "--actor", "a", "--valid-for", "10m",
    )  # fmt: skip
    assert code == 2 and "at most 120s" in err
    code, out, _ = await run(
        capsys, "command", "--key", key, "--site", SITE, "--cmd", "alarm", "--state", "raised",
        "--actor", "a",
    )  # fmt: skip
    assert code == 0 and site.controller().verify_command(b64decode(out)).state == "raised"


@pytest.mark.slow
def test_console_script_round_trip(site: Site) -> None:
    """The installed ``lockgw`` entry point, as a technician runs it."""
    exe = Path(sys.executable).with_name("lockgw")
    res = subprocess.run(
        [str(exe), *issue_args(site)], capture_output=True, text=True, timeout=60, check=False
    )
    assert res.returncode == 0, res.stderr
    res2 = subprocess.run(
        [str(exe), "token", "inspect", "-"], input=res.stdout, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert res2.returncode == 0 and json.loads(res2.stdout)["aud"] == SITE


async def test_check_config_explains_matrix_and_consent_problems(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    site.write_config(
        issuer_extra="consent_from = 2026-05-01\nconsent_until = 2026-04-01\n"
        '[issuers.matrix]\nchauffeur = ["planned"]'
    )
    code, _, err = await run(capsys, "check-config", "--config", str(site.config_path))
    assert code == 1
    assert "consent_until (2026-04-01) is before consent_from (2026-05-01)" in err
    assert "role 'chauffeur' is not in this issuer's roles" in err
    site.write_config(issuer_extra='[issuers.matrix]\nverzorgende = ["holiday"]')
    code, _, err = await run(capsys, "check-config", "--config", str(site.config_path))
    assert code == 1 and "matrix.verzorgende[0]: Input should be 'planned' or 'emergency'" in err
