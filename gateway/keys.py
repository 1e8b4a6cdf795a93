"""Key files: Ed25519 PKCS#8 PEM private keys (mode 0600) and SPKI PEM public keys."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)

from protocols.errors import KeyFileError

__all__ = [
    "MAX_KEY_FILE",
    "load_private_key",
    "load_public_key",
    "read_regular_file",
    "read_small_file",
    "write_key_pair",
]


#: a PEM key file is a few hundred bytes; more than this is not one
MAX_KEY_FILE = 64 * 1024


def read_regular_file(path: Path, limit: int, what: str) -> tuple[bytes, int]:
    """The bytes and mode of a regular file of at most ``limit`` bytes, never blocking: a
    FIFO, a device (``/dev/zero``) or a directory is refused before anything is read.
    Raises ValueError with the problem in words (without the path)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ValueError("not found") from None
    except OSError as exc:
        raise ValueError(f"cannot be read ({exc.strerror})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ValueError(f"is a directory, not a {what}")
        raise ValueError(f"is not a regular file (a device or pipe?), not a {what}")
    with os.fdopen(fd, "rb") as f:
        try:
            data = f.read(limit + 1)
        except OSError as exc:
            raise ValueError(f"cannot be read ({exc.strerror})") from None
    if len(data) > limit:
        raise ValueError(f"is larger than {limit} bytes: not a {what}")
    return data, stat.S_IMODE(st.st_mode)


def read_small_file(path: Path, what: str = "key file") -> tuple[bytes, int]:
    """:func:`read_regular_file` for key files (:data:`MAX_KEY_FILE`); raises
    :class:`KeyFileError`."""
    try:
        return read_regular_file(path, MAX_KEY_FILE, what)
    except ValueError as exc:
        raise KeyFileError(str(path), str(exc)) from None


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    path = Path(path)
    data, _ = read_small_file(path)
    try:
        key = load_pem_public_key(data)
    except ValueError:
        raise KeyFileError(
            str(path), "is not a PEM public key (expected -----BEGIN PUBLIC KEY-----)"
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(str(path), "is not an Ed25519 key (lockgw uses Ed25519 only)")
    return key


def load_private_key(path: str | Path, *, check_mode: bool = True) -> Ed25519PrivateKey:
    path = Path(path)
    data, mode = read_small_file(path)
    if check_mode and mode & 0o077:
        raise KeyFileError(
            str(path), f"is readable by others (mode {mode:04o}); run chmod 600 {path}"
        )
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise KeyFileError(
            str(path), "is not an unencrypted PKCS#8 PEM private key (-----BEGIN PRIVATE KEY-----)"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(str(path), "is not an Ed25519 key (lockgw uses Ed25519 only)")
    return key


#: a key's base name: it names two files inside the output directory, nothing else
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def write_key_pair(out_dir: str | Path, name: str) -> tuple[Path, Path]:
    """Create ``name.key`` (PKCS#8 PEM, 0600) and ``name.pub`` (SPKI PEM, 0600: the owner
    hands it on) inside ``out_dir`` (created 0700 if missing); never overwrite. ``name``
    must be a plain file name: it cannot point outside ``out_dir``."""
    if not _NAME.fullmatch(name):
        raise KeyFileError(
            repr(name),
            "not a plain key name (letters, digits, '.', '_' and '-', starting with a letter "
            "or digit, at most 100); the files are written inside --out",
        )
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise KeyFileError(str(out), f"cannot create the directory ({exc.strerror})") from None
    if not out.is_dir():
        raise KeyFileError(str(out), "is not a directory")
    key_path, pub_path = out / f"{name}.key", out / f"{name}.pub"
    for p in (key_path, pub_path):
        if p.exists() or p.is_symlink():
            raise KeyFileError(str(p), "already exists; choose another --name or remove it first")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    pub = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    for path, data in ((key_path, pem), (pub_path, pub)):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise KeyFileError(str(path), f"cannot be written ({exc.strerror})") from None
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(data)
    return key_path, pub_path
