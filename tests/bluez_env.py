"""BlueZ's D-Bus API without a radio: a private bus and BlueZoo, for tests and benches.

``BlueZoo`` (PyPI ``bluezoo``, GPL-2.0-only, pinned in the ``test`` extra) serves
BlueZ's ``org.bluez`` API with virtual adapters that see each other: an advertisement
registered on one adapter is discovered by a scan on another, and a connection from one
to the other reaches the GATT application the peripheral registered through
``GattManager1``. It is a test tool run as its own process; product code never imports
it, and this module only talks to it over D-Bus.

``with BluezEnv(adapters=4) as bz:`` starts

- a ``dbus-daemon`` with a system-like bus on a unix socket in a temporary directory
  (``bz.bus_address`` is what ``DBUS_SYSTEM_BUS_ADDRESS`` must be for every process that
  should use it: ``bz.env()`` is ``os.environ`` with it set), and
- ``bluezoo`` on that bus with adapters ``hci0`` … ``hciN-1`` (powered, scanning every
  second), through ``tests/bluezoo_launcher.py`` (three corrections towards BlueZ that
  reconnecting needs), and waits until every adapter is on the bus.

``await bz.remove_adapter("hci0")`` / ``await bz.add_adapter("hci0")`` take an adapter
away and give it back with the same address (a USB dongle pulled and plugged in again,
BlueZ restarted), through BlueZoo's own control interface ``org.bluezoo.Manager1``.
Leaving the ``with`` block stops both processes (SIGTERM, then SIGKILL).

BlueZoo reports only the first advertisement registered on an adapter, so each
simulated peripheral needs an adapter of its own; the central (the gateway, a phone)
uses another.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus

__all__ = ["Adapter", "BluezEnv", "BluezEnvError"]

_BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""


class BluezEnvError(RuntimeError):
    """The private bus or BlueZoo did not start (the message says which and why)."""


@dataclass(frozen=True)
class Adapter:
    index: int
    address: str

    @property
    def name(self) -> str:
        return f"hci{self.index}"

    @property
    def path(self) -> str:
        return f"/org/bluez/{self.name}"


def _find_tool(name: str) -> str | None:
    beside = Path(sys.executable).parent / name  # console scripts of this venv
    if beside.exists():
        return str(beside)
    return shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)


class BluezEnv:
    """A private system bus with BlueZoo and ``adapters`` virtual adapters."""

    def __init__(self, adapters: int = 4, *, scan_interval: int = 1, shared: bool = False) -> None:
        """``shared``: other users of this machine may use the bus too (a service user
        such as ``lockgw`` in the package test); otherwise only this user can reach it."""
        if not 1 <= adapters <= 16:
            raise ValueError("between 1 and 16 adapters")
        self.adapters = [Adapter(i, f"02:00:00:00:00:{i:02X}") for i in range(adapters)]
        self.scan_interval = scan_interval
        self.shared = shared
        self.bus_address = ""
        self._dir: Path | None = None
        self._dbus: subprocess.Popen[bytes] | None = None
        self._zoo: subprocess.Popen[bytes] | None = None

    # -- what tests use ---------------------------------------------------------------------
    def adapter(self, name: str) -> Adapter:
        for a in self.adapters:
            if a.name == name:
                return a
        raise KeyError(name)

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """``base`` (default ``os.environ``) with ``DBUS_SYSTEM_BUS_ADDRESS`` set to this bus."""
        return dict(os.environ if base is None else base, DBUS_SYSTEM_BUS_ADDRESS=self.bus_address)

    async def remove_adapter(self, name: str) -> None:
        """Take the adapter away: its devices disconnect and its object leaves the bus."""
        a = self.adapter(name)
        await self._call("RemoveAdapter", "y", [a.index])
        await self.wait_adapters(absent=[name])

    async def add_adapter(self, name: str) -> None:
        """Give the adapter back, same name and address, powered."""
        a = self.adapter(name)
        await self._call("AddAdapter", "ys", [a.index, a.address])
        await self.wait_adapters(present=[name])

    async def wait_adapters(
        self, present: list[str] | None = None, absent: list[str] | None = None,
        timeout: float = 15.0,
    ) -> None:
        """Until every adapter in ``present`` is on the bus and none in ``absent`` is."""
        want = set(present or [])
        gone = set(absent or [])
        async with asyncio.timeout(timeout):
            while True:
                try:
                    have = await self._adapters_on_bus()
                except Exception:
                    have = None
                if have is not None and want <= have and not gone & have:
                    return
                await asyncio.sleep(0.05)

    def log(self) -> str:
        """BlueZoo's log so far (for failure messages)."""
        if self._dir is None or not (self._dir / "bluezoo.log").exists():
            return ""
        return (self._dir / "bluezoo.log").read_text(errors="replace")[-60000:]

    # -- D-Bus plumbing ---------------------------------------------------------------------
    async def _bus(self) -> MessageBus:
        return await MessageBus(bus_address=self.bus_address, bus_type=BusType.SYSTEM).connect()

    async def _call(self, member: str, signature: str, body: list[object]) -> None:
        bus = await self._bus()
        try:
            reply = await bus.call(Message(
                destination="org.bluez", path="/org/bluezoo", interface="org.bluezoo.Manager1",
                member=member, signature=signature, body=body,
            ))
        finally:
            bus.disconnect()
            with contextlib.suppress(Exception):
                await bus.wait_for_disconnect()
        if reply is None or reply.message_type == MessageType.ERROR:
            detail = reply.body if reply is not None else "no reply"
            raise BluezEnvError(f"BlueZoo {member}{tuple(body)} failed: {reply.error_name if reply else ''} {detail}")

    async def _adapters_on_bus(self) -> set[str]:
        bus = await self._bus()
        try:
            reply = await bus.call(Message(
                destination="org.bluez", path="/", interface="org.freedesktop.DBus.ObjectManager",
                member="GetManagedObjects",
            ))
        finally:
            bus.disconnect()
            with contextlib.suppress(Exception):
                await bus.wait_for_disconnect()
        if reply is None or reply.message_type == MessageType.ERROR:
            raise BluezEnvError("org.bluez does not answer GetManagedObjects")
        return {
            path.rsplit("/", 1)[1] for path, ifaces in reply.body[0].items()
            if "org.bluez.Adapter1" in ifaces
        }

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        dbus_daemon = _find_tool("dbus-daemon")
        if dbus_daemon is None:
            raise BluezEnvError("dbus-daemon is not installed: run scripts/bootstrap.sh")
        if _find_tool("bluezoo") is None:
            raise BluezEnvError("bluezoo is not installed: pip install -e '.[test]'")
        bluezoo = str(Path(__file__).with_name("bluezoo_launcher.py"))
        self._dir = Path(tempfile.mkdtemp(prefix="lockgw-bluez-"))
        if self.shared:
            self._dir.chmod(0o755)
        try:
            self._start(dbus_daemon, bluezoo)
        except BaseException:
            self.stop()
            raise

    def _start(self, dbus_daemon: str, bluezoo: str) -> None:
        assert self._dir is not None
        socket = self._dir / "system_bus_socket"
        conf = self._dir / "bus.conf"
        conf.write_text(_BUS_CONFIG.format(socket=socket))
        self._dbus = subprocess.Popen(
            [dbus_daemon, f"--config-file={conf}", "--nofork", "--nopidfile", "--print-address"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        )
        assert self._dbus.stdout is not None
        line = self._dbus.stdout.readline().decode().strip()
        if not line:
            raise BluezEnvError(f"dbus-daemon exited {self._dbus.wait()} before printing its address")
        self.bus_address = line
        argv = [sys.executable, bluezoo, "--auto-enable", f"--scan-interval={self.scan_interval}"]
        for a in self.adapters:
            argv += ["-a", a.address]
        with (self._dir / "bluezoo.log").open("wb") as log:
            self._zoo = subprocess.Popen(
                argv, env=self.env(), stdout=log, stderr=log, stdin=subprocess.DEVNULL,
            )
        names = [a.name for a in self.adapters]
        deadline = time.monotonic() + 20
        while True:
            if self._zoo.poll() is not None:
                raise BluezEnvError(f"bluezoo exited {self._zoo.returncode}: {self.log()}")
            try:
                asyncio.run(self.wait_adapters(present=names, timeout=1.0))
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise BluezEnvError(f"bluezoo's adapters did not appear: {self.log()}") from None

    def stop(self) -> None:
        for proc in (self._zoo, self._dbus):
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._dbus is not None and self._dbus.stdout is not None:
            self._dbus.stdout.close()
        self._zoo = self._dbus = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> BluezEnv:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
