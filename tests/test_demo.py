"""``lockgw demo`` from start to end, as a new user runs it, and what its logs must not contain."""

from __future__ import annotations

import asyncio
import base64
import re
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCENES = [
    "Anna's phone ← GRANTED (ok)",
    "(bad_proof)",
    "(outside_window)",
    "revocation list 1 of org-thuiszorg-west applied",
    "(revoked)",
    "the house key was not put back",
    "battery of front-lock: 15 %",
    "— offline",
    "gaps in the stream: none",
    "alarm raised",
    "emergency entry outside the schedule, flagged",
    "command unlock from alarmcentrale: done",
    "refused (",
    "alarm cleared",
    "audit chain:",
]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str, Path]:
    keep = tmp_path_factory.mktemp("demo")

    async def go() -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "demo", "--fast", "--keep", str(keep),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        async with asyncio.timeout(300):
            out, _ = await proc.communicate()
        return proc.returncode or 0, out.decode(errors="replace")

    code, out = asyncio.run(go())
    return code, out, keep


def test_demo_tells_the_whole_day(demo_run: tuple[int, str, Path]) -> None:
    code, out, _ = demo_run
    assert code == 0, out[-4000:]
    missing = [s for s in SCENES if s not in out]
    assert not missing, f"missing from the demo: {missing}\n{out[-4000:]}"
    # it ends with the resident's access log
    assert out.index("lockgw audit show") > out.index("alarm cleared")


def _fragments(secret: bytes) -> set[str]:
    """Text forms a leak could take: base64url, base64 and hex windows of the secret."""
    forms = {
        base64.urlsafe_b64encode(secret).rstrip(b"=").decode(),
        base64.b64encode(secret).decode(),
        secret.hex(),
    }
    return {f[i : i + 16] for f in forms for i in range(0, max(1, len(f) - 16), 8)}


def test_demo_logs_never_contain_tokens_keys_or_nonces(demo_run: tuple[int, str, Path]) -> None:
    code, out, keep = demo_run
    assert code == 0, out[-2000:]
    logs = {p.name: p.read_text(errors="replace") for p in keep.glob("*.log")}
    assert "gateway.log" in logs and logs["gateway.log"].strip()
    secrets: dict[str, bytes] = {}
    for tok in (keep / "phones").glob("*.token"):
        text = tok.read_text().strip()
        secrets[tok.name] = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    for key in list((keep / "keys").glob("*.key")) + list((keep / "phones").glob("*.key")):
        body = "".join(ln for ln in key.read_text().splitlines() if "-----" not in ln)
        secrets[key.name] = base64.b64decode(body)
    assert len(secrets) >= 8
    for name, text in logs.items():
        for sname, secret in secrets.items():
            leaked = [f for f in _fragments(secret) if f in text]
            assert not leaked, f"{name} contains material of {sname}: {leaked[:3]}"
        # nonces and proofs are 16 and 64 random bytes: no long hex or base64 runs at all
        assert not re.search(r"\b[0-9a-f]{32,}\b", text), f"{name} holds a long hex string"
