"""Where pairing keys live: one file per device, mode 0600, in a 0700 directory.

``<data_dir>/devices/keys/<device>.json`` holds ``{"device", "paired_at", "saved_at",
"secrets", "sha256"}``; :meth:`FileSecretStore.load` returns only ``secrets`` (what the
driver saved). ``sha256`` is the checksum of the rest (canonical JSON), so a file that
was cut short, edited or rotted is told from a good one (a file written before the
checksum existed is still read). Writes are atomic (a temporary file in the same
directory, fsync, rename, fsync of the directory), so a power cut during pairing leaves
the old keys or the new ones, never half a file. A key file another user can read is
refused with a message that says how to fix it.

A damaged file raises :class:`KeyFileError` saying to pair the device again; the
device supervisor reports the device offline with that reason (``device.offline``,
health) and phones hear ``device_unavailable`` at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from protocols.errors import KeyFileError

__all__ = ["FileSecretStore"]


#: a pairing-key file is a few hundred bytes; anything far larger is not one
_MAX_BYTES = 1024 * 1024


def _checksum(doc: dict[str, Any]) -> str:
    body = {k: v for k, v in doc.items() if k != "sha256"}
    return hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    ).hexdigest()


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class FileSecretStore:
    """:class:`drivers.base.SecretStore` on disk under ``<data_dir>/devices/keys``."""

    def __init__(self, data_dir: Path | str) -> None:
        self.dir = Path(data_dir) / "devices" / "keys"

    def path(self, device_id: str) -> Path:
        if not device_id or "/" in device_id or device_id.startswith("."):
            raise ValueError(f"not a device id: {device_id!r}")
        return self.dir / f"{device_id}.json"

    def _read(self, device_id: str) -> dict[str, Any] | None:
        p = self.path(device_id)
        again = f"pair the device again: lockgw pair --config F {device_id}"
        try:
            fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise KeyFileError(str(p), f"cannot open: {exc.strerror}; {again}") from exc
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise KeyFileError(str(p), f"not a regular file; {again}")
        with os.fdopen(fd, "rb") as f:
            mode = stat.S_IMODE(st.st_mode)
            if mode & 0o077:
                raise KeyFileError(
                    str(p), f"readable by others (mode {mode:04o}); run chmod 600 {p}"
                )
            raw = f.read(_MAX_BYTES + 1)
        if len(raw) > _MAX_BYTES:
            raise KeyFileError(str(p), f"damaged (far too large); {again}")
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            what = "empty" if not raw.strip() else f"not valid JSON ({exc})"
            raise KeyFileError(str(p), f"damaged: {what}; {again}") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("secrets"), dict):
            raise KeyFileError(str(p), f"damaged: no pairing keys in the file; {again}")
        if "sha256" in doc and doc["sha256"] != _checksum(doc):
            raise KeyFileError(
                str(p), f"damaged: fails its checksum (changed or partly written); {again}"
            )
        if doc.get("device", device_id) != device_id:
            raise KeyFileError(
                str(p), f"holds the keys of device {doc.get('device')!r}, not {device_id!r}; {again}"
            )
        return doc

    def load(self, device_id: str) -> dict[str, Any] | None:
        doc = self._read(device_id)
        return None if doc is None else dict(doc["secrets"])

    def paired_at(self, device_id: str) -> str | None:
        """When the device was paired (RFC 3339 UTC), or None when it is not."""
        try:
            doc = self._read(device_id)
        except KeyFileError:
            return None
        return None if doc is None else str(doc.get("paired_at") or doc.get("saved_at") or "")

    def save(self, device_id: str, secrets: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.dir, 0o700)
        old: dict[str, Any] | None
        try:
            old = self._read(device_id)
        except KeyFileError:
            old = None
        now = _now_iso()
        doc = {
            "device": device_id,
            "paired_at": (old or {}).get("paired_at") or now,
            "saved_at": now,
            "secrets": secrets,
        }
        self._write(device_id, doc)

    def _write(self, device_id: str, doc: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        doc = {**doc, "sha256": _checksum(doc)}
        data = json.dumps(doc, indent=1, sort_keys=True).encode()
        target = self.path(device_id)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), 0o600)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        dfd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def mark_paired(self, device_id: str) -> None:
        """Record that the keys now on file come from a pairing made just now."""
        doc = self._read(device_id)
        if doc is None:
            raise KeyFileError(str(self.path(device_id)), "no keys on file to mark as paired")
        self._write(device_id, {**doc, "paired_at": _now_iso()})

    def delete(self, device_id: str) -> bool:
        """Forget a device's keys (before pairing it again). True if there were any."""
        try:
            self.path(device_id).unlink()
        except FileNotFoundError:
            return False
        return True
