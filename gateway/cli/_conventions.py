"""What every ``lockgw`` command shares: where the config is by default, the version.

``--config`` defaults to ``$LOCKGW_CONFIG``, else ``/etc/lockgw/lockgw.toml`` (where the
Debian package puts it), so on an installed hub ``lockgw health`` needs no arguments.
"""

from __future__ import annotations

import argparse
import os
from importlib.metadata import PackageNotFoundError, version

from protocols.errors import ConfigError

__all__ = [
    "DEFAULT_CONFIG",
    "add_config_option",
    "config_hint",
    "default_config",
    "package_version",
]

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


def config_hint(args: argparse.Namespace, exc: Exception) -> str:
    """For an error about a config nobody named: how to name one."""
    given = getattr(args, "config", None)
    missing = not os.path.exists(default_config())
    if isinstance(exc, ConfigError) and given in (None, default_config()) and missing:
        return " (no --config given: give --config FILE or set LOCKGW_CONFIG)"
    return ""


def package_version() -> str:
    try:
        return version("lockgw")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"
