"""What every ``lockgw`` command shares: where the config is by default, the version.

``--config`` defaults to ``$LOCKGW_CONFIG``, else ``/etc/lockgw/lockgw.toml`` (where the
Debian package puts it), so on an installed hub ``lockgw health`` needs no arguments.
"""

from __future__ import annotations

import argparse
import os
from importlib.metadata import PackageNotFoundError, version

__all__ = ["DEFAULT_CONFIG", "add_config_option", "default_config", "package_version"]

DEFAULT_CONFIG = "/etc/lockgw/lockgw.toml"


def default_config() -> str:
    return os.environ.get("LOCKGW_CONFIG") or DEFAULT_CONFIG


def add_config_option(p: argparse.ArgumentParser, *, default: bool = True) -> None:
    """``--config FILE``; ``default=False`` when another option can stand in for it (the
    command then calls :func:`default_config` itself when neither is given)."""
    p.add_argument(
        "--config",
        metavar="FILE",
        default=default_config() if default else None,
        help=f"the TOML config file (default: $LOCKGW_CONFIG, else {DEFAULT_CONFIG})",
    )


def package_version() -> str:
    try:
        return version("lockgw")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"
