"""The journal: every event, in order, hash-chained, with its MQTT outbox (see ``_journal``).

The names load on first use (``_journal`` brings pydantic), so that the journal's writer
process (``python -m gateway.journal._child``) starts with the standard library only.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from protocols.errors import JournalCorrupt, JournalError, JournalForeign, JournalFull

if TYPE_CHECKING:
    from ._journal import Journal, envelope_from_wire, journal_path
    from ._store import BrokenLink, Checkpoint

__all__ = [
    "BrokenLink",
    "Checkpoint",
    "Journal",
    "JournalCorrupt",
    "JournalError",
    "JournalForeign",
    "JournalFull",
    "envelope_from_wire",
    "journal_path",
]

_LAZY = {
    "BrokenLink": "._store",
    "Checkpoint": "._store",
    "Journal": "._journal",
    "envelope_from_wire": "._journal",
    "journal_path": "._journal",
}


def __getattr__(name: str) -> object:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(where, __name__), name)
