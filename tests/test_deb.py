"""The Debian package, built by scripts/build-deb and installed with dpkg on this machine
(as root, as CI runs): the program, the units, /etc/lockgw with the example, the lockgw
user in the bluetooth group, the docs; the installed program runs without the checkout;
then purged, and the machine left as it was."""

from __future__ import annotations

import contextlib
import fcntl
import grp
import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest
from bluez_env import BluezEnv

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900),  # building the venv resolves and installs every dependency
    pytest.mark.skipif(os.geteuid() != 0, reason="dpkg -i needs root (CI runs as root)"),
    pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="not a Debian system"),
]


def _broker_tls_files(keys: Path) -> list[Path]:
    """The example config's [mqtt.tls] files: a self-signed certificate (as CA and client
    certificate) and its key, the key the service user's alone (0600), as docs/install.md
    says."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lockgw-site-3f9c2a7d")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    pem = cert.public_bytes(serialization.Encoding.PEM)
    files = [keys / "broker-ca.pem", keys / "gateway.crt", keys / "gateway.key"]
    files[0].write_bytes(pem)
    files[1].write_bytes(pem)
    files[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    for path in files:
        os.chown(path, 0, grp.getgrnam("lockgw").gr_gid)
        path.chmod(0o640)
    os.chown(files[2], pwd.getpwnam("lockgw").pw_uid, -1)
    files[2].chmod(0o600)
    return files


def _run(
    *argv: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``argv`` without this checkout on the path (conftest puts it on PYTHONPATH for the
    other tests' subprocesses): the package is tested as it is installed."""
    if env is None:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=600, env=env)


def _exists(kind: str, name: str) -> bool:
    try:
        (pwd.getpwnam if kind == "user" else grp.getgrnam)(name)
    except KeyError:
        return False
    return True


def _check_the_example(tmp_path: Path, env: dict[str, str]) -> None:
    """The example config: valid but for the keys the installer copies in; with them, valid
    (for root and for the service user)."""
    example = "/etc/lockgw/lockgw.toml.example"
    out = _run("/usr/bin/lockgw", "check-config", "--config", example, check=False, env=env)
    assert out.returncode != 0
    problems = [ln for ln in out.stderr.splitlines() if ln.strip().startswith("- ")]
    assert problems and all("/etc/lockgw/keys/" in p and "not found" in p for p in problems), (
        out.stderr
    )
    names = ("thuiszorg-west", "resident", "alarmcentrale")
    for name in names:
        _run("/usr/bin/lockgw", "keys", "new", "--out", str(tmp_path / "k"), "--name", name)
        pub = Path(f"/etc/lockgw/keys/{name}.pub")
        shutil.copy(tmp_path / "k" / f"{name}.pub", pub)
        os.chown(pub, 0, grp.getgrnam("lockgw").gr_gid)  # as docs/install.md §4 says
        pub.chmod(0o640)
    tls = _broker_tls_files(Path("/etc/lockgw/keys"))  # check-config loads them as TLS will
    try:
        out = _run("/usr/bin/lockgw", "check-config", "--config", example, check=False, env=env)
        assert out.returncode == 0, out.stderr
        # and so can the service's user
        out = _run("runuser", "-u", "lockgw", "--", "/usr/bin/lockgw", "check-config",
                   "--config", example, check=False, env=env)
        assert out.returncode == 0, out.stderr
    finally:
        for name in names:
            Path(f"/etc/lockgw/keys/{name}.pub").unlink(missing_ok=True)
        for path in tls:
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def _installed(deb: Path) -> Iterator[None]:
    """dpkg -i, and afterwards purge and remove what the test made (and only that)."""
    before = {
        ("user", "lockgw"): _exists("user", "lockgw"),
        ("group", "lockgw"): _exists("group", "lockgw"),
        ("group", "bluetooth"): _exists("group", "bluetooth"),
    }
    try:
        out = _run("dpkg", "-i", str(deb), check=False)
        assert out.returncode == 0, out.stdout + out.stderr
        yield
    finally:
        _run("dpkg", "--purge", "lockgw", check=False)
        if not before[("user", "lockgw")] and _exists("user", "lockgw"):
            _run("deluser", "--quiet", "--system", "lockgw", check=False)
        if not before[("group", "lockgw")] and _exists("group", "lockgw"):
            _run("delgroup", "--quiet", "--system", "lockgw", check=False)
        if not before[("group", "bluetooth")] and _exists("group", "bluetooth"):
            _run("delgroup", "--quiet", "--system", "bluetooth", check=False)


@contextlib.contextmanager
def _machine_lock() -> Iterator[None]:
    """One package test at a time on this machine: several checkouts' suites may run at
    once, and they share one dpkg database, one lockgw user, one /etc/lockgw."""
    lock = Path("/run/lock" if Path("/run/lock").is_dir() else "/tmp") / "lockgw-test-deb.lock"
    with lock.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def test_the_package_installs_runs_and_purges_cleanly(tmp_path: Path) -> None:
    started = time.monotonic()
    if os.environ.get("LOCKGW_TEST_DEB"):  # a package built just before (while working on this)
        deb = Path(os.environ["LOCKGW_TEST_DEB"])
    else:
        built = _run("bash", str(ROOT / "scripts" / "build-deb"), str(tmp_path / "dist"))
        deb = Path(built.stdout.strip().splitlines()[-1])
    arch = _run("dpkg", "--print-architecture").stdout.strip()
    assert deb.name == f"lockgw_{version('lockgw')}_{arch}.deb", deb
    print(f"build-deb: {time.monotonic() - started:.0f} s, {deb.stat().st_size / 1e6:.1f} MB")
    control = _run("dpkg-deb", "-f", str(deb), "Depends").stdout
    assert "python3." in control and "adduser" in control
    with _machine_lock():
        if _run("dpkg-query", "-W", "lockgw", check=False).returncode == 0:
            pytest.skip("lockgw is installed on this machine: not touching it")
        _install_run_purge(deb, tmp_path)


def _install_run_purge(deb: Path, tmp_path: Path) -> None:
    with _installed(deb):
        assert _run("/usr/bin/lockgw", "--version").stdout.strip() == f"lockgw {version('lockgw')}"
        assert _run("/usr/bin/lockgw-sim", "--version").stdout.startswith("lockgw-sim ")
        # the program is the package's own, not this checkout's
        where = _run("/usr/lib/lockgw/venv/bin/python", "-I", "-c",
                 "import gateway; print(gateway.__file__)")
        assert where.stdout.startswith("/usr/lib/lockgw/venv/"), where.stdout

        # the service's user, in the bluetooth group; /etc/lockgw readable by it only
        user = pwd.getpwnam("lockgw")
        assert user.pw_shell.endswith("nologin")
        assert "lockgw" in grp.getgrnam("bluetooth").gr_mem
        for d in ("/etc/lockgw", "/etc/lockgw/keys"):
            st = os.stat(d)
            assert (st.st_uid, grp.getgrgid(st.st_gid).gr_name, st.st_mode & 0o777) == (
                0, "lockgw", 0o750,
            ), d
        assert Path("/usr/share/doc/lockgw/install.md").exists()
        assert Path("/usr/share/doc/lockgw/asyncapi.json").exists()
        assert Path("/usr/share/doc/lockgw/copyright").exists()

        # the example: valid but for the keys the installer copies in; with them, valid.
        # It serves phones over Bluetooth ([phone_link] ble = true on hci0): check-config
        # asks BlueZ, here BlueZoo on a private bus the service user may use too
        with BluezEnv(adapters=1, shared=True) as bluez:
            _check_the_example(tmp_path, bluez.env())

        # the unit, as systemd reads it
        if shutil.which("systemd-analyze"):
            out = _run("systemd-analyze", "verify", "/usr/lib/systemd/system/lockgw.service",
                       check=False)
            assert out.returncode == 0, out.stdout + out.stderr

        # the installed daemon starts (journal writer process and all) and stops on SIGTERM
        cfg = tmp_path / "site.toml"
        cfg.write_text(
            '[site]\nid = "site-deb"\ndata_dir = "data"\n\n[mqtt]\nurl = "mqtt://127.0.0.1:9"\n'
            '\n[phone_link]\nloopback = ""\n'
        )
        proc = subprocess.Popen(
            ["/usr/bin/lockgw", "run", "--config", str(cfg)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
            env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
        )
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if '"gateway.ready"' in line:
                break
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
        assert any('"gateway.ready"' in ln for ln in lines), "".join(lines) + rest
        assert proc.returncode == 0, rest

    # purged: nothing of the package is left
    for gone in ("/usr/bin/lockgw", "/usr/lib/lockgw", "/usr/lib/systemd/system/lockgw.service",
                 "/etc/lockgw", "/usr/share/doc/lockgw"):
        assert not Path(gone).exists(), gone
    assert _run("dpkg-query", "-W", "lockgw", check=False).returncode != 0
