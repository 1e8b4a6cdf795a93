"""The MQTT link over TLS with a client certificate, against a real mosquitto."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.config import MqttConfig, MqttTlsConfig
from gateway.journal import Journal, journal_path
from gateway.mqtt import MqttLink
from protocols.events import BatteryEvent
from simulators.broker import MosquittoBroker

SITE = "site-tls"


def _cert(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = issuer if issuer is not None else (subject, key)
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        b = b.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return b.sign(issuer_key, hashes.SHA256())


def _write(
    path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> tuple[Path, Path]:
    crt, pem = path.with_suffix(".crt"), path.with_suffix(".key")
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pem.chmod(0o600)
    return crt, pem


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("lockgw test CA", ca_key, None, ca=True)
    ca_crt, _ = _write(tmp_path / "ca", ca, ca_key)
    issuer = (ca.subject, ca_key)
    s_key, c_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    s_crt, s_pem = _write(tmp_path / "server", _cert("broker", s_key, issuer, server=True), s_key)
    c_crt, c_pem = _write(tmp_path / "gateway", _cert(f"lockgw-{SITE}", c_key, issuer), c_key)
    return {
        "ca": ca_crt,
        "server_crt": s_crt,
        "server_key": s_pem,
        "client_crt": c_crt,
        "client_key": c_pem,
    }


async def test_the_link_connects_over_tls_with_its_client_certificate(
    pki: dict[str, Path], tmp_path: Path
) -> None:
    async with MosquittoBroker(tls=(pki["ca"], pki["server_crt"], pki["server_key"])) as broker:
        assert broker.url.startswith("mqtts://")
        tls = MqttTlsConfig(
            ca_file=pki["ca"], cert_file=pki["client_crt"], key_file=pki["client_key"]
        )
        cfg = MqttConfig(url=broker.url, tls=tls, reconnect_min=0.05, reconnect_max=0.5)
        async with (
            Journal(journal_path(tmp_path), SITE, retention_days=30) as j,
            MqttLink(cfg, SITE, j, version="t") as link,
        ):
            await link.wait_connected(10)
            await j.emit(
                BatteryEvent(device="d", door="front", level=90, low=False, critical=False)
            )
            async with asyncio.timeout(10):
                await j.wait_drained()


async def test_without_a_client_certificate_the_broker_refuses_and_the_link_keeps_trying(
    pki: dict[str, Path], tmp_path: Path
) -> None:
    async with MosquittoBroker(tls=(pki["ca"], pki["server_crt"], pki["server_key"])) as broker:
        cfg = MqttConfig(
            url=broker.url,
            tls=MqttTlsConfig(ca_file=pki["ca"]),
            reconnect_min=0.05,
            reconnect_max=0.2,
        )
        async with (
            Journal(journal_path(tmp_path), SITE, retention_days=30) as j,
            MqttLink(cfg, SITE, j, version="t") as link,
        ):
            with pytest.raises(TimeoutError):
                await link.wait_connected(1.5)
            assert not link.connected and link.connects == 0
            await j.emit(
                BatteryEvent(device="d", door="front", level=90, low=False, critical=False)
            )
            assert j.backlog() == 1  # journaled, waiting for a broker that lets it in


async def _watch(*argv: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simulators.cli", "platform", "watch", *argv,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_the_platform_simulator_watches_over_tls_with_the_gateways_options(
    pki: dict[str, Path], tmp_path: Path
) -> None:
    """`lockgw-sim platform watch` takes [mqtt.tls]'s options: with the CA and a client
    certificate it receives the stream; without the certificate it says it cannot
    connect, in one line, exit 2."""
    async with MosquittoBroker(tls=(pki["ca"], pki["server_crt"], pki["server_key"])) as broker:
        cfg = MqttConfig(
            url=broker.url,
            tls=MqttTlsConfig(
                ca_file=pki["ca"], cert_file=pki["client_crt"], key_file=pki["client_key"]
            ),
        )
        async with (
            Journal(journal_path(tmp_path), SITE, retention_days=30) as j,
            MqttLink(cfg, SITE, j, version="t") as link,
        ):
            await link.wait_connected(10)
            tls = ["--ca-file", str(pki["ca"]), "--cert-file", str(pki["client_crt"]),
                   "--key-file", str(pki["client_key"])]
            session = [*tls, "--broker", broker.url, "--site", SITE, "--client-id", "tls-watch"]
            code, _, err = await _watch(*session, "--idle", "1")  # its session begins
            assert code == 0, err
            await j.emit(BatteryEvent(device="d", door="front", level=42, low=False, critical=False))
            async with asyncio.timeout(10):
                await j.wait_drained()
            code, out, err = await _watch(*session, "--count", "1", "--idle", "20")
            assert code == 0, err
            assert json.loads(out.splitlines()[0])["level"] == 42
            code, out, err = await _watch(
                "--broker", broker.url, "--site", SITE, "--ca-file", str(pki["ca"]), "--idle", "5"
            )
            assert code == 2 and "cannot connect" in err and "Traceback" not in err, err
            assert len(err.strip().splitlines()) == 1, err
