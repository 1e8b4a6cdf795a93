"""``lockgw health --config F [--json]``: exit 0 with nothing wrong, 1 with every reason
(``{code, level, text}``, the worst level first in the summary line)."""

from __future__ import annotations

import argparse
from typing import Any

from gateway.cli._conventions import add_config_option
from gateway.config import load_config
from gateway.health import as_json, ask_daemon, evaluate, read_snapshot, summary
from protocols.i18n import LANGUAGES, language

__all__ = ["register"]


async def _health(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    data_dir = cfg.site.data_dir
    # the running daemon's present state first; the file only when nothing answers
    snap = await ask_daemon(data_dir)
    live = snap is not None
    if snap is None:
        snap = read_snapshot(data_dir)
    if args.json:  # for machines: English unless --lang asks otherwise
        reasons = evaluate(data_dir, snap, lang=language(args.lang or "en"), live=live)
        print(as_json(reasons, snap))
    else:
        lang = language(args.lang or cfg.site.language)
        reasons = evaluate(data_dir, snap, lang=lang, live=live)
        print(summary(reasons, snap, lang))
    return 0 if not reasons else 1


def register(subs: Any) -> None:
    p = subs.add_parser("health", help="health summary for monitoring; exit 0 healthy, 1 not")
    add_config_option(p)
    p.add_argument("--json", action="store_true", help="machine-readable output (English)")
    p.add_argument(
        "--lang", choices=LANGUAGES, default=None, help="nl or en (default: [site] language)"
    )
    p.set_defaults(handler=_health)
