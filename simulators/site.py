"""A whole simulated home on this machine: keys, config, device simulators, the gateway.

Used by ``lockgw demo``, the real-process tests and the benchmarks, so all three run the
same thing a technician would: ``lockgw-sim lock|keysafe|nuki`` processes reached through
the loopback BLE transport, ``lockgw pair`` and ``lockgw run`` as processes, phones
speaking the CONTRACT §3 exchange over TCP. A device with ``DeviceSpec(adapter="hci1")``
is a BlueZ peripheral on that adapter instead (its address comes from its ready line:
write the config after :meth:`SimSite.start_devices`), and ``SimSite(bluetooth="hci0",
env={"DBUS_SYSTEM_BUS_ADDRESS": ...})`` gives the gateway its adapter and every process
the bus. Imports ``protocols/`` (and other
simulators) only; the gateway is driven through its command line and the network.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocols.advert import derive_advert_key
from protocols.control import Command, RevocationList, Roster, RosterEntry
from protocols.exchange import PhoneExchange
from protocols.phone import Result
from protocols.token import b64encode, decode_token, issue_token
from protocols.windows import Window
from simulators.broker import free_port
from simulators.control import ControlError, send_control
from simulators.phone import UnlockAttempt, site_keys_from, unlock

__all__ = ["Carer", "DeviceSpec", "Org", "SimSite", "windows_near", "write_key"]

DAY = 24 * 3600
ALL_DAYS = 127


def windows_near(now: datetime) -> tuple[list[list[int]], list[list[int]]]:
    """Token windows (CONTRACT §2 ``win``) for a simulated day started at ``now`` (a local
    time in the site's zone): ones around now (from an hour before to three hours after)
    and ones far from it (a four-hour shift six hours on). Both keep their meaning for
    hours whenever they are made: a window that would cross midnight is split in two, so a
    run started at 23:59 goes on after 00:00."""
    m = now.hour * 60 + now.minute

    def shift(start: int, length: int) -> list[list[int]]:
        start %= 1440
        end = start + length
        if end <= 1440:
            return [[ALL_DAYS, start, end]]
        return [[ALL_DAYS, start, 1440], [ALL_DAYS, 0, end - 1440]]

    return shift(m - 60, 240), shift(m + 360, 240)


def write_key(path: Path, key: Ed25519PrivateKey) -> None:
    """``path`` (PKCS#8 PEM, 0600) and ``path.with_suffix('.pub')`` (SPKI PEM), like ``lockgw keys new``."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path.with_suffix(".pub").write_bytes(pub)


_handed_out: set[int] = set()


def _unique_port() -> int:
    """A free loopback port not handed out before in this process (the OS may offer a
    just-released port again, and a site with 50 devices asks for 100 of them)."""
    while True:
        port = free_port()
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def _append(path: Path) -> BinaryIO:
    return path.open("ab")


@dataclass
class Org:
    id: str
    title: str
    roles: tuple[str, ...]
    purposes: tuple[str, ...]
    doors: tuple[str, ...] = ("front",)
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    #: extra TOML lines for its [[issuers]] table (consent dates, revocation_max_age, matrix)
    extra: str = ""


@dataclass
class Carer:
    name: str  # for narration only: the gateway and the stream see ``sub``
    sub: str
    org: Org
    role: str
    purposes: tuple[str, ...] = ("planned",)
    phone: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    token: bytes = b""
    cti: bytes = field(default_factory=lambda: secrets.token_bytes(16))


@dataclass
class DeviceSpec:
    id: str
    door: str
    kind: str  # simulator: "lock" | "keysafe" | "nuki"
    driver: str  # registry name: "carelock-lock" | "carelock-keysafe" | "nuki"
    extra: str = ""  # extra TOML lines for its [[devices]] table
    port: int = field(default_factory=_unique_port)
    control: int = field(default_factory=_unique_port)
    #: a BlueZ adapter: the simulator is a BlueZ peripheral there (``--bluez --adapter``)
    adapter: str | None = None
    #: the address for the config: set from the simulator's ready line when it starts
    address: str | None = None
    #: more simulator options (``--no-beacon``)
    sim_args: tuple[str, ...] = ()

    def config_address(self) -> str:
        if self.adapter is None:
            return f"loopback://127.0.0.1:{self.port}"
        if self.address is None:
            raise RuntimeError(f"{self.id}: start the BlueZ simulator before writing the config")
        return self.address


class SimSite:
    """``async with SimSite(dir) as site``: nothing runs until you start it."""

    def __init__(
        self,
        workdir: Path,
        *,
        devices: list[DeviceSpec] | None = None,
        delay_ms: int = 0,
        site_id: str | None = None,
        timezone: str = "Europe/Amsterdam",
        bluetooth: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.dir = workdir
        #: ``[bluetooth] adapter`` for the gateway (None: the section is left out)
        self.bluetooth = bluetooth
        #: extra environment for every process (``DBUS_SYSTEM_BUS_ADDRESS`` of a test bus)
        self.env = dict(env or {})
        self.site = site_id or f"site-{secrets.token_hex(4)}"
        self.timezone = timezone
        self.delay_ms = delay_ms
        self.config = workdir / "lockgw.toml"
        self.keys = workdir / "keys"
        self.devices = (
            devices
            if devices is not None
            else [
                DeviceSpec("front-lock", "front", "lock", "carelock-lock"),
                DeviceSpec("front-keysafe", "front", "keysafe", "carelock-keysafe"),
            ]
        )
        self.orgs: list[Org] = []
        self.signer = Ed25519PrivateKey.generate()
        self.signer_id = "alarmcentrale"
        self.phone_port = _unique_port()
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        #: device id → the pairing code the installer saw on both sides and confirmed on it
        self.confirmed_codes: dict[str, str] = {}
        self._site_keys: PhoneExchange | None = None
        #: ``lockgw site-key show --phone``'s JSON once :meth:`site_keys` read it
        self.site_keys_json: dict[str, Any] = {}

    # -- parties -------------------------------------------------------------------------------
    def add_org(self, org: Org) -> Org:
        self.orgs.append(org)
        return org

    def issue(
        self,
        carer: Carer,
        *,
        windows: list[list[int]] | None = None,
        doors: list[str] | None = None,
        valid: int = DAY,
        not_before: int | None = None,
        aud: str | None = None,
        key: Ed25519PrivateKey | None = None,
    ) -> bytes:
        now = int(time.time())
        carer.token = issue_token(
            key or carer.org.key,
            iss=carer.org.id,
            sub=carer.sub,
            aud=aud or self.site,
            holder_key=carer.phone.public_key(),
            doors=doors or list(carer.org.doors),
            role=carer.role,
            purposes=list(carer.purposes),
            exp=now + valid,
            nbf=not_before if not_before is not None else now - 60,
            iat=now,
            windows=[Window(w[0], w[1], w[2]) for w in windows] if windows else (),
            cti=carer.cti,
        )
        return carer.token

    def command(
        self,
        cmd: str,
        *,
        door: str | None = "front",
        valid_for: int = 60,
        key: Ed25519PrivateKey | None = None,
        reason: str = "alarm",
        state: str | None = None,
    ) -> bytes:
        """A signed command from the alarm centre (CONTRACT §5)."""
        return Command.new(
            cmd,
            site=self.site,
            actor=self.signer_id,
            door=door,
            reason=reason,
            state=state,
            valid_for=valid_for,
        ).sign(key or self.signer)

    @staticmethod
    def revocation(
        org: Org, seq: int, *, cti: tuple[bytes, ...] = (), sub: tuple[str, ...] = ()
    ) -> bytes:
        """A signed revocation list of ``org`` (CONTRACT §5)."""
        return RevocationList.new(org.id, seq, cti=cti, sub=sub).sign(org.key)

    def roster(self, org: Org, seq: int, carers: list[Carer] | tuple[Carer, ...]) -> bytes:
        """``org``'s signed roster for this site listing ``carers``' tokens (issue them
        first); each carer appears as ``"<name>, <role>"``."""
        entries = []
        for c in carers:
            claims = decode_token(c.token)
            entries.append(
                RosterEntry(
                    sub=c.sub,
                    name=f"{c.name}, {c.role}",
                    role=c.role,
                    purposes=claims.purposes,
                    doors=claims.doors,
                    cti=claims.cti,
                    windows=claims.windows,
                    nbf=claims.nbf,
                    exp=claims.exp,
                )
            )
        return Roster.new(org.id, self.site, seq, entries).sign(org.key)

    # -- files ---------------------------------------------------------------------------------
    def write_config(
        self, broker_url: str, *, extra: str = "", phone_link: str = "", site_extra: str = ""
    ) -> Path:
        """``extra``: TOML appended after the site's tables; ``phone_link`` and
        ``site_extra``: lines for its ``[phone_link]`` and ``[site]`` tables
        (``device_timeout = 2``, ``language = "en"``), which ``extra`` cannot declare again."""
        self.keys.mkdir(mode=0o700, parents=True, exist_ok=True)
        parts = [
            "# written by simulators/site.py",
            "[site]",
            f'id = "{self.site}"',
            f'timezone = "{self.timezone}"',
            'data_dir = "data"',
            site_extra,
            "",
            "[mqtt]",
            f'url = "{broker_url}"',
            "reconnect_min = 0.2",
            "reconnect_max = 1.0",
            "",
            "[phone_link]",
            f'loopback = "127.0.0.1:{self.phone_port}"',
            phone_link,
            "",
            *([f'[bluetooth]\nadapter = "{self.bluetooth}"', ""] if self.bluetooth else []),
            extra,
        ]
        for org in self.orgs:
            write_key(self.keys / f"{org.id}.key", org.key)
            parts += [
                "[[issuers]]",
                f'id = "{org.id}"',
                f'name = "{org.title}"',
                f'public_key = "keys/{org.id}.pub"',
                "roles = [" + ", ".join(f'"{r}"' for r in org.roles) + "]",
                "purposes = [" + ", ".join(f'"{p}"' for p in org.purposes) + "]",
                "doors = [" + ", ".join(f'"{d}"' for d in org.doors) + "]",
                org.extra,
                "",
            ]
        write_key(self.keys / f"{self.signer_id}.key", self.signer)
        parts += [
            "[[command_signers]]",
            f'id = "{self.signer_id}"',
            f'public_key = "keys/{self.signer_id}.pub"',
            "",
        ]
        for dev in self.devices:
            parts += [
                "[[devices]]",
                f'id = "{dev.id}"',
                f'door = "{dev.door}"',
                f'driver = "{dev.driver}"',
                f'address = "{dev.config_address()}"',
                dev.extra,
                "",
            ]
        self.config.write_text("\n".join(parts))
        return self.config

    # -- processes -----------------------------------------------------------------------------
    async def spawn(
        self, name: str, *argv: str, env: dict[str, str] | None = None
    ) -> asyncio.subprocess.Process:
        with _append(self.dir / f"{name}.log") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                *argv,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                cwd=self.dir,
                env={**os.environ, **self.env, **(env or {})},
            )
        self.procs[name] = proc
        return proc

    async def cli(self, *argv: str, timeout: float = 60.0) -> tuple[int, str]:
        """``lockgw ARGV`` as a process; (exit code, stdout+stderr)."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=self.dir,
            env={**os.environ, **self.env},
        )
        try:
            async with asyncio.timeout(timeout):
                out, _ = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        return proc.returncode or 0, out.decode(errors="replace")

    async def wait_port(self, port: int, what: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                _, w = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{what} is not listening on 127.0.0.1:{port} (see {self.dir})"
                    ) from None
                await asyncio.sleep(0.05)
                continue
            w.close()
            with contextlib.suppress(OSError):
                await w.wait_closed()
            return

    async def start_devices(self, *, pairing: bool = True) -> None:
        for dev in self.devices:
            argv = [
                "-m",
                "simulators.cli",
                dev.kind,
                *(
                    ["--bluez", "--adapter", dev.adapter]
                    if dev.adapter is not None
                    else ["--listen", f"127.0.0.1:{dev.port}"]
                ),
                *dev.sim_args,
                "--control",
                f"127.0.0.1:{dev.control}",
                "--state",
                str(self.dir / f"{dev.id}-state.json"),
            ]
            if pairing:
                argv.append("--pairing")
            if self.delay_ms:
                argv += ["--delay", str(self.delay_ms)]
            await self.spawn(f"sim-{dev.id}", *argv)
        # many simulators starting at once on a small machine take a while each
        budget = 20.0 + 2.0 * len(self.devices)
        for dev in self.devices:
            if dev.adapter is None:
                await self.wait_port(dev.port, f"the simulated {dev.kind} {dev.id}", timeout=budget)
            else:
                dev.address = await self._ready_address(dev, timeout=budget)

    async def _ready_address(self, dev: DeviceSpec, timeout: float) -> str:
        """The BLE address a BlueZ simulator printed in its ready line."""
        log = self.dir / f"sim-{dev.id}.log"
        deadline = time.monotonic() + timeout
        while True:
            text = log.read_text(errors="replace") if log.exists() else ""
            for line in text.splitlines():
                if line.startswith("{") and '"ready": true' in line:
                    address: str = json.loads(line)["address"]
                    return address
            proc = self.procs.get(f"sim-{dev.id}")
            if (proc is not None and proc.returncode is not None) or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the simulated {dev.kind} {dev.id} did not start on {dev.adapter}:\n{text[-2000:]}"
                )
            await asyncio.sleep(0.05)

    async def pair_all(self, *, attempts: int = 3) -> None:
        """``lockgw pair`` every device, as an installer would (again when one times out:
        on a busy machine a simulator may answer late)."""
        for dev in self.devices:
            for attempt in range(attempts):
                code, out = await self.pair(dev.id)
                if code == 0:
                    break
                if attempt == attempts - 1:
                    raise RuntimeError(f"lockgw pair {dev.id} failed:\n{out}")

    async def pair(
        self, device_id: str, *, button: str | None = "confirm", timeout: float = 120.0
    ) -> tuple[int, str]:
        """``lockgw pair DEVICE --yes`` as a process, with the installer at the device: when
        it prints the pairing code, they read the device's display (its control channel's
        ``state``) and press ``button`` if it shows the same code, reject if not (None:
        they walk away). (exit code, stdout+stderr)."""
        dev = next(d for d in self.devices if d.id == device_id)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "pair", "--config", str(self.config), dev.id, "--yes",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            cwd=self.dir, env={**os.environ, **self.env},
        )  # fmt: skip
        assert proc.stdout is not None
        out: list[str] = []
        try:
            async with asyncio.timeout(timeout):
                async for raw in proc.stdout:
                    line = raw.decode(errors="replace")
                    out.append(line)
                    if line.startswith("Pairing code: ") and button is not None:
                        said = line.removeprefix("Pairing code: ").strip()
                        out.append(await self._at_the_device(dev, said, button) + "\n")
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        return proc.returncode or 0, "".join(out)

    async def _at_the_device(self, dev: DeviceSpec, said: str, button: str) -> str:
        """The installer compares the code ``lockgw pair`` said with the device's display
        and presses its button: ``button`` when they match, reject when not."""
        control = f"127.0.0.1:{dev.control}"
        try:
            shown = (await send_control(control, "state"))["pending_code"]
            pressed = button if shown == said else "reject"
            await send_control(control, "press", pressed)
        except (ControlError, KeyError, TypeError) as exc:
            return f"(installer: could not press the button on {dev.id}: {exc})"
        if pressed == "confirm":
            self.confirmed_codes[dev.id] = said
        return f"(installer: {dev.id} shows {shown}; pressed {pressed})"

    async def start_gateway(
        self, *, wait: bool = True, env: dict[str, str] | None = None
    ) -> asyncio.subprocess.Process:
        proc = await self.spawn(
            "gateway", "-m", "gateway", "run", "--config", str(self.config), env=env
        )
        if wait:
            await self.wait_port(self.phone_port, "the gateway's phone link", timeout=30)
            await self.site_keys()  # as a phone gets them with its credential
        return proc

    async def stop(
        self, name: str, *, sig: int = signal.SIGTERM, timeout: float = 15.0
    ) -> int | None:
        proc = self.procs.get(name)
        if proc is None or proc.returncode is not None:
            return None if proc is None else proc.returncode
        proc.send_signal(sig)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        return proc.returncode

    async def switch(
        self, device_id: str, name: str, value: str | float | bool | None = None
    ) -> Any:
        """A device switch (text: `"on"`, `"3000"`) or a link fault (a number: `delay_ms`, 30)."""
        dev = next(d for d in self.devices if d.id == device_id)
        return await send_control(f"127.0.0.1:{dev.control}", name, value)

    async def attempt(
        self,
        carer: Carer,
        action: str = "unlock",
        *,
        door: str = "front",
        phone: Ed25519PrivateKey | None = None,
        token_ref: bytes | None = None,
        timeout: float = 15.0,
        v1: bool = False,
    ) -> Result:
        """One phone attempt: ``lockgw-unlock-v2`` with the site keys a phone gets with
        its credential (read once, as an issuer would: ``lockgw site-key show --phone``), or the
        old v1 exchange."""
        return await unlock(
            f"127.0.0.1:{self.phone_port}",
            UnlockAttempt(
                door=door,
                action=action,
                key=phone or carer.phone,
                token=None if token_ref else carer.token,
                token_ref=token_ref,
                site=None if v1 else await self.site_keys(),
            ),
            timeout=timeout,
        )

    async def site_keys(self) -> PhoneExchange:
        """The site's keys for phones, as ``lockgw site-key show --phone`` prints them (the
        gateway creates them on its first start); cached. Read here from the key files
        the gateway wrote, without a process, so an attempt's timing is the exchange's
        alone (``tests/test_private_exchange.py`` checks they equal ``site-key show --phone``)."""
        if self._site_keys is None:
            site = self.dir / "data" / "site"
            raw = {}
            for name, field_ in (("sign.key", "sign_key"), ("exchange.key", "exchange_key")):
                key: Any = serialization.load_pem_private_key(
                    (site / name).read_bytes(), password=None
                )
                raw[field_] = b64encode(key.public_key().public_bytes_raw())
                if name == "exchange.key":  # the quiet advertisement's key (protocols.advert)
                    raw["advert_key"] = b64encode(
                        derive_advert_key(key.private_bytes_raw(), self.site)
                    )
            self.site_keys_json = {"site": self.site, **raw}
            self._site_keys = site_keys_from(self.site_keys_json)
        return self._site_keys

    async def attempt_ble(
        self,
        carer: Carer,
        adapter: str,
        action: str = "unlock",
        *,
        door: str = "front",
        phone: Ed25519PrivateKey | None = None,
        vanish_after: str | None = None,
        timeout: float = 60.0,
        v1: bool = False,
    ) -> Result | None:
        """``lockgw-sim phone unlock --bluez --adapter ADAPTER`` as its own process: the
        carer's phone over BLE GATT through BlueZ. None: it vanished as told. ``v1``: a
        phone without site keys speaking the old exchange (``[phone_link] accept_v1``)."""
        self.keys.mkdir(mode=0o700, parents=True, exist_ok=True)
        holder = phone or carer.phone
        raw = holder.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        key = self.keys / f"phone-{raw[:6].hex()}.key"
        if not key.exists():
            write_key(key, holder)
        token = base64.urlsafe_b64encode(carer.token).rstrip(b"=").decode()
        await self.site_keys()  # lockgw-unlock-v2, with the site keys a phone is given
        site_file = self.keys / "site-keys.json"
        site_file.write_text(json.dumps(self.site_keys_json))
        argv = [
            "-m", "simulators.cli", "phone", "unlock", "--bluez", "--adapter", adapter,
            *(["--v1"] if v1 else ["--site-keys", str(site_file)]),
            "--token", token, "--key", str(key), "--door", door, "--action", action,
            "--timeout", str(timeout),
            *(["--vanish-after", vanish_after] if vanish_after else []),
        ]  # fmt: skip
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *argv, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, cwd=self.dir, env={**os.environ, **self.env},
        )  # fmt: skip
        async with asyncio.timeout(timeout + 30):
            out, err = await proc.communicate()
        lines = out.decode().strip().splitlines()
        if vanish_after and proc.returncode == 2 and lines and "vanished_after" in lines[-1]:
            return None
        if proc.returncode not in (0, 1) or not lines:
            raise RuntimeError(
                f"phone on {adapter} failed ({proc.returncode}): {err.decode(errors='replace')}"
            )
        m = json.loads(lines[-1])
        return Result(granted=m["granted"], reason=m["reason"], event=m["event"])

    async def close(self) -> None:
        if "gateway" in self.procs:
            await self.stop("gateway")
        for name in list(self.procs):
            await self.stop(name, timeout=5)

    async def __aenter__(self) -> SimSite:
        self.dir.mkdir(parents=True, exist_ok=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
