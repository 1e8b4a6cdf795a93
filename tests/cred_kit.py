"""Test kit for credentials: a site on disk (keys, config), a settable clock, phones."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.access import AccessController, AccessRequest, Decision
from gateway.config import Config, load_config
from gateway.keys import load_private_key, write_key_pair
from protocols.proof import sign_proof
from protocols.token import issue_token
from protocols.windows import Window

SITE = "site-3f9c2a7d"
ORG = "org-thuiszorg-west"
RESIDENT = "resident-mantelzorg"
SIGNER = "alarmcentrale"
#: Tuesday 2026-11-24 09:00 Europe/Amsterdam (08:00 UTC)
T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC).timestamp()


class FakeClock:
    """Wall clock and monotonic clock a test moves by hand."""

    def __init__(self, t: float = T0) -> None:
        self.t = t
        self.mono = 1000.0

    def time(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.t += seconds
        self.mono += seconds


@dataclass
class Site:
    root: Path
    keys: dict[str, Ed25519PrivateKey]
    config_path: Path
    clock: FakeClock = field(default_factory=FakeClock)

    @property
    def config(self) -> Config:
        return load_config(self.config_path)

    def controller(self) -> AccessController:
        return AccessController(self.config, clock=self.clock.time, monotonic=self.clock.monotonic)

    def token(self, phone: Ed25519PrivateKey | None = None, **kw: Any) -> bytes:
        args: dict[str, Any] = {
            "iss": ORG,
            "sub": "carer-17",
            "aud": SITE,
            "holder_key": (phone or self.keys["phone"]).public_key(),
            "doors": ["front"],
            "role": "verzorgende",
            "purposes": ["planned"],
            "exp": int(self.clock.t) + 3600,
            "iat": int(self.clock.t),
        }
        signer = kw.pop("key", None)
        args.update(kw)
        if signer is None:
            signer = self.keys.get(args["iss"], self.keys[ORG])
        return issue_token(signer, **args)

    def write_config(
        self, extra_access: str = "", issuer_extra: str = "", site_extra: str = ""
    ) -> None:
        self.config_path.write_text(
            textwrap.dedent(
                f"""
                [site]
                id = "{SITE}"
                timezone = "Europe/Amsterdam"
                data_dir = "data"
                {site_extra}

                [access]
                {extra_access}

                [[issuers]]
                id = "{ORG}"
                public_key = "keys/{ORG}.pub"
                roles = ["wijkverpleegkundige", "verzorgende", "alarmopvolger"]
                purposes = ["planned", "emergency"]
                doors = ["front", "back"]
                {issuer_extra}

                [[issuers]]
                id = "{RESIDENT}"
                public_key = "keys/{RESIDENT}.pub"
                roles = ["mantelzorger"]
                purposes = ["planned"]
                doors = ["front"]

                [[command_signers]]
                id = "{SIGNER}"
                public_key = "keys/{SIGNER}.pub"
                commands = ["unlock", "open", "alarm"]
                """
            )
        )


def make_site(root: Path) -> Site:
    keys: dict[str, Ed25519PrivateKey] = {}
    for name in (ORG, RESIDENT, SIGNER, "phone", "other-phone", "stranger"):
        key_path, _ = write_key_pair(root / "keys", name)
        keys[name] = load_private_key(key_path)
    site = Site(root=root, keys=keys, config_path=root / "lockgw.toml")
    site.write_config()
    return site


def attempt(
    ctl: AccessController,
    token: bytes | None,
    phone: Ed25519PrivateKey,
    *,
    door: str = "front",
    action: str = "unlock",
    peer: str = "aa:bb",
    token_ref: bytes | None = None,
    proof_door: str | None = None,
) -> Decision:
    nonce = ctl.new_challenge()
    proof = sign_proof(phone, nonce, ctl.site, proof_door or door, action)
    return ctl.decide(
        AccessRequest(
            door=door,
            action=action,
            nonce=nonce,
            proof=proof,
            token=token,
            token_ref=token_ref,
            peer=peer,
        )
    )


def windows(*triples: Iterable[int]) -> list[Window]:
    return [Window(*t) for t in triples]
