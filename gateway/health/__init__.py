"""Health: what the daemon knows about itself, for monitoring and for ``lockgw health``.

From its very start the daemon keeps a :class:`Snapshot` of its present state — facts,
no judgement — in ``<data_dir>/health.json`` (rewritten atomically every few seconds;
``phase = "starting"`` until every part is up), answers it on the Unix socket
``<data_dir>/health.sock``, and, with ``[health] metrics``, serves Prometheus text on a
loopback address. :func:`evaluate` judges a snapshot: a list of
:class:`~protocols.health.HealthReason` ``{code, level, text, subject}`` in the chosen
language, the same everywhere (``lockgw health``, ``--json``, metrics, the retained
``status`` and the ``health.warning`` / ``health.cleared`` events).

``lockgw health`` asks the daemon over the socket first (its present state, also when
the disk is full and the file cannot be rewritten); when nothing answers it reads the
file and says what that means: left over from a process that is gone (not running), or
too old with the process still there (stuck: the present state cannot be known). Exit
0 when there is no reason at all, 1 otherwise.

Adding a condition: a field on :class:`Snapshot` (filled in ``Gateway._snapshot``) and
a check in ``gateway/health/_reasons.py`` (``CHECKS``), its code and what to do in
docs/install.md, its words in the catalogue (``scripts/i18n``).
"""

from gateway.health._reasons import MAX_BACKLOG, evaluate
from gateway.health._server import HealthServer, as_json, ask_daemon, summary
from gateway.health._snapshot import (
    SNAPSHOT_NAME,
    SOCKET_NAME,
    DeviceHealth,
    HeldExpiry,
    IssuerHealth,
    JournalRestartNotice,
    PhoneBleHealth,
    PhonePressure,
    Snapshot,
    StateNotice,
    pid_alive,
    read_snapshot,
    running_daemon,
)

__all__ = [
    "MAX_BACKLOG",
    "SNAPSHOT_NAME",
    "SOCKET_NAME",
    "DeviceHealth",
    "HealthServer",
    "HeldExpiry",
    "IssuerHealth",
    "JournalRestartNotice",
    "PhoneBleHealth",
    "PhonePressure",
    "Snapshot",
    "StateNotice",
    "as_json",
    "ask_daemon",
    "evaluate",
    "pid_alive",
    "read_snapshot",
    "running_daemon",
    "summary",
]
