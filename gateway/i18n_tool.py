"""The translation catalogue's tool for developers: extract, merge, compile, check (Babel).

``scripts/i18n`` runs ``python -m gateway.i18n_tool``: every string marked in the code
and the page templates (``babel.cfg``) goes into ``protocols/locale/lockgw.pot``, is
merged into each language's ``.po``, and each ``.po`` is compiled into the ``.mo`` the
program reads. :func:`problems` is what ``tests/test_i18n.py`` checks. Needs Babel
(the ``test`` extra); nothing at run time imports this module.

The compiled ``.mo`` files are committed rather than built at install time: the
package then works from a clean clone (an editable install runs no build step) and
from a wheel alike, and a wheel build needs no Babel.
"""

from __future__ import annotations

import io
import sys
from datetime import UTC, datetime
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo, write_mo
from babel.messages.pofile import read_po, write_po

from protocols.i18n import DOMAIN, LANGUAGES, LOCALE_DIR

__all__ = ["compile_mo", "extract", "main", "problems"]

ROOT = Path(__file__).resolve().parent.parent
POT = LOCALE_DIR / f"{DOMAIN}.pot"
#: fixed, so that the files change only when their messages do
_DATE = datetime(2026, 1, 1, tzinfo=UTC)
_HEADER = """\
# The lockgw message catalogue ({what}).
# Made by scripts/i18n from the strings marked in the code and the page templates.
#"""


def _catalog(locale: str | None = None) -> Catalog:
    return Catalog(
        locale=locale,
        domain=DOMAIN,
        project="lockgw",
        version="1",
        copyright_holder="the lockgw authors",
        msgid_bugs_address="",
        creation_date=_DATE,
        revision_date=_DATE,
        charset="utf-8",
        header_comment=_HEADER.format(what=f"{locale}: translations" if locale else "template"),
        fuzzy=False,
    )


def _po(lang: str) -> Path:
    return LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po"


def _method_map() -> list[tuple[str, str]]:
    """babel.cfg's sections as (pattern, method)."""
    out = []
    for raw in (ROOT / "babel.cfg").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]") and ":" in line:
            method, pattern = line[1:-1].split(":", 1)
            out.append((pattern.strip(), method.strip()))
    return out


def extract() -> Catalog:
    """Every marked string of the code and templates, as a template catalogue."""
    cat = _catalog()
    options: dict[str, dict[str, str]] = {pattern: {} for pattern, _ in _method_map()}
    for filename, lineno, message, comments, context in extract_from_dir(
        str(ROOT), _method_map(), options, strip_comment_tags=True
    ):
        if "/tests/" in f"/{filename}":
            continue
        cat.add(message, None, [(filename, lineno)], auto_comments=comments, context=context)
    return cat


def _read(path: Path) -> Catalog:
    with path.open("rb") as f:
        return read_po(f)


def _po_bytes(cat: Catalog) -> bytes:
    buf = io.BytesIO()
    write_po(buf, cat, no_location=True, sort_output=True, width=100)
    return buf.getvalue()


def compile_mo(po: Path) -> bytes:
    """The ``.mo`` bytes of a ``.po`` file (untranslated and fuzzy entries left out)."""
    buf = io.BytesIO()
    write_mo(buf, _read(po), use_fuzzy=False)
    return buf.getvalue()


def _messages(mo: bytes) -> dict[object, object]:
    """What a compiled catalogue translates (its header aside, which names the Babel
    version that wrote it)."""
    return {
        (tuple(m.id) if isinstance(m.id, list | tuple) else m.id, m.context): (
            tuple(m.string) if isinstance(m.string, list | tuple) else m.string
        )
        for m in read_mo(io.BytesIO(mo))
        if m.id
    }


def problems() -> list[str]:
    """What is out of date or untranslated; empty when all is well."""
    out: list[str] = []
    wanted = {(m.id if isinstance(m.id, str) else m.id[0], m.context) for m in extract() if m.id}
    for lang in LANGUAGES:
        if lang == "en":
            continue
        po = _po(lang)
        if not po.exists():
            out.append(f"{po} is missing: run scripts/i18n")
            continue
        cat = _read(po)
        have = {(m.id if isinstance(m.id, str) else m.id[0], m.context) for m in cat if m.id}
        out += [f"{lang}: not in the catalogue: {mid!r}" for mid, _ in sorted(wanted - have, key=str)]
        out += [f"{lang}: no longer used: {mid!r}" for mid, _ in sorted(have - wanted, key=str)]
        for m in cat:
            if not m.id:
                continue
            strings = m.string if isinstance(m.string, tuple) else (m.string,)
            if m.fuzzy:
                out.append(f"{lang}: fuzzy (check the translation): {m.id!r}")
            elif not all(strings):
                out.append(f"{lang}: untranslated: {m.id!r}")
        mo = po.with_suffix(".mo")
        if not mo.exists() or _messages(mo.read_bytes()) != _messages(compile_mo(po)):
            out.append(f"{mo} is not compiled from {po.name}: run scripts/i18n")
    return out


def main(argv: list[str]) -> int:
    template = extract()
    POT.parent.mkdir(parents=True, exist_ok=True)
    POT.write_bytes(_po_bytes(template))
    for lang in LANGUAGES:
        if lang == "en":  # the source language
            continue
        po = _po(lang)
        po.parent.mkdir(parents=True, exist_ok=True)
        cat = _catalog(lang)
        if po.exists():
            for m in _read(po):
                if m.id:
                    cat[m.id] = m
        cat.update(template, no_fuzzy_matching=True, update_creation_date=False)
        cat.obsolete.clear()
        po.write_bytes(_po_bytes(cat))
        po.with_suffix(".mo").write_bytes(compile_mo(po))
    left = problems()
    for p in left:
        print(p, file=sys.stderr)
    print(f"{POT.relative_to(ROOT)}: {len(template)} strings; {len(left)} problems")
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
