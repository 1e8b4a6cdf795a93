"""The resident's page: a small read-only web server inside the daemon (aiohttp).

Off by default; ``[web] enabled = true`` with ``address`` and ``port``. What it promises:

- **Read only.** Every page is a GET; the one POST is the login that spends a one-time
  link (:mod:`gateway.web.sessions`). Nothing on the page can open a door, change who
  may enter or delete anything. Any other method is refused (405).
- **No way in but a link.** ``lockgw resident-link`` prints one; without a session every
  page answers 401 and says how to get a link. Failed logins are limited per address
  and in all (429).
- **Nothing from elsewhere, no scripts.** A strict Content-Security-Policy
  (``default-src 'none'``; the style sheet and images from this server only; no script
  at all), no third-party assets, ``Referrer-Policy: no-referrer``, no caching, not
  framed.
- **The door comes first.** Pages read the journal through a read-only journal of their
  own (its own reader thread), the rosters and device states from memory, and render on
  a worker thread: a page never blocks the event loop or waits behind the door's work.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote
from zoneinfo import ZoneInfo

import structlog
from aiohttp import web

from gateway.journal import Journal, journal_path
from gateway.web import pages
from gateway.web.render import Renderer
from gateway.web.sessions import ResidentAccess
from gateway.words import People
from protocols.i18n import LANGUAGES, Lang, language

if TYPE_CHECKING:
    from gateway.access import AccessController
    from gateway.config import Config
    from gateway.devices import DeviceManager

__all__ = ["LoginLimiter", "WebServer"]

log = structlog.get_logger("lockgw.web")

SESSION_COOKIE: Final = "lockgw_session"
LANG_COOKIE: Final = "lockgw_lang"
CSP: Final = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
STATIC: Final = Path(__file__).resolve().parent / "static"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class LoginLimiter:
    """Failed logins: at most ``per_peer`` per address and ``overall`` in all within
    ``window`` seconds; past that every login answers 429 until the window has passed."""

    def __init__(
        self,
        *,
        per_peer: int = 5,
        overall: int = 30,
        window: float = 900.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_peer, self.overall, self.window = per_peer, overall, window
        self._monotonic = monotonic
        self._failures: deque[tuple[float, str]] = deque()

    def _prune(self) -> None:
        horizon = self._monotonic() - self.window
        while self._failures and self._failures[0][0] < horizon:
            self._failures.popleft()

    def blocked(self, peer: str) -> bool:
        self._prune()
        if len(self._failures) >= self.overall:
            return True
        return sum(1 for _, p in self._failures if p == peer) >= self.per_peer

    def failed(self, peer: str) -> None:
        self._failures.append((self._monotonic(), peer))


class WebServer:
    """``async with WebServer(config, access, devices) as web``: serving until left."""

    def __init__(
        self,
        config: Config,
        access: AccessController,
        devices: DeviceManager,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.cfg = config.web
        self.access = access
        self.devices = devices
        self.tz = ZoneInfo(config.site.timezone)
        self.residents = ResidentAccess(config.site.data_dir)
        self.limiter = LoginLimiter()
        self.clock = clock
        self.renderer = Renderer()
        self.journal: Journal | None = None
        self._runner: web.AppRunner | None = None
        self.address: str | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def _ssl(self) -> ssl.SSLContext | None:
        if self.cfg.cert_file is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(self.cfg.cert_file), str(self.cfg.key_file or self.cfg.cert_file))
        return ctx

    async def __aenter__(self) -> WebServer:
        self.journal = await Journal(
            journal_path(self.config.site.data_dir),
            self.config.site.id,
            retention_days=self.config.journal.retention_days,
            read_only=True,
        ).__aenter__()
        app = web.Application(middlewares=[self._guard], client_max_size=8 * 1024)
        app.router.add_get("/", self._today)
        app.router.add_get("/people", self._who)
        app.router.add_get("/devices", self._devices_page)
        app.router.add_get("/log", self._log)
        app.router.add_get("/login", self._login_form)
        app.router.add_post("/login", self._login)
        app.router.add_get("/lang/{code}", self._set_language)
        app.router.add_get("/style.css", self._css)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        try:
            await self._runner.setup()
            ctx = await asyncio.to_thread(self._ssl)
            site = web.TCPSite(
                self._runner, self.cfg.address, self.cfg.port, ssl_context=ctx, backlog=32
            )
            await site.start()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        scheme = "https" if ctx is not None else "http"
        self.address = f"{scheme}://{self.cfg.address}:{self.cfg.port}"
        log.info("web.listening", address=self.address)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.journal is not None:
            await self.journal.__aexit__(None, None, None)
            self.journal = None

    # -- the guard every request passes ----------------------------------------------------
    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            if request.method not in ("GET", "HEAD") and request.path != "/login":
                resp: web.StreamResponse = web.Response(
                    status=405, text="read only\n", headers={"Allow": "GET, HEAD"}
                )
            elif request.path in ("/login", "/style.css") or request.path.startswith("/lang/"):
                resp = await handler(request)
            elif await self._session(request) is None:
                resp = await self._page(request, "message.html", status=401, kind="no_session")
            else:
                resp = await handler(request)
        except web.HTTPException as exc:
            resp = exc
        resp.headers.update(_HEADERS)
        return resp

    async def _session(self, request: web.Request) -> object | None:
        secret = request.cookies.get(SESSION_COOKIE)
        if not secret or len(secret) > 100:
            return None
        return await asyncio.to_thread(self.residents.session, secret)

    def _language(self, request: web.Request) -> Lang:
        code = request.cookies.get(LANG_COOKIE)
        return language(code if code in LANGUAGES else self.config.site.language)

    async def _page(
        self, request: web.Request, template: str, *, status: int = 200, **context: Any
    ) -> web.Response:
        lang = self._language(request)
        html = await asyncio.to_thread(
            self.renderer.render,
            lang,
            template,
            path=request.path,
            here=quote(request.path_qs, safe=""),
            **context,
        )
        return web.Response(status=status, text=html, content_type="text/html", charset="utf-8")

    # -- login -------------------------------------------------------------------------------
    async def _login_form(self, request: web.Request) -> web.Response:
        link = request.query.get("t", "")
        if not 0 < len(link) <= 100:
            return await self._page(request, "message.html", status=403, kind="bad_link")
        return await self._page(request, "login.html", link=link)

    async def _login(self, request: web.Request) -> web.StreamResponse:
        peer = request.remote or "?"
        if self.limiter.blocked(peer):
            log.warning("web.login_limited", peer=peer)
            return await self._page(request, "message.html", status=429, kind="limited")
        form = await request.post()
        link = form.get("t")
        secret = None
        if isinstance(link, str) and 0 < len(link) <= 100:
            secret = await asyncio.to_thread(
                self.residents.redeem, link, self.cfg.session_days * 86400.0
            )
        if secret is None:
            self.limiter.failed(peer)
            log.warning("web.login_refused", peer=peer)
            return await self._page(request, "message.html", status=403, kind="bad_link")
        log.info("web.login", peer=peer)
        resp = _see_other("/")
        resp.set_cookie(
            SESSION_COOKIE,
            secret,
            max_age=self.cfg.session_days * 86400,
            path="/",
            httponly=True,
            samesite="Strict",
            secure=self.cfg.cert_file is not None,
        )
        return resp

    async def _set_language(self, request: web.Request) -> web.StreamResponse:
        """The language switch: a cookie in the browser, nothing on the gateway."""
        code = request.match_info["code"]
        back = request.query.get("next", "/")
        if not back.startswith("/") or back.startswith("//"):
            back = "/"
        resp = _see_other(back)
        if code in LANGUAGES:
            resp.set_cookie(
                LANG_COOKIE,
                code,
                max_age=365 * 86400,
                path="/",
                httponly=True,
                samesite="Strict",
                secure=self.cfg.cert_file is not None,
            )
        return resp

    async def _css(self, request: web.Request) -> web.StreamResponse:
        text = await asyncio.to_thread((STATIC / "style.css").read_text, encoding="utf-8")
        return web.Response(text=text, content_type="text/css", charset="utf-8")

    # -- pages -------------------------------------------------------------------------------
    def _people(self) -> People:
        return pages.people_of(self.config, self.access, self.devices.records())

    def _today_start(self) -> datetime:
        now = datetime.fromtimestamp(self.clock(), self.tz)
        return now.replace(hour=0, minute=0, second=0, microsecond=0)

    async def _read(self, since: datetime, until: datetime | None, types: Any) -> list[Any]:
        assert self.journal is not None
        return await self.journal.read(
            since=since, until=until, types=types, limit=pages.MAX_EVENTS + 1
        )

    async def _today(self, request: web.Request) -> web.StreamResponse:
        lang = self._language(request)
        start = self._today_start() - timedelta(days=6)
        events = await self._read(start, None, pages.TIMELINE_TYPES)
        return await self._page(
            request,
            "today.html",
            days=pages.Timeline(lang, self._people(), self.tz).days(
                events[: pages.MAX_EVENTS], today=self._today_start().date()
            ),
            truncated=len(events) > pages.MAX_EVENTS,
            warnings=pages.site_warnings(lang, self.config, self.access),
        )

    async def _who(self, request: web.Request) -> web.StreamResponse:
        lang = self._language(request)
        return await self._page(
            request,
            "people.html",
            orgs=pages.organisations(lang, self.config, self.access, self.tz, self.clock()),
            emergency=pages.emergency_rules(lang, self.config),
            warnings=pages.site_warnings(lang, self.config, self.access),
        )

    async def _devices_page(self, request: web.Request) -> web.StreamResponse:
        lang = self._language(request)
        return await self._page(
            request,
            "devices.html",
            devices=pages.devices(lang, self.config, self.devices.records(), self.clock(), self.tz),
        )

    async def _log(self, request: web.Request) -> web.StreamResponse:
        lang = self._language(request)
        today = self._today_start().date()
        first = _day(request.query.get("from"), today - timedelta(days=6))
        last = _day(request.query.get("to"), today)
        if last < first:
            first, last = last, first
        since = datetime(first.year, first.month, first.day, tzinfo=self.tz)
        until = datetime(last.year, last.month, last.day, tzinfo=self.tz) + timedelta(days=1)
        events = await self._read(since, until, pages.LOG_TYPES)
        printing = request.query.get("print") == "1"
        return await self._page(
            request,
            "log_print.html" if printing else "log.html",
            first=first,
            last=last,
            first_text=lang.date(first),
            last_text=lang.date(last),
            printing=printing,
            days=pages.log_days(lang, self._people(), self.tz, events[: pages.MAX_EVENTS]),
            truncated=len(events) > pages.MAX_EVENTS,
            printed_text=_printed(lang, datetime.fromtimestamp(self.clock(), self.tz)),
            query=f"from={first.isoformat()}&to={last.isoformat()}",
        )


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _printed(lang: Lang, at: datetime) -> str:
    return f"{lang.date(at)} {at:%H:%M}"


def _day(text: str | None, default: date) -> date:
    if not text:
        return default
    try:
        return date.fromisoformat(text)
    except ValueError:
        return default
