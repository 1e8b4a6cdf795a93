"""The site's own keys, in ``<data_dir>/site/``: made by the gateway on its first start,
never replaced behind anyone's back.

- ``sign.key``: Ed25519 (PKCS#8 PEM, mode 0600). Signs the journal's chain head
  (``gateway.journal.heads``, docs/audit.md), so a platform that holds a signed head can
  prove later that no event up to it was cut from the journal's end; and signs the
  ``lockgw-unlock-v2`` challenge and result (``protocols/exchange.py``), so a phone knows
  it speaks to this home's gateway.
- ``exchange.key``: X25519 (PKCS#8 PEM, mode 0600). The HPKE (RFC 9180) recipient key a
  phone seals its ``lockgw-unlock-v2`` hello to, so the token never crosses the air in
  the clear. Phones get both public halves with their credentials (``docs/credentials.md``).

Each key is created 0600 when absent (:func:`load_or_create`; ``lockgw run`` journals
``site.key_created`` for it) and loaded as it is otherwise. A key file that is there but
cannot be used (damaged, another algorithm, not a regular file) does **not** stop the
gateway — a hub that will not start opens no door, not even for the alarm centre's signed
command. :func:`load_or_create` moves it aside (``<name>.key.damaged-<UTC time>``, kept for
forensics), makes a new key and says so (:attr:`SiteKeys.replaced`): ``lockgw run`` journals
``state.fallback`` and ``site.key_created`` and shows it in health until the next restart,
so the platform hears that the key changed and must be pinned again, and carers' phones
need new bundles (``lockgw site-key show --phone``). A key readable by others is set back
to 0600 and used (:attr:`SiteKeys.mode_fixed`, a warning): it may have been read, so the
docs advise replacing it.
The public halves go out in the retained inventory (an entry of ``kind: "site"``,
:func:`inventory_entry`) and ``lockgw site-key show`` prints them for issuers and the
platform to pin.

Another key joins by adding a :class:`_Spec` to :data:`_SPECS`; everything else here
(creation, loading, the inventory, the command) goes over that table.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)

from gateway.keys import read_small_file
from protocols.advert import derive_advert_key
from protocols.errors import KeyFileError

__all__ = [
    "INVENTORY_ID",
    "Replaced",
    "SiteKey",
    "SiteKeys",
    "advert_key",
    "b64url",
    "inventory_entry",
    "load",
    "load_or_create",
    "phone_keys",
    "problems",
    "site_dir",
]

#: the inventory entry that carries the site's public keys (no device id starts with '@')
INVENTORY_ID = "@site"


def site_dir(data_dir: Path | str) -> Path:
    return Path(data_dir) / "site"


def b64url(raw: bytes) -> str:
    """Unpadded base64url (RFC 4648 §5), as the inventory and the signed heads carry keys."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class _Spec:
    """How one site key is made, loaded and shown."""

    name: str  # "sign": the file is sign.key; the inventory field sign_key
    algorithm: str
    purpose: str
    generate: Callable[[], Any]
    #: whether a loaded private key object is of this algorithm
    accept: Callable[[Any], bool]
    #: the raw public key bytes of a private key object
    public_raw: Callable[[Any], bytes]


def _ed25519_public(key: Any) -> bytes:
    raw: bytes = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return raw


_SPECS: tuple[_Spec, ...] = (
    _Spec(
        name="sign",
        algorithm="Ed25519",
        purpose="signs the journal's chain head and lockgw-unlock-v2 challenges and results",
        generate=Ed25519PrivateKey.generate,
        accept=lambda k: isinstance(k, Ed25519PrivateKey),
        public_raw=_ed25519_public,
    ),
    _Spec(
        name="exchange",
        algorithm="X25519",
        purpose="phones seal their lockgw-unlock-v2 hello to it (HPKE)",
        generate=X25519PrivateKey.generate,
        accept=lambda k: isinstance(k, X25519PrivateKey),
        public_raw=_ed25519_public,  # the same call for X25519 keys
    ),
)


@dataclass(frozen=True, slots=True)
class SiteKey:
    name: str
    algorithm: str
    purpose: str
    path: Path
    private: Any
    public: bytes

    @property
    def kid(self) -> str:
        """First 8 bytes of SHA-256 of the raw public key, hex (as CONTRACT §2 names keys)."""
        return hashlib.sha256(self.public).digest()[:8].hex()

    @property
    def public_pem(self) -> str:
        pem: bytes = self.private.public_key().public_bytes(
            Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
        )
        return pem.decode()


@dataclass(frozen=True, slots=True)
class Replaced:
    """A key file that could not be used, moved aside and replaced by a new key."""

    name: str
    kept_as: Path
    problem: str


@dataclass(frozen=True, slots=True)
class SiteKeys:
    """The site's keys; ``created``: those made just now (to journal ``site.key_created``);
    ``replaced``: damaged files moved aside for them; ``mode_fixed``: key files that were
    readable by others and are 0600 again."""

    keys: dict[str, SiteKey]
    created: list[SiteKey] = field(default_factory=list)
    replaced: list[Replaced] = field(default_factory=list)
    mode_fixed: list[Path] = field(default_factory=list)

    @property
    def sign(self) -> SiteKey:
        return self.keys["sign"]

    @property
    def exchange(self) -> SiteKey:
        return self.keys["exchange"]


def _load_one(spec: _Spec, path: Path) -> SiteKey:
    data, mode = read_small_file(path)
    if mode & 0o077:
        raise KeyFileError(
            str(path), f"is readable by others (mode {mode:04o}); run chmod 600 {path}"
        )
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise KeyFileError(
            str(path),
            "is damaged: not an unencrypted PKCS#8 PEM private key. lockgw run moves it "
            "aside and makes a new one, journaled (the platform must pin the new public key, "
            "phones need new bundles: lockgw site-key show); or restore it from a backup "
            "before the next start",
        ) from None
    if not spec.accept(key):
        raise KeyFileError(str(path), f"is not an {spec.algorithm} key ({spec.purpose})")
    return SiteKey(spec.name, spec.algorithm, spec.purpose, path, key, spec.public_raw(key))


def _create_one(spec: _Spec, path: Path) -> SiteKey:
    key = spec.generate()
    pem: bytes = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    tmp = path.with_name(f".{path.name}.new")
    try:
        tmp.unlink(missing_ok=True)  # a start that died half-way through writing
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)  # never over a key that appeared meanwhile
        tmp.unlink()
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except FileExistsError:
        tmp.unlink(missing_ok=True)
        return _load_one(spec, path)
    except OSError as exc:
        raise KeyFileError(str(path), f"cannot be created ({exc.strerror})") from None
    return SiteKey(spec.name, spec.algorithm, spec.purpose, path, key, spec.public_raw(key))


def _make_private(path: Path) -> bool:
    """A regular key file readable by others made 0600 again; True when it was. A file
    this user cannot chmod is an error of its own: a good key is never moved aside for it."""
    st = path.lstat()
    if not stat.S_ISREG(st.st_mode) or not st.st_mode & 0o077:
        return False
    try:
        os.chmod(path, 0o600)
    except OSError as exc:
        raise KeyFileError(
            str(path), f"is readable by others and cannot be made 0600 ({exc.strerror})"
        ) from None
    return True


def _move_aside(path: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    dest = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while dest.exists() or dest.is_symlink():
        n += 1
        dest = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
    try:
        os.rename(path, dest)
    except OSError as exc:
        raise KeyFileError(str(path), f"is damaged and cannot be moved aside ({exc.strerror})") from None
    return dest


def load_or_create(data_dir: Path | str) -> SiteKeys:
    """Every site key, each made (0600, in a 0700 directory) when absent; a damaged one
    moved aside and made anew, one readable by others set back to 0600 (module
    docstring). Raises :class:`KeyFileError` only when the directory or a key cannot be
    written at all."""
    d = site_dir(data_dir)
    try:
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise KeyFileError(str(d), f"cannot create the directory ({exc.strerror})") from None
    keys: dict[str, SiteKey] = {}
    created: list[SiteKey] = []
    replaced: list[Replaced] = []
    fixed: list[Path] = []
    for spec in _SPECS:
        path = d / f"{spec.name}.key"
        if path.exists() or path.is_symlink():
            if _make_private(path):
                fixed.append(path)
            try:
                keys[spec.name] = _load_one(spec, path)
                continue
            except KeyFileError as exc:
                replaced.append(Replaced(spec.name, _move_aside(path), exc.problem))
        keys[spec.name] = k = _create_one(spec, path)
        created.append(k)
    return SiteKeys(keys, created, replaced, fixed)


def load(data_dir: Path | str) -> SiteKeys:
    """Every site key as it is on disk (nothing is made). Raises :class:`KeyFileError`
    for one that is missing or cannot be used."""
    d = site_dir(data_dir)
    keys: dict[str, SiteKey] = {}
    for spec in _SPECS:
        path = d / f"{spec.name}.key"
        if not (path.exists() or path.is_symlink()):
            raise KeyFileError(
                str(path), "not found: the gateway makes it on its first start (lockgw run)"
            )
        keys[spec.name] = _load_one(spec, path)
    return SiteKeys(keys)


def problems(data_dir: Path | str) -> list[str]:
    """Site key files that are there but cannot be used as they are, for ``check-config``
    (``lockgw run`` starts anyway: it moves a damaged key aside and makes a new one, and
    sets one readable by others back to 0600); absent ones are made at the start."""
    out = []
    for spec in _SPECS:
        path = site_dir(data_dir) / f"{spec.name}.key"
        if path.exists() or path.is_symlink():
            try:
                _load_one(spec, path)
            except KeyFileError as exc:
                out.append(f"site key: {exc}")
    return out


def advert_key(site: str, keys: SiteKeys) -> bytes:
    """The site's advertising key (:mod:`protocols.advert`), derived from the exchange key:
    phones holding it recognise the hub's quiet advertisement."""
    return derive_advert_key(keys.exchange.private.private_bytes_raw(), site)


def phone_keys(site: str, keys: SiteKeys) -> dict[str, str]:
    """What a phone needs with its credential (``lockgw site-key show --phone``):
    ``{"site", "sign_key", "exchange_key", "advert_key"}``, unpadded base64url — the raw
    public keys, and the advertising key (a secret for the site's phones: it lets them
    find the hub, nothing more)."""
    return {
        "site": site,
        "sign_key": b64url(keys.sign.public),
        "exchange_key": b64url(keys.exchange.public),
        "advert_key": b64url(advert_key(site, keys)),
    }


def inventory_entry(site: str, version: str, keys: SiteKeys) -> dict[str, Any]:
    """The retained inventory's entry for the site itself: its public keys
    (``<name>_key``, unpadded base64url of the raw key) and their ids (``<name>_kid``)."""
    entry: dict[str, Any] = {
        "id": INVENTORY_ID,
        "door": "",
        "driver": "lockgw",
        "kind": "site",
        "manufacturer": "lockgw",
        "model": "gateway",
        "serial": site,
        "firmware": version,
        "paired_at": None,
    }
    for k in keys.keys.values():
        entry[f"{k.name}_key"] = b64url(k.public)
        entry[f"{k.name}_kid"] = k.kid
    return entry
