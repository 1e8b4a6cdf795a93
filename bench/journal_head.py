"""What the journal's safety net costs a door that works: the head file and the start-up check.

The user situation: a carer unlocks, and the phone waits for the journal's durable
commit before it hears ``granted``. Since issue 15 the writer also keeps
``journal.head`` (seq and link of the newest commit, so that a deleted journal is
noticed) and checks the whole journal when it starts (so that a damaged one is moved
aside). The fallback file (``journal.spill``) is not touched while the journal writes.

Three figures, all in one run on one disk:

1. **One commit, with and without the head file**, interleaved in blocks of 50: the
   writer's round for one access event (``Store.round``, a durable SQLite commit) alone,
   and the same followed by ``Store.write_head()`` as the writer process does it (after
   it has answered). The phone waits for the round only; the head write could only
   delay the *next* round by its own duration.
2. **The head write alone** (``pwrite`` of 512 bytes, no fsync), per call.
3. **The start-up check** (``_recover.examine``: chain walk + ``quick_check``) of a
   journal of 10,000 and 50,000 access events: the time a (re)started writer spends
   before it takes events (meanwhile they wait in the fallback file).

    .venv/bin/python bench/journal_head.py [--n 2000] [--dir DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.journal._head import head_path  # noqa: E402
from gateway.journal._recover import examine  # noqa: E402
from gateway.journal._store import Store  # noqa: E402
from protocols.events import AccessDecisionEvent, Channel  # noqa: E402

SITE = "bench-site"
BODY = AccessDecisionEvent(
    type="access.granted", door="front", device="front-lock", iss="org-thuiszorg-west",
    sub="c-55d2", role="verzorgende", purpose="planned", action="unlock",
    token_id="9f" * 8, channel=Channel.PHONE, reason="ok",
).model_dump_json()  # fmt: skip


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def line(name: str, values: list[float], unit: str = "ms") -> str:
    scale = 1000.0 if unit == "ms" else 1_000_000.0
    v = [x * scale for x in values]
    return (
        f"{name:<34} n={len(v):>5}  p50 {statistics.median(v):8.3f} {unit}  "
        f"p99 {pct(v, 0.99):8.3f} {unit}  max {max(v):8.3f} {unit}"
    )


def commits(directory: Path, n: int) -> None:
    store = Store(directory / "journal.sqlite3", SITE, max_bytes=None)
    store.open()
    plain: list[float] = []
    with_head: list[float] = []
    head_only: list[float] = []
    try:
        for block in range(n // 50):
            for _ in range(50):
                t0 = time.perf_counter()
                r = store.round([("a", "access.granted", "front", BODY, time.time_ns())])
                t1 = time.perf_counter()
                assert r.error is None, r.error
                if block % 2:
                    store.write_head()
                    t2 = time.perf_counter()
                    with_head.append(t2 - t0)
                    head_only.append(t2 - t1)
                else:
                    plain.append(t1 - t0)
    finally:
        store.close()
    print(line("commit (round) alone", plain))
    print(line("commit + head file write", with_head))
    print(line("head file write alone", head_only, "us"))


def startup(directory: Path, events: int) -> None:
    path = directory / f"start-{events}" / "journal.sqlite3"
    store = Store(path, SITE, max_bytes=None)
    store.open()
    try:
        now = time.time_ns()
        for _ in range(events // 500):
            store.round([("a", "access.granted", "front", BODY, now)] * 500)
        store.write_head()
    finally:
        store.close()
    runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        plan = examine(path, SITE, head_path(path))
        runs.append(time.perf_counter() - t0)
        assert plan is None, plan
    mb = path.stat().st_size / 1e6
    print(f"start-up check, {events:>6} events ({mb:5.1f} MB): "
          f"{', '.join(f'{r * 1000:.0f}' for r in runs)} ms")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=2000, help="commits (half with the head file)")
    ap.add_argument("--dir", help="where the journals go (default: a temporary directory)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        commits(Path(tmp), args.n)
        for events in (10_000, 50_000):
            startup(Path(tmp), events)


if __name__ == "__main__":
    main()
