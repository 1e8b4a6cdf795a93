"""The journal: every event, in order, hash-chained, with its MQTT outbox (see ``_journal``)."""

from protocols.errors import JournalCorrupt, JournalError, JournalFull

from ._chain import envelope_from_wire
from ._journal import Journal, journal_path
from ._store import BrokenLink, Checkpoint

__all__ = [
    "BrokenLink",
    "Checkpoint",
    "Journal",
    "JournalCorrupt",
    "JournalError",
    "JournalFull",
    "envelope_from_wire",
    "journal_path",
]
