"""Key files: Ed25519 PKCS#8 PEM private keys (mode 0600) and SPKI PEM public keys."""

from __future__ import annotations

import os
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

__all__ = ["load_private_key", "load_public_key", "write_key_pair"]


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(str(path), "not found") from None
    except OSError as exc:
        raise KeyFileError(str(path), f"cannot be read ({exc.strerror})") from None
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
    try:
        st = path.stat()
        data = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(str(path), "not found") from None
    except OSError as exc:
        raise KeyFileError(str(path), f"cannot be read ({exc.strerror})") from None
    mode = stat.S_IMODE(st.st_mode)
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


def write_key_pair(out_dir: str | Path, name: str) -> tuple[Path, Path]:
    """Create ``name.key`` (PKCS#8 PEM, 0600) and ``name.pub`` (SPKI PEM); never overwrite."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    key_path, pub_path = out / f"{name}.key", out / f"{name}.pub"
    for p in (key_path, pub_path):
        if p.exists():
            raise KeyFileError(str(p), "already exists; choose another --name or remove it first")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    pub_path.write_bytes(
        key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    return key_path, pub_path
