"""``lockgw keys new --out DIR --name N``."""

from __future__ import annotations

import argparse

from gateway.keys import write_key_pair
from protocols.keys import kid_of


def register(subs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = subs.add_parser("keys", help="create Ed25519 key pairs")
    ksubs = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    new = ksubs.add_parser("new", help="new key pair: N.key (PKCS#8 PEM, 0600) and N.pub")
    new.add_argument("--out", required=True, help="directory to write into")
    new.add_argument("--name", required=True, help="base name of the two files")
    new.set_defaults(handler=_new)


async def _new(args: argparse.Namespace) -> int:
    from gateway.keys import load_public_key

    key_path, pub_path = write_key_pair(args.out, args.name)
    kid = kid_of(load_public_key(pub_path)).hex()
    print(f"wrote {key_path} (private, mode 0600) and {pub_path} (public); kid {kid}")
    return 0
