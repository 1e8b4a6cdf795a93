"""How every part of the gateway hands an event to the journal.

Producers depend on :class:`EventSink` only; the journal (``gateway.journal``)
is the one real implementation: it assigns ``id``/``seq``/``ts``, links the hash
chain and marks the event for publishing in one transaction, then returns the
:class:`protocols.events.Envelope`.
"""

from __future__ import annotations

from typing import Protocol

from protocols.events import Envelope, EventBody

__all__ = ["EventSink"]


class EventSink(Protocol):
    async def emit(self, body: EventBody) -> Envelope:
        """Durably record ``body``; return it as published (with id, seq, ts). ``seq`` is
        0 when the journal could not take it at once and it waits in the journal's
        fallback: its id and ts are final, its seq comes when it is journaled."""
        ...
