"""The quiet BLE advertisement of the phone link (issue 17 item 2; ``protocols/README.md``,
"What a scanner sees").

The hub advertises no name, no manufacturer data and no fixed UUID. What it does
advertise is one 128-bit service UUID that looks random and changes every
:data:`ROTATION_S` seconds; its GATT service and characteristics have UUIDs that look
random too and are the same for one site only. Both are derived from the site's
**advertising key**, a 32-byte secret the issuer gives each phone in its credential bundle
(``"advert_key"``): a phone that holds a credential for the site computes what to look
for; a passer-by sees noise.

::

    service  = uuid4(HMAC-SHA256(advert_key, "lockgw-advert-v1 service")[:16])
    rx       = uuid4(HMAC-SHA256(advert_key, "lockgw-advert-v1 rx")[:16])
    tx       = uuid4(HMAC-SHA256(advert_key, "lockgw-advert-v1 tx")[:16])
    epoch    = floor(unix time / ROTATION_S)
    advert   = uuid4(HMAC-SHA256(advert_key, "lockgw-advert-v1 advert" ‖ epoch as u64)[:16])

``uuid4`` sets the version (4) and variant bits of RFC 9562, as any random UUID has.
A phone accepts the epochs ``epoch - SLACK .. epoch + SLACK`` (clocks that differ by up
to ±30 minutes). The gateway derives ``advert_key`` from its exchange key
(:func:`derive_advert_key`), so a new exchange key (a damaged one replaced) means new
bundles, as it does for the exchange itself. Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Final
from uuid import UUID

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from protocols.phone import PHONE_SERVICE_UUID, RX_CHAR_UUID, TX_CHAR_UUID

__all__ = [
    "ADVERT_KEY_LEN",
    "LEGACY_NAME",
    "LEGACY_UUIDS",
    "ROTATION_S",
    "SLACK",
    "SiteUuids",
    "advert_epoch",
    "advert_uuid",
    "derive_advert_key",
    "expected_adverts",
    "site_uuids",
]

#: seconds one advertised UUID lasts
ROTATION_S: Final = 900
#: epochs either side of a phone's own that it accepts (clock difference)
SLACK: Final = 2
#: bytes of the advertising key
ADVERT_KEY_LEN: Final = 32
_LABEL: Final = b"lockgw-advert-v1 "


def _uuid(material: bytes) -> str:
    b = bytearray(material[:16])
    b[6] = (b[6] & 0x0F) | 0x40  # version 4
    b[8] = (b[8] & 0x3F) | 0x80  # RFC 9562 variant
    return str(UUID(bytes=bytes(b)))


def _check(key: bytes) -> bytes:
    if len(key) != ADVERT_KEY_LEN:
        raise ValueError(f"an advertising key is {ADVERT_KEY_LEN} bytes, not {len(key)}")
    return key


def _mac(key: bytes, label: bytes) -> bytes:
    return hmac.new(_check(key), _LABEL + label, hashlib.sha256).digest()


def derive_advert_key(exchange_private: bytes, site: str) -> bytes:
    """The site's advertising key from the raw X25519 exchange private key (HKDF-SHA256,
    info ``"lockgw-advert-v1 key " ‖ site``): one-way, so holding it reveals nothing of
    the exchange key."""
    return HKDF(
        algorithm=hashes.SHA256(), length=ADVERT_KEY_LEN, salt=None,
        info=_LABEL + b"key " + site.encode(),
    ).derive(exchange_private)


@dataclass(frozen=True, slots=True)
class SiteUuids:
    """The GATT service and characteristic UUIDs of one site's phone link."""

    service: str
    rx: str
    tx: str


#: the v1 phone link's fixed UUIDs ("lockgw" in hex) and name, served only while
#: ``[phone_link] accept_v1`` lets v1 phones in
LEGACY_UUIDS: Final = SiteUuids(PHONE_SERVICE_UUID, RX_CHAR_UUID, TX_CHAR_UUID)
LEGACY_NAME: Final = "lockgw"


def site_uuids(key: bytes) -> SiteUuids:
    return SiteUuids(
        _uuid(_mac(key, b"service")), _uuid(_mac(key, b"rx")), _uuid(_mac(key, b"tx"))
    )


def advert_epoch(now: float) -> int:
    return int(now // ROTATION_S)


def advert_uuid(key: bytes, epoch: int) -> str:
    """The service UUID advertised during ``epoch``."""
    return _uuid(_mac(key, b"advert" + (epoch % 2**64).to_bytes(8, "big")))


def expected_adverts(key: bytes, now: float, slack: int = SLACK) -> frozenset[str]:
    """What a phone whose clock says ``now`` recognises as this site's advertisement."""
    epoch = advert_epoch(now)
    return frozenset(advert_uuid(key, e) for e in range(epoch - slack, epoch + slack + 1))
