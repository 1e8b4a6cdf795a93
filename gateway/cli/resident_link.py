"""``lockgw resident-link``: a one-time link (and QR code) to the resident's page.

::

    lockgw resident-link --config /etc/lockgw/lockgw.toml [--valid 24h] [--label tablet]
    lockgw resident-link --config /etc/lockgw/lockgw.toml --revoke-all

The link is valid once, for ``--valid`` (24 hours by default); opening it on the
resident's tablet or a family member's phone and pressing "Log in" keeps that device
logged in for ``[web] session_days``. ``--revoke-all`` logs every device out and
withdraws every unused link. The running gateway sees both at once (the state is
shared in ``<data_dir>/web/``, mode 0600).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from typing import Any

from gateway.cli._conventions import add_config_option
from gateway.cli.token import UsageError, parse_duration
from gateway.config import Config, load_config
from gateway.web.sessions import ResidentAccess

__all__ = ["page_url", "register"]


def page_url(cfg: Config) -> str:
    """Where a browser on the home network reaches the page."""
    web = cfg.web
    if web.public_url:
        return web.public_url.rstrip("/")
    scheme = "https" if web.cert_file is not None else "http"
    host = web.address
    if host in ("0.0.0.0", "::", ""):
        host = f"{socket.gethostname()}.local"
    elif ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{web.port}"


def _qr(text: str) -> str:
    import io

    import segno

    out = io.StringIO()
    segno.make(text, error="m").terminal(out=out, compact=True, border=2)
    return out.getvalue()


async def _link(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    access = ResidentAccess(cfg.site.data_dir)
    if args.revoke_all:
        sessions, links = await asyncio.to_thread(access.revoke_all)
        print(
            f"Logged out {sessions} device(s) and withdrew {links} unused link(s). "
            "Make a new link with: lockgw resident-link --config " + args.config
        )
        return 0
    try:
        valid = parse_duration(args.valid)
    except UsageError as exc:
        print(f"lockgw resident-link: --valid: {exc}", file=sys.stderr)
        return 2
    if not cfg.web.enabled:
        print(
            "lockgw resident-link: the resident's page is off in this config; set "
            "[web] enabled = true (with address and port) and restart lockgw",
            file=sys.stderr,
        )
        return 1
    secret = await asyncio.to_thread(access.new_link, float(valid), args.label or "")
    url = f"{page_url(cfg)}/login?t={secret}"
    hours = valid / 3600
    print(url)
    if not args.no_qr:
        print(_qr(url), end="")
    print(
        f"Valid once, for {hours:g} hours. Open it on the resident's tablet or a family "
        "member's phone (on the home network) and press Log in.",
        file=sys.stderr,
    )
    return 0


def register(subs: Any) -> None:
    p = subs.add_parser(
        "resident-link", help="a one-time link and QR code to the resident's page (read only)"
    )
    add_config_option(p)
    p.add_argument("--valid", default="24h", help="how long the link can be used: 24h, 7d, 30m")
    p.add_argument("--label", default=None, help="a note for yourself (e.g. tablet, daughter)")
    p.add_argument("--no-qr", action="store_true", help="print the link only")
    p.add_argument(
        "--revoke-all", action="store_true", help="log every device out; withdraw unused links"
    )
    p.set_defaults(handler=_link)
