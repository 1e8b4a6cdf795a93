"""``lockgw health --config F [--json]``: exit 0 healthy, 1 with a summary of every problem."""

from __future__ import annotations

import argparse
from typing import Any

from gateway.cli._conventions import add_config_option
from gateway.config import load_config
from gateway.health import as_json, evaluate, read_snapshot, summary
from protocols.i18n import LANGUAGES, language

__all__ = ["register"]


async def _health(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    snap = read_snapshot(cfg.site.data_dir)
    if args.json:  # for machines: always English
        problems = evaluate(cfg.site.data_dir, snap)
        print(as_json(problems, snap))
    else:
        lang = language(args.lang or cfg.site.language)
        problems = evaluate(cfg.site.data_dir, snap, lang=lang)
        print(summary(problems, snap, lang))
    return 0 if not problems else 1


def register(subs: Any) -> None:
    p = subs.add_parser("health", help="health summary for monitoring; exit 0 healthy, 1 not")
    add_config_option(p)
    p.add_argument("--json", action="store_true", help="machine-readable output (English)")
    p.add_argument(
        "--lang", choices=LANGUAGES, default=None, help="nl or en (default: [site] language)"
    )
    p.set_defaults(handler=_health)
