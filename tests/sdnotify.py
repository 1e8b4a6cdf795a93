"""A tiny sd_notify listener: what systemd does with ``Type=notify`` and ``WatchdogSec``,
without systemd. Tests start the unit's ``ExecStart`` with ``NOTIFY_SOCKET`` pointing here."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path


class NotifyListener:
    def __init__(self, directory: Path) -> None:
        self.path = directory / "notify.sock"
        self.messages: list[str] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(self.path))
        self._sock.setblocking(False)

    def close(self) -> None:
        self._sock.close()

    async def wait_for(self, needle: str, timeout: float) -> str:
        """The first datagram containing ``needle`` (keeps collecting the others)."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            for m in self.messages:
                if needle in m:
                    return m
            while True:
                data = await loop.sock_recv(self._sock, 4096)
                msg = data.decode()
                self.messages.append(msg)
                if needle in msg:
                    return msg
