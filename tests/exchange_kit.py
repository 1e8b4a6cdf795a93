"""Site keys for tests of the exchange: the gateway's side and the phone's side of one site."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from protocols.exchange import GatewayExchange, PhoneExchange


def site_pair(site: str = "site-t", *, accept_v1: bool = False) -> tuple[GatewayExchange, PhoneExchange]:
    sign, xkey = Ed25519PrivateKey.generate(), X25519PrivateKey.generate()
    gw = GatewayExchange(site, sign, xkey, accept_v1=accept_v1)
    phone = PhoneExchange(
        site,
        sign.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
        xkey.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
    )
    return gw, phone
