"""Putting an issuer's newest signed list back on the broker when the retained copy goes wrong.

Revocation lists (``lockgw/v1/org/<issuer>/revocations``) and rosters
(``lockgw/v1/org/<issuer>/rosters/<site>``) reach gateways as *retained* messages: a
gateway installed next, or one that lost its state, starts from whatever the broker
holds there. The gateway itself refuses a rollback (an older ``seq`` is ignored), but
the broker is not trusted (CONTRACT §4): a replayed older list, another issuer's list,
bytes that do not verify or an empty message clearing the topic replace the retained
copy all the same.

So when such a message arrives on an issuer's topic while this gateway holds a newer
(or any) list of that issuer, it publishes the newest list it holds as retained — the
issuer's signed bytes, unchanged, so every receiver verifies them as the issuer's — and
journals ``revocation.republished`` / ``roster.republished`` (what it found, what it
put back, how many such arrivals it answers).

**Many gateways, one topic.** An organisation's revocation topic is shared by every
home it serves. Each gateway waits a random time (up to ``delay`` s) before putting the
list back, and gives up when meanwhile the topic carries the issuer's list at least as
new as its own (another gateway was first): a replay costs a handful of republishes,
not one per home — the suppression multicast DNS and SSDP answers use. A gateway that
holds a newer list than the one put back answers that too; they converge on the newest.
A topic replaced over and over is put right at most every ``min_interval`` s.

**Not connected.** A put-back that cannot be sent (not connected, or refused by a broker
ACL) is dropped and logged: on the next connect the broker delivers the retained message
again and it is put right then. A
topic cleared while the gateway was not connected is not noticed (MQTT does not say a
topic is empty); its next list, or the next replay, is.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

import structlog

from gateway.events import EventSink
from gateway.mqtt._link import Topics
from protocols.errors import JournalError
from protocols.events import RepublishedEvent

__all__ = ["Found", "Kind", "RetainedHealer"]

log = structlog.get_logger("lockgw.mqtt")

Kind = Literal["revocation", "roster"]
Found = Literal["older", "other_issuer", "invalid", "cleared"]

#: publish ``payload`` retained on ``topic``; True once the broker acknowledged it
Publish = Callable[[str, bytes], Awaitable[bool]]
#: (kind, issuer) → (seq, signed bytes) of the newest list held, or None
Held = Callable[[Kind, str], "tuple[int, bytes] | None"]


@dataclass
class _Pending:
    kind: Kind
    iss: str
    found: Found
    found_seq: int | None
    arrivals: int
    task: asyncio.Task[None] | None = None
    #: the put-back is being sent: too late to give it up
    sending: bool = False


class RetainedHealer:
    """See the module docstring. ``async with`` owns the waiting put-backs."""

    def __init__(
        self,
        site: str,
        publish: Publish,
        sink: EventSink,
        held: Held,
        *,
        delay: float = 2.0,
        min_interval: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.site = site
        self._publish = publish
        self._sink = sink
        self._held = held
        self.delay = delay
        self.min_interval = min_interval
        self._monotonic = monotonic
        self._pending: dict[str, _Pending] = {}
        self._last: dict[str, float] = {}
        #: put-backs sent, for health and tests
        self.republished = 0

    def topic(self, kind: Kind, iss: str) -> str:
        return Topics.revocations(iss) if kind == "revocation" else Topics.rosters(self.site, iss)

    async def __aenter__(self) -> RetainedHealer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tasks = [p.task for p in self._pending.values() if p.task is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._pending.clear()

    def current(self, kind: Kind, iss: str) -> None:
        """The issuer's topic carries its list at least as new as the one held here (a
        new list, this gateway's own put-back, another gateway's): nothing to put right."""
        pending = self._pending.get(self.topic(kind, iss))
        if pending is not None and not pending.sending and pending.task is not None:
            pending.task.cancel()
            del self._pending[self.topic(kind, iss)]
            log.info("mqtt.republish_not_needed", topic=self.topic(kind, iss))

    def replaced(self, kind: Kind, iss: str, found: Found, found_seq: int | None = None) -> None:
        """Something other than the issuer's newest list arrived on its topic: put the
        newest held list back (after a random wait; see the module docstring)."""
        topic = self.topic(kind, iss)
        pending = self._pending.get(topic)
        if pending is not None:
            pending.arrivals += 1
            pending.found, pending.found_seq = found, found_seq
            return
        held = self._held(kind, iss)
        if held is None:  # nothing of this issuer's to put back (or not its signed bytes)
            log.info("mqtt.republish_nothing_held", topic=topic, found=found)
            return
        if found == "older" and found_seq is not None and found_seq >= held[0]:
            return  # not older than what is held after all
        pending = _Pending(kind, iss, found, found_seq, 1)
        last = self._last.get(topic)
        wait = random.uniform(0.0, self.delay)
        if last is not None:
            wait = max(wait, last + self.min_interval - self._monotonic())
        pending.task = asyncio.create_task(self._put_back(topic, pending, wait))
        self._pending[topic] = pending

    async def _put_back(self, topic: str, pending: _Pending, wait: float) -> None:
        try:
            await asyncio.sleep(wait)
            pending.sending = True
            held = self._held(pending.kind, pending.iss)
            if held is None:
                return
            seq, raw = held
            if not await self._publish(topic, raw):
                log.warning(
                    "mqtt.republish_deferred",
                    topic=topic,
                    detail="not sent (not connected, or refused by the broker); tried again "
                    "when the broker delivers the topic's message again",
                )
                return
            self._last[topic] = self._monotonic()
            self.republished += 1
            log.warning(
                "mqtt.republished",
                topic=topic,
                list_seq=seq,
                found=pending.found,
                found_seq=pending.found_seq,
                arrivals=pending.arrivals,
            )
            with contextlib.suppress(JournalError):
                await self._sink.emit(
                    RepublishedEvent(
                        type=(
                            "revocation.republished"
                            if pending.kind == "revocation"
                            else "roster.republished"
                        ),
                        iss=pending.iss,
                        list_seq=seq,
                        topic=topic,
                        found=pending.found,
                        found_seq=pending.found_seq,
                        arrivals=pending.arrivals,
                    )
                )
        except Exception as exc:  # never a silent end: say so, the next arrival tries again
            log.error("mqtt.republish_failed", topic=topic, error=repr(exc), exc_info=True)
        finally:
            if self._pending.get(topic) is pending:
                del self._pending[topic]
