"""structlog set-up: JSON lines to stdout when not a TTY, console rendering on a TTY."""

from __future__ import annotations

import logging
import sys

import structlog

__all__ = ["configure_logging", "redact"]


def redact(secret: bytes | str, keep: int = 4) -> str:
    """A short, non-reversible handle for a token, key or nonce: never log them in full."""
    text = secret.hex() if isinstance(secret, bytes) else secret
    return text[:keep] + "…" if len(text) > keep else "…"


def configure_logging(level: str = "info", *, json: bool | None = None) -> None:
    if json is None:
        json = not sys.stdout.isatty()
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=False,
    )
