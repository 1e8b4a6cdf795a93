"""A signed journal head: the site's word that its journal holds seq 1..``seq`` and that
row ``seq``'s chain link is ``hash``. Pure (no I/O).

The gateway signs its journal's head with the site key (Ed25519, ``<data_dir>/site/
sign.key``) every ``journal.head_interval`` seconds while events are added, and at
stop; it keeps the newest few beside the journal and publishes the newest in the
retained ``status`` (``head``). A platform that keeps the newest head it saw can
later prove the hub's journal was not cut short: a journal that ends before the
head's ``seq``, or whose row ``seq`` has another link, is not the one that was signed.

Wire form (JSON object, also the ``head`` field of ``status``)::

    {"v": 1, "site": "...", "seq": 54, "hash": "<64 hex>", "ts": "2026-...Z",
     "kid": "<16 hex>", "sig": "<unpadded base64url, 64 bytes>"}

``sig`` is Ed25519 over :data:`DOMAIN` followed by the canonical JSON (sorted keys, no
spaces) of ``{"v", "site", "seq", "hash", "ts"}``; ``kid`` names the key (first 8 bytes
of SHA-256 of the raw public key, hex) and is not signed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["DOMAIN", "HeadError", "SignedHead", "parse_head", "sign_head", "signed_bytes"]

#: what a head signature is over, before the JSON: no other lockgw signature starts so
DOMAIN = b"lockgw journal head v1\x00"


class HeadError(ValueError):
    """A head that is not one (shape) or whose signature does not hold."""


class SignedHead(BaseModel):
    """``status.head``: the newest journal head the gateway signed."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    v: int = Field(default=1, description="1")
    site: str
    seq: int = Field(ge=0, description="the journal holds seq 1..seq (0: no event yet)")
    hash: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="row seq's chain link, SHA-256 hex"
    )
    ts: str = Field(description="RFC 3339 UTC, when the gateway signed it")
    kid: str = Field(
        pattern=r"^[0-9a-f]{16}$", description="the site signing key's id (lockgw site-key show)"
    )
    sig: str = Field(description="Ed25519 signature, unpadded base64url (protocols/README.md)")

    def message(self) -> bytes:
        return signed_bytes(self.site, self.seq, self.hash, self.ts)

    def verify(self, public: bytes) -> None:
        """Raise :class:`HeadError` unless ``public`` (raw Ed25519) signed this head."""
        if hashlib.sha256(public).digest()[:8].hex() != self.kid:
            raise HeadError(
                f"signed with key {self.kid}, not the site key "
                f"{hashlib.sha256(public).digest()[:8].hex()}"
            )
        try:
            sig = base64.urlsafe_b64decode(self.sig + "=" * (-len(self.sig) % 4))
            Ed25519PublicKey.from_public_bytes(public).verify(sig, self.message())
        except (InvalidSignature, ValueError, binascii.Error):
            raise HeadError("its signature does not hold (forged or altered)") from None

    def wire(self) -> dict[str, Any]:
        return self.model_dump()


def signed_bytes(site: str, seq: int, hash_hex: str, ts: str) -> bytes:
    body = {"v": 1, "site": site, "seq": seq, "hash": hash_hex, "ts": ts}
    return DOMAIN + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def sign_head(key: Ed25519PrivateKey, site: str, seq: int, hash_hex: str, ts: str) -> SignedHead:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    sig = key.sign(signed_bytes(site, seq, hash_hex, ts))
    return SignedHead(
        site=site,
        seq=seq,
        hash=hash_hex,
        ts=ts,
        kid=hashlib.sha256(raw).digest()[:8].hex(),
        sig=base64.urlsafe_b64encode(sig).rstrip(b"=").decode(),
    )


def parse_head(obj: object) -> SignedHead:
    """A head from its JSON object; raises :class:`HeadError` saying what is wrong."""
    if not isinstance(obj, dict):
        raise HeadError("not a JSON object")
    if obj.get("v", 1) != 1:
        raise HeadError(f"version {obj.get('v')!r} is not one this release reads")
    try:
        return SignedHead.model_validate(obj)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise HeadError(f"{where}: {first['msg']}") from None
