"""Logging: one structlog pipeline for our lines and every library's, the Linux way.

- JSON lines on stdout when it is not a terminal, console rendering on a terminal.
- Under systemd, when stdout *is* the journal (``$JOURNAL_STREAM`` names its device and
  inode, sd-daemon(3)), each line starts with its syslog priority, ``<3>`` for errors
  ... ``<7>`` for debug, so ``journalctl -p warning -u lockgw`` filters by level (systemd
  strips the prefix: ``SyslogLevelPrefix=yes`` is the default).
- The standard library's logging — bleak, dbus-fast, paho, asyncio —
  goes through the same processors and renderer (``logger`` names the library), instead
  of Python's bare last-resort handler on stderr.
- Libraries do not know what is secret: their string fields lose long hex and base64
  runs and ``bytes`` reprs (a GATT frame, a token, a nonce) before they are written. Our
  own code never logs secrets in the first place (:func:`redact`).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

__all__ = ["configure_logging", "journald_priority", "redact", "stdout_is_journal"]

#: sd-daemon(3) / syslog(3) priorities of structlog's level names
_PRIORITY = {
    "critical": 2,
    "exception": 3,
    "error": 3,
    "warning": 4,
    "warn": 4,
    "notice": 5,
    "info": 6,
    "debug": 7,
}

#: what a secret looks like in a library's free text: a bytes repr, or a long run of hex or
#: base64 (a 16-byte nonce is 32 hex digits, 22 base64 characters)
_SECRETISH = re.compile(
    r"""b'(?:[^'\\]|\\.){16,}'|b"(?:[^"\\]|\\.){16,}"|\b[0-9A-Fa-f]{32,}\b|[A-Za-z0-9+/_-]{24,}={0,2}"""
)
#: the handler this module puts on the root logger (replaced, never stacked)
_HANDLER_MARK = "_lockgw_handler"


def redact(secret: bytes | str, keep: int = 4) -> str:
    """A short, non-reversible handle for a token, key or nonce: never log them in full."""
    text = secret.hex() if isinstance(secret, bytes) else secret
    return text[:keep] + "…" if len(text) > keep else "…"


def _mask(text: str) -> str:
    def hide(m: re.Match[str]) -> str:
        s = m.group(0)
        base64ish = not s.startswith(("b'", 'b"')) and not re.fullmatch(r"[0-9A-Fa-f]+", s)
        # a long word, a dotted name or a path is not a secret: a base64 run counts only
        # with digits, capitals and small letters all in it (keys, tokens, nonces do)
        if base64ish and not (
            re.search(r"\d", s) and re.search(r"[a-z]", s) and re.search(r"[A-Z]", s)
        ):
            return s
        return f"<{len(s)} chars hidden>"

    return _SECRETISH.sub(hide, text)


def _mask_foreign(
    _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """For records from other libraries: hide whatever looks like key material."""
    for k, v in list(event_dict.items()):
        if isinstance(v, str):
            event_dict[k] = _mask(v)
        elif isinstance(v, bytes | bytearray):
            event_dict[k] = f"<{len(v)} bytes hidden>"
    return event_dict


def stdout_is_journal(stream: TextIO | None = None) -> bool:
    """True when ``stream`` (stdout) is the systemd journal's stream for this service:
    ``$JOURNAL_STREAM`` is ``<device>:<inode>`` of it (sd-daemon(3), systemd.exec(5)).
    A redirected stdout (``lockgw run > file``) has another inode, so no prefixes."""
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat((stream or sys.stdout).fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def journald_priority(renderer: Any) -> Any:
    """Wrap a renderer: prefix each line with ``<N>``, its level's syslog priority."""

    def render(logger: Any, name: str, event_dict: MutableMapping[str, Any]) -> str:
        prio = _PRIORITY.get(str(event_dict.get("level", name)).lower(), 6)
        return f"<{prio}>{renderer(logger, name, event_dict)}"

    return render


def configure_logging(
    level: str = "info", *, json: bool | None = None, stream: TextIO | None = None
) -> None:
    """Our structlog loggers and the standard library's, one format, on ``stream``
    (stdout). Calling it again replaces the earlier set-up."""
    out = stream or sys.stdout
    if json is None:
        json = not out.isatty()
    journal = stdout_is_journal(out)
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    if journal:
        renderer = journald_priority(renderer)
    numeric = logging.getLevelName(level.upper())
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            *shared,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ExtraAdder(),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _mask_foreign,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
