"""``lockgw site-key show [--config F] [--json | --pem | --phone]``: the site's own public keys.

The gateway makes them in ``<data_dir>/site/`` on its first start (:mod:`gateway.site_keys`).
The installer hands what this prints to the platform, which pins it: the platform then
checks the journal heads the gateway signs (``docs/audit.md``) against a key it did not
take from the hub's own word. ``--phone`` prints what a phone needs with its credential
(``{"site", "sign_key", "exchange_key", "advert_key"}``, for ``lockgw token issue
--site-keys``): the ``lockgw-unlock-v2`` exchange and the quiet BLE advertisement
(``protocols/README.md``).
"""

from __future__ import annotations

import argparse
import json

from gateway.cli._conventions import add_config_option
from gateway.config import load_config
from gateway.site_keys import b64url, load, phone_keys

__all__ = ["register"]


async def _show(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    keys = load(cfg.site.data_dir)
    if args.pem:
        print(keys.sign.public_pem, end="")
        return 0
    if args.phone:
        print(json.dumps(phone_keys(cfg.site.id, keys)))
        return 0
    if args.json:
        out = {
            "site": cfg.site.id,
            "keys": {
                k.name: {
                    "algorithm": k.algorithm,
                    "kid": k.kid,
                    "public": b64url(k.public),
                    "file": str(k.path),
                    "purpose": k.purpose,
                }
                for k in keys.keys.values()
            },
        }
        print(json.dumps(out, indent=1))
        return 0
    print(f"site {cfg.site.id} ({cfg.site.data_dir / 'site'})")
    for k in keys.keys.values():
        print(f"  {k.name}.key  {k.algorithm}  kid {k.kid}  public {b64url(k.public)}")
        print(f"    {k.purpose}")
    return 0


def register(subs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subs.add_parser("site-key", help="the site's own public keys (for the platform)")
    sub = p.add_subparsers(dest="site_key_cmd", required=True, metavar="ACTION")
    show = sub.add_parser("show", help="print the site's public keys and their ids")
    add_config_option(show)
    fmt = show.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="machine-readable output")
    fmt.add_argument("--pem", action="store_true", help="the signing key as an SPKI PEM file")
    fmt.add_argument(
        "--phone",
        action="store_true",
        help="what phones need with their credentials (JSON; lockgw token issue --site-keys)",
    )
    show.set_defaults(handler=_show)
