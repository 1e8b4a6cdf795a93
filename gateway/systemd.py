"""systemd ``Type=notify`` support without libsystemd: READY, STATUS, STOPPING, WATCHDOG.

Reads ``$NOTIFY_SOCKET`` (a path or an abstract ``@name``) and ``$WATCHDOG_USEC``. Outside
systemd every call is a no-op. The watchdog is fed from the event loop itself
(:meth:`SdNotifier.watchdog_loop` runs as a task), so a stuck loop stops the pings and
systemd restarts the service.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Mapping

import structlog

__all__ = ["SdNotifier"]

log = structlog.get_logger(__name__)


class SdNotifier:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self._addr = env.get("NOTIFY_SOCKET") or None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        self.watchdog_usec = (
            int(usec) if usec.isdigit() and (not pid or pid == str(os.getpid())) else 0
        )

    @property
    def enabled(self) -> bool:
        return self._addr is not None

    def notify(self, message: str) -> bool:
        """Send one datagram; False when not under systemd or the socket is gone."""
        if self._addr is None:
            return False
        addr = "\0" + self._addr[1:] if self._addr.startswith("@") else self._addr
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.sendto(message.encode(), addr)
        except OSError as exc:
            log.warning("sd_notify failed", error=str(exc))
            return False
        return True

    def ready(self, status: str = "") -> None:
        self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def status(self, status: str) -> None:
        self.notify(f"STATUS={status}")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def reloading(self) -> None:
        self.notify("RELOADING=1")

    async def watchdog_loop(self) -> None:
        """Ping at half the watchdog interval for as long as the loop runs; returns if disabled."""
        if not self.enabled or self.watchdog_usec <= 0:
            return
        interval = self.watchdog_usec / 2_000_000
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(interval)
