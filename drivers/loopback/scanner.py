"""bleak scanner backend for loopback simulators.

TCP has no advertising channel, so the scanner *probes* the addresses it is given (a
``scan`` frame; the simulator answers with its advertisement — local name, service
UUIDs, manufacturer data — and closes) every :attr:`interval` seconds while scanning,
and reports each answer through bleak's detection callbacks as an advertisement.
``LoopbackScannerBackend.targeting([...])`` makes a backend class for given addresses::

    BleakScanner.find_device_by_address(
        "loopback://127.0.0.1:47001", backend=LoopbackScannerBackend.targeting([addr]))
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any, ClassVar, cast

from bleak.backends.scanner import (
    AdvertisementData,
    AdvertisementDataCallback,
    BaseBleakScanner,
)

from protocols import gattlink as gl
from protocols.errors import FrameError

__all__ = ["LoopbackScannerBackend"]

#: how long one probe may take
PROBE_TIMEOUT = 1.0


class LoopbackScannerBackend(BaseBleakScanner):
    """Scans the loopback addresses in :attr:`addresses` (see :meth:`targeting`)."""

    addresses: ClassVar[tuple[str, ...]] = ()
    #: seconds between probe rounds, like an advertising interval
    interval: ClassVar[float] = 0.2

    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None,
        service_uuids: list[str] | None,
        scanning_mode: str = "active",
        **kwargs: Any,
    ) -> None:
        super().__init__(detection_callback, service_uuids)
        for address in self.addresses:
            gl.parse_address(address)  # a bad address is a ValueError now, not a silent miss
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def targeting(cls, addresses: Iterable[str]) -> type[LoopbackScannerBackend]:
        """A backend class that scans exactly these ``loopback://host:port`` addresses."""
        targets = tuple(addresses)
        for address in targets:
            gl.parse_address(address)
        return cast(
            "type[LoopbackScannerBackend]",
            type(cls.__name__, (cls,), {"addresses": targets, "__module__": cls.__module__}),
        )

    async def start(self) -> None:
        self.seen_devices = {}
        if self._task is None:
            self._task = asyncio.create_task(self._scan_loop())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _scan_loop(self) -> None:
        while True:
            results = await asyncio.gather(*(probe(a) for a in self.addresses))
            for address, adv in zip(self.addresses, results, strict=True):
                if adv is None:
                    continue
                data = AdvertisementData(
                    local_name=adv.name or None,
                    manufacturer_data=dict(adv.manufacturer_data),
                    service_data={},
                    service_uuids=list(adv.service_uuids),
                    tx_power=None,
                    rssi=-50,
                    platform_data=(address,),
                )
                if not self.is_allowed_uuid(data.service_uuids):
                    continue
                device = self.create_or_update_device(
                    address, address, adv.name or None, {"loopback": address}, data
                )
                self.call_detection_callbacks(device, data)
            await asyncio.sleep(self.interval)


async def probe(address: str, timeout: float = PROBE_TIMEOUT) -> gl.Advertisement | None:
    """One scan of one simulator: its advertisement, or None when it does not answer."""
    host, port = gl.parse_address(address)
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(gl.pack(gl.Scan()))
            header = await reader.readexactly(gl.FrameBuffer.HEADER)
            body = await reader.readexactly(gl.FrameBuffer.body_length(header))
            frame = gl.decode_from_peripheral(body)
    except (OSError, TimeoutError, asyncio.IncompleteReadError, FrameError):
        return None
    finally:
        if writer is not None:
            writer.transport.abort()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
    return frame if isinstance(frame, gl.Advertisement) else None
