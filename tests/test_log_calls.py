"""No logging call passes ``event=``: structlog takes its first argument under that name,
so such a call raises ``TypeError`` — in a failure path, exactly when it is needed (the
door's journal fallback did, and left a phone without an answer)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gateway", "drivers", "protocols", "simulators", "bench")
#: structlog BoundLogger methods whose first argument is the event
METHODS = {
    "debug", "info", "warning", "warn", "error", "exception", "critical", "fatal", "msg", "log",
    "adebug", "ainfo", "awarning", "aerror", "aexception", "acritical", "alog",
}  # fmt: skip


def _calls_with_event_keyword(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in METHODS
            and any(k.arg == "event" for k in node.keywords)
        ):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)[:100]}")
    return found


def test_no_logging_call_passes_event_as_a_keyword() -> None:
    found = [
        hit
        for pkg in PACKAGES
        for path in sorted((ROOT / pkg).rglob("*.py"))
        for hit in _calls_with_event_keyword(path)
    ]
    assert not found, "structlog reserves `event`:\n" + "\n".join(found)
