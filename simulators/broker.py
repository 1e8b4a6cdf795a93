"""A private mosquitto broker on a free loopback port, for ``lockgw demo`` and the tests.

Uses the Debian ``mosquitto`` binary (installed by ``scripts/bootstrap.sh``).
Config: MQTT 5, loopback only, no queue limits (mosquitto's default
``max_queued_messages 1000`` silently drops QoS 1 messages for a slow
subscriber), persistence on so a restart keeps retained messages and
persistent sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import socket
import tempfile
from pathlib import Path
from types import TracebackType

__all__ = ["MosquittoBroker", "find_mosquitto", "free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def find_mosquitto() -> str:
    for cand in (shutil.which("mosquitto"), "/usr/sbin/mosquitto", "/usr/bin/mosquitto"):
        if cand and Path(cand).exists():
            return cand
    raise FileNotFoundError(
        "mosquitto not found; install it with: apt-get install mosquitto (scripts/bootstrap.sh does)"
    )


class MosquittoBroker:
    """``async with MosquittoBroker() as b: b.url`` — stop() / start() to simulate an outage."""

    def __init__(
        self,
        port: int | None = None,
        workdir: Path | None = None,
        *,
        tls: tuple[Path, Path, Path] | None = None,
        require_certificate: bool = True,
        max_inflight: int = 0,
    ) -> None:
        """``tls=(ca_file, cert_file, key_file)`` serves MQTT over TLS only (``url`` is
        ``mqtts://``); clients then need a certificate from ``ca_file`` unless
        ``require_certificate`` is False."""
        self.tls = tls
        #: QoS 1 messages a client may have in flight (0 = no limit); MQTT 5 clients
        #: hear it as the CONNACK's Receive Maximum
        self.max_inflight = max_inflight
        self.require_certificate = require_certificate
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="lockgw-mosquitto-")
            workdir = Path(self._tmp.name)
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._proc: asyncio.subprocess.Process | None = None
        self.log_path = self.workdir / "mosquitto.log"

    @property
    def pid(self) -> int | None:
        """The running mosquitto's process id (benchmarks lower its priority)."""
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    def _write_conf(self) -> Path:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            "\n".join(
                [
                    f"listener {self.port} {self.host}",
                    *self._tls_lines(),
                    "allow_anonymous true",
                    "persistence true",
                    f"persistence_location {self.workdir}/",
                    "autosave_interval 1",
                    "max_queued_messages 0",
                    f"max_inflight_messages {self.max_inflight}",
                    "max_queued_bytes 0",
                    "log_dest stderr",
                    "log_type error",
                    "log_type warning",
                    # started as root, mosquitto drops to the "mosquitto" user, which cannot
                    # write the persistence file in our private work directory: sessions
                    # and queued messages would then be lost on restart
                    *([f"user {pwd.getpwuid(os.geteuid()).pw_name}"] if os.geteuid() == 0 else []),
                    "",
                ]
            )
        )
        return conf

    def _tls_lines(self) -> list[str]:
        if self.tls is None:
            return []
        ca, cert, key = self.tls
        return [
            f"cafile {ca}",
            f"certfile {cert}",
            f"keyfile {key}",
            f"require_certificate {'true' if self.require_certificate else 'false'}",
        ]

    async def start(self, timeout: float = 10.0) -> None:
        if self._proc is not None and self._proc.returncode is None:
            return
        conf = self._write_conf()
        log = self.log_path.open("ab")
        try:
            self._proc = await asyncio.create_subprocess_exec(
                find_mosquitto(), "-c", str(conf), stdout=log, stderr=log
            )
        finally:
            log.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self._proc.returncode is not None:
                raise RuntimeError(
                    f"mosquitto exited with {self._proc.returncode}: "
                    + self.log_path.read_text(errors="replace")[-500:]
                )
            try:
                _, w = await asyncio.open_connection(self.host, self.port)
            except OSError:
                if loop.time() > deadline:
                    raise TimeoutError(f"mosquitto did not listen on {self.url}") from None
                await asyncio.sleep(0.02)
                continue
            w.close()
            with contextlib.suppress(OSError):
                await w.wait_closed()
            return

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    async def __aenter__(self) -> MosquittoBroker:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
