"""The site's own keys (issue 18 item 2, shared with issue 17): ``<data_dir>/site/sign.key``
is made 0600 on the gateway's first start and journaled (``site.key_created``), its public
half is in the retained inventory and ``lockgw site-key show`` prints it; a restart keeps
it; a damaged one is moved aside and made anew (never a stop), and said."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from gateway.site_keys import INVENTORY_ID, load, load_or_create
from protocols.errors import KeyFileError
from simulators.broker import MosquittoBroker
from simulators.platform import Platform
from simulators.site import SimSite


def _site_entry(platform: Platform) -> dict[str, str] | None:
    for item in platform.inventory or []:
        if item.get("id") == INVENTORY_ID:
            return item
    return None


@pytest.mark.slow
async def test_first_start_makes_the_key_journals_it_publishes_it_and_a_restart_keeps_it(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    async with SimSite(tmp_path) as site:
        site.write_config(broker.url)
        data = tmp_path / "data"
        rc, out = await site.cli("site-key", "show", "--config", str(site.config))
        assert rc == 1 and "sign.key: not found" in out and "lockgw run" in out, out

        async with Platform(broker.url, site.site) as platform:
            await site.start_gateway()
            await platform.wait_until(lambda: _site_entry(platform) is not None, timeout=20)
            entry = _site_entry(platform)
        assert entry is not None and entry["kind"] == "site"
        key = data / "site" / "sign.key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700

        rc, out = await site.cli("site-key", "show", "--config", str(site.config), "--json")
        assert rc == 0, out
        shown = json.loads(out)["keys"]["sign"]
        assert shown["algorithm"] == "Ed25519"
        assert (shown["public"], shown["kid"]) == (entry["sign_key"], entry["sign_kid"])
        rc, pem = await site.cli("site-key", "show", "--config", str(site.config), "--pem")
        assert rc == 0 and pem.startswith("-----BEGIN PUBLIC KEY-----"), pem

        await site.stop("gateway")
        await site.start_gateway()
        await site.stop("gateway")
        rc, out = await site.cli("audit", "show", "--all", "--json", "--config", str(site.config))
        assert rc == 0, out
        created = [
            e for e in json.loads(out) if e["type"] == "site.key_created" and e["key"] == "sign"
        ]
        assert len(created) == 1, created  # the restart used the same key
        assert (created[0]["key"], created[0]["public"]) == ("sign", shown["public"])
        assert load(data).sign.kid == shown["kid"]

        # damaged: moved aside and made anew, journaled (test_private_exchange has the rest)
        key.write_bytes(b"-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n")
        keys = load_or_create(data)
        assert [k.name for k in keys.created] == ["sign"]
        assert [r.name for r in keys.replaced] == ["sign"]
        assert keys.replaced[0].kept_as.read_bytes().count(b"garbage") == 1
        assert keys.sign.kid != shown["kid"]


def test_a_key_readable_by_others_or_of_another_kind_is_refused(tmp_path: Path) -> None:
    keys = load_or_create(tmp_path)
    assert [k.name for k in keys.created] == ["sign", "exchange"]
    again = load_or_create(tmp_path)
    assert again.created == [] and again.sign.public == keys.sign.public
    path = tmp_path / "site" / "sign.key"
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="readable by others"):
        load(tmp_path)  # what lockgw site-key show reads
    fixed = load_or_create(tmp_path)  # what lockgw run does: 0600 again, the same key
    assert fixed.mode_fixed == [path] and fixed.sign.public == keys.sign.public
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    other = X25519PrivateKey.generate()
    path.write_bytes(other.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    with pytest.raises(KeyFileError, match="not an Ed25519 key"):
        load(tmp_path)
