"""Every subcommand of ``lockgw`` and ``lockgw-sim``, given broken arguments, says what is
wrong in one clear line on stderr and exits non-zero — never a traceback, never a hang.

The subcommands are found by walking the two argparse parsers, so a new one is covered
without touching this file. Each is run as a real process with every argument that takes
a value set to one kind of broken value: a path under a regular file (cannot exist, even
for root), a directory, plain garbage, ``/dev/zero``. Usage errors are argparse's: exit 2,
the usage and one ``error:`` line. A problem list (``check-config``, ``run``) is a heading
and one ``  - `` line per problem.

Some arguments accept what is broken elsewhere (``demo --keep`` wants a directory and
creates a missing one; ``keys new --out`` the same): :data:`ACCEPTS` says so, and such an
argument gets the path under a file instead. A new argument like that shows up here as a
command that succeeded (or hung) with "broken" arguments.

Beside the walk, the cases issue 15 names, each with otherwise good arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.cli import build_parser as lockgw_parser
from gateway.keys import write_key_pair
from simulators.cli import build_parser as sim_parser

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
KINDS = ("under-a-file", "directory", "garbage", "dev-zero")
#: (option, kind): this option takes that kind of value as valid
ACCEPTS = {
    ("--keep", "directory"),
    ("--keep", "garbage"),
    ("--out", "directory"),
    ("--out", "garbage"),
}


def _leaves(parser: argparse.ArgumentParser, prefix: list[str]) -> Iterator[
    tuple[list[str], argparse.ArgumentParser]
]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield prefix, parser
        return
    for action in subs:
        for name, sub in action.choices.items():
            yield from _leaves(sub, [*prefix, name])


def commands() -> list[tuple[list[str], argparse.ArgumentParser]]:
    return [*_leaves(lockgw_parser(), ["lockgw"]), *_leaves(sim_parser(), ["lockgw-sim"])]


def broken_argv(parser: argparse.ArgumentParser, kind: str, tmp: Path) -> list[str]:
    afile = tmp / "a-file"
    afile.write_text("not a directory\n")
    values = {
        "under-a-file": str(afile / "x"),
        "directory": str(tmp),
        "garbage": "garbage",
        "dev-zero": "/dev/zero",
    }
    argv: list[str] = []
    positionals: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.nargs == 0:
            continue  # --help, flags
        if action.choices is not None:
            value = str(next(iter(action.choices)))  # a valid choice: get past argparse
        elif action.option_strings and (action.option_strings[0], kind) in ACCEPTS:
            value = values["under-a-file"]
        else:
            value = values[kind]
        if action.option_strings:
            argv += [action.option_strings[0], value]
        else:
            positionals.append(value)
    return argv + positionals


def _ids() -> list[str]:
    return [" ".join(prefix) for prefix, _ in commands()]


def assert_clear_error(code: int, err: str, out: str) -> None:
    assert code != 0, f"exit 0 with broken arguments\nstdout: {out}\nstderr: {err}"
    assert "Traceback" not in err + out, err + out
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines, f"nothing on stderr (exit {code}); stdout: {out}"
    if lines[0].startswith("usage:"):  # argparse
        assert code == 2, (code, err)
        assert re.match(r"^lockgw(-sim)?( [\w-]+)*: error: ", lines[-1]), err
    elif len(lines) > 1:  # a list of problems: a heading, then one line each
        assert re.search(r"\d+ problem\(s\)", lines[0]), err
        assert all(ln.startswith("  - ") for ln in lines[1:]), err
    else:
        assert len(lines[0]) < 400, lines[0]


async def run(argv: list[str], cwd: Path, timeout: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        str(BIN / argv[0]), *argv[1:], cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"{' '.join(argv)} did not end within {timeout} s") from None
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


def test_the_walk_finds_every_subcommand() -> None:
    names = set(_ids())
    for expected in (
        "lockgw run", "lockgw check-config", "lockgw keys new", "lockgw token issue",
        "lockgw audit export", "lockgw clock set-floor", "lockgw-sim phone unlock",
        "lockgw-sim platform watch", "lockgw-sim lock",
    ):  # fmt: skip
        assert expected in names, sorted(names)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("index", range(len(commands())), ids=_ids())
async def test_broken_arguments_give_one_clear_line(tmp_path: Path, index: int, kind: str) -> None:
    prefix, parser = commands()[index]
    argv = [*prefix, *broken_argv(parser, kind, tmp_path)]
    code, out, err = await run(argv, tmp_path)
    assert_clear_error(code, err, out)


# -- the cases issue 15 names, with otherwise good arguments -------------------------------------


@pytest.fixture
def site(tmp_path: Path) -> Path:
    write_key_pair(tmp_path / "keys", "org")
    (tmp_path / "lockgw.toml").write_text(
        '[site]\nid = "site-1"\ndata_dir = "data"\n'
        '[[issuers]]\nid = "org"\npublic_key = "keys/org.pub"\nroles = ["verzorgende"]\n'
        'purposes = ["planned"]\ndoors = ["front"]\n'
    )
    return tmp_path


CASES = {
    "check-config on a directory": ["lockgw", "check-config", "--config", "/tmp"],
    "audit show --since garbage": [
        "lockgw", "audit", "show", "--config", "lockgw.toml", "--since", "garbage"
    ],
    "audit export to a missing directory": [
        "lockgw", "audit", "export", "--config", "lockgw.toml", "--out", "/nonexistent/x.csv"
    ],
    "phone unlock at a host that does not exist": [
        "lockgw-sim", "phone", "unlock", "--gateway", "nohost", "--token", "AAAA",
        "--key", "keys/org.key", "--door", "front", "--v1",
    ],
    "phone unlock with an unreadable key": [
        "lockgw-sim", "phone", "unlock", "--gateway", "127.0.0.1:1", "--token", "AAAA",
        "--key", "keys/missing.key", "--door", "front", "--v1",
    ],
    "token inspect with bad base64": ["lockgw", "token", "inspect", "%%%not-base64%%%"],
    "token issue with a public key as the signing key": [
        "lockgw", "token", "issue", "--key", "keys/org.pub", "--iss", "org", "--sub", "s",
        "--site", "site-1", "--door", "front", "--holder-pub", "keys/org.pub", "--role", "r",
        "--purpose", "planned", "--valid-for", "1d",
    ],
    "token issue with a garbage validity": [
        "lockgw", "token", "issue", "--key", "keys/org.key", "--iss", "org", "--sub", "s",
        "--site", "site-1", "--door", "front", "--holder-pub", "keys/org.pub", "--role", "r",
        "--purpose", "planned", "--valid-for", "soon",
    ],
    "revoke with a cti that is not hex": [
        "lockgw", "revoke", "--key", "keys/org.key", "--iss", "org", "--seq", "1", "--cti", "xyz"
    ],
    "keys new escaping --out": ["lockgw", "keys", "new", "--out", "k", "--name", "../../x"],
    "run on a config whose data_dir is a file": ["lockgw", "run", "--config", "bad.toml"],
    "health of a config that does not exist": ["lockgw", "health", "--config", "nope.toml"],
    "pair a device that is not configured": [
        "lockgw", "pair", "--config", "lockgw.toml", "front-lock", "--yes"
    ],
}  # fmt: skip


def escaped(site: Path) -> bool:
    """``--out k --name ../../x`` from ``site`` would write ``site/../x.key``."""
    return (site.parent / "x.key").exists() or (site.parent / "x.pub").exists()


@pytest.mark.parametrize("case", sorted(CASES))
async def test_named_broken_invocations(site: Path, case: str) -> None:
    (site / "afile").write_text("x")
    (site / "bad.toml").write_text('[site]\nid = "site-1"\ndata_dir = "afile"\n')
    (site / "keys" / "org.key").chmod(0o600)
    code, out, err = await run(CASES[case], site)
    assert_clear_error(code, err, out)
    if case == "run on a config whose data_dir is a file":
        assert code == 78, err
    if case == "keys new escaping --out":
        assert not escaped(site)


async def test_a_private_key_readable_by_others_is_refused_in_one_line(site: Path) -> None:
    (site / "keys" / "org.key").chmod(0o644)
    code, out, err = await run(
        ["lockgw", "revoke", "--key", "keys/org.key", "--iss", "org", "--seq", "1"], site
    )
    assert_clear_error(code, err, out)
    assert "chmod 600" in err
