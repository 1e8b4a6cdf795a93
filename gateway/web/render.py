"""Templates (Jinja2, autoescaped) rendered in the reader's language from the ``lockgw`` catalogue."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from protocols.i18n import LANGUAGES, Lang, language

__all__ = ["Renderer"]

TEMPLATES = Path(__file__).resolve().parent / "templates"


class Renderer:
    """One Jinja2 environment per language (each with that language's catalogue
    installed), made once; rendering is thread-safe (pages render on worker threads)."""

    def __init__(self) -> None:
        loader = jinja2.FileSystemLoader(TEMPLATES)
        self._envs: dict[str, jinja2.Environment] = {}
        for code in LANGUAGES:
            env = jinja2.Environment(
                loader=loader,
                autoescape=True,
                undefined=jinja2.StrictUndefined,
                extensions=["jinja2.ext.i18n"],
                trim_blocks=True,
                lstrip_blocks=True,
            )
            env.install_gettext_translations(language(code).translations, newstyle=True)  # type: ignore[attr-defined]
            self._envs[code] = env

    def render(self, lang: Lang, template: str, **context: Any) -> str:
        env = self._envs[lang.code]
        other = "en" if lang.code == "nl" else "nl"
        return env.get_template(template).render(lang=lang.code, other_lang=other, **context)
