"""bleak backends for ``loopback://host:port`` addresses: GATT over TCP to simulators.

Selected by :mod:`drivers.ble` from the address; drivers never import this package.
Wire format: ``protocols/gattlink.py`` and ``protocols/README.md``.
"""

from drivers.loopback.client import LoopbackClientBackend
from drivers.loopback.scanner import LoopbackScannerBackend, probe

__all__ = ["LoopbackClientBackend", "LoopbackScannerBackend", "probe"]
