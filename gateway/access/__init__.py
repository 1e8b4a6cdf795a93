"""The access decision and the state it keeps (``<data_dir>/access/``).

The door service builds an :class:`AccessRequest` from the phone exchange, asks
:meth:`AccessController.decide` and journals the :class:`Decision`. Signed commands,
revocation lists and held tokens from MQTT go through the same controller.
"""

from gateway.access.clock import ClockStatus
from gateway.access.controller import AccessController
from gateway.access.models import AccessRequest, Decision, RevocationOutcome, RevocationStatus

__all__ = [
    "AccessController",
    "AccessRequest",
    "ClockStatus",
    "Decision",
    "RevocationOutcome",
    "RevocationStatus",
]
