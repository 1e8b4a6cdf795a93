"""The resident's page over HTTP, served by a real ``lockgw run``: the way in (one-time
links, sessions, revocation, rate limits), the headers, read-only, and what each page says.
The same page in a real browser, with an accessibility check: tests/test_demo.py."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import aiohttp
import pytest
from test_door_process import home, west, windows_now

from simulators.broker import MosquittoBroker, free_port
from simulators.site import Carer, SimSite

pytestmark = pytest.mark.slow


async def resident_link(sim: SimSite, *extra: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "resident-link", "--config", str(sim.config), *extra,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=sim.dir,
    )  # fmt: skip
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode() + err.decode()


def link_of(out: str) -> str:
    m = re.search(r"(http://\S+/login\?t=\S+)", out)
    assert m, out
    return m.group(1)


def session() -> aiohttp.ClientSession:
    """A browser's cookie jar (aiohttp's default one refuses cookies from IP addresses)."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def log_in(http: aiohttp.ClientSession, link: str) -> aiohttp.ClientResponse:
    """What a browser does: open the link, press the button (POST the form)."""
    async with http.get(link) as r:
        assert r.status == 200
        page = await r.text()
    token = re.search(r'name="t" value="([^"]+)"', page)
    assert token, page
    base = link.split("/login", maxsplit=1)[0]
    return await http.post(f"{base}/login", data={"t": token.group(1)}, allow_redirects=False)


async def test_the_resident_page_lets_in_only_with_a_link_and_shows_the_day(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    inside, _ = windows_now()
    org = west()
    port = free_port()
    web = f'[web]\nenabled = true\naddress = "127.0.0.1"\nport = {port}\nsession_days = 7\n'
    async with home(tmp_path, broker, [org], extra=web) as (sim, platform):
        base = f"http://127.0.0.1:{port}"
        anna = Carer("Anna", "c-7f31", org, "verzorgende")
        sim.issue(anna, windows=inside)
        await platform.send_roster(org.id, sim.roster(org, 1, [anna]))
        await platform.wait_for(lambda e: e["type"] == "roster.applied")
        result = await sim.attempt(anna)
        assert result.granted

        async with session() as http:
            # no session: nothing but the page that says how to get in
            for path in ("/", "/people", "/devices", "/log", "/log?print=1"):
                async with http.get(base + path) as r:
                    assert r.status == 401, path
                    body = await r.text()
                    assert "Log eerst in" in body and "Anna" not in body
                    csp = r.headers["Content-Security-Policy"]
                    assert "default-src 'none'" in csp and "script" not in csp
                    assert r.headers["X-Frame-Options"] == "DENY"
                    assert r.headers["Referrer-Policy"] == "no-referrer"
                    assert r.headers["Cache-Control"] == "no-store"

            code, out = await resident_link(sim, "--label", "tablet")
            assert code == 0, out
            link = link_of(out)
            assert link.startswith(base + "/login?t=")
            assert "▀" in out or "█" in out  # the QR code in the terminal

        async with session() as http:
            resp = await log_in(http, link)
            assert resp.status == 303 and resp.headers["Location"] == "/"
            cookie = resp.headers["Set-Cookie"]
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
            assert "Max-Age=604800" in cookie and "Path=/" in cookie
            async with http.get(base + "/") as r:
                assert r.status == 200
                page = await r.text()
            assert '<html lang="nl">' in page and "Vandaag" in page
            assert "Anna, verzorgende (Thuiszorg West)" in page and "Voordeur" in page
            assert "<script" not in page
            async with http.get(base + "/people") as r:
                page = await r.text()
            assert "Wie mag er binnenkomen" in page and "Anna, verzorgende" in page
            assert "Bij een noodgeval" in page and "elke dag" in page
            async with http.get(base + "/devices") as r:
                page = await r.text()
            assert "Slot van de voordeur" in page and "Batterij" in page and "<svg" in page
            async with http.get(base + "/log?print=1") as r:
                page = await r.text()
            assert "Afgedrukt op" in page and "Voordeur geopend voor Anna" in page
            # English on request: a cookie in the browser, nothing on the gateway
            async with http.get(base + "/lang/en?next=/people", allow_redirects=False) as r:
                assert r.status == 303 and r.headers["Location"] == "/people"
            async with http.get(base + "/people") as r:
                page = await r.text()
            assert '<html lang="en">' in page and "Who may come in" in page
            # read only: nothing but GET (and the login's POST)
            for method in ("POST", "PUT", "DELETE", "PATCH"):
                async with http.request(method, base + "/people") as r:
                    assert r.status == 405, method

            # a link works once
            async with (
                session() as other,
                other.post(base + "/login", data={"t": link.split("t=")[1]}) as r,
            ):
                assert r.status == 403
                assert "Deze link werkt niet" in await r.text()

            # --revoke-all logs every device out at once
            code, out = await resident_link(sim, "--revoke-all")
            assert code == 0 and "1 device" in out, out
            async with http.get(base + "/") as r:
                assert r.status == 401

        # guessing links is limited: after 5 failures from one address (the used link
        # above was the first), 429 for a quarter of an hour
        async with session() as http:
            for _ in range(4):
                async with http.post(base + "/login", data={"t": "guess"}) as r:
                    assert r.status == 403
            code, out = await resident_link(sim)
            async with http.post(base + "/login", data={"t": link_of(out).split("t=")[1]}) as r:
                assert r.status == 429  # even a good link, until the window has passed


async def test_a_page_that_cannot_listen_never_keeps_the_door_shut(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """The port is taken: the gateway logs it and runs on; phones still get in."""
    import socket

    inside, _ = windows_now()
    org = west()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        web = f'[web]\nenabled = true\naddress = "127.0.0.1"\nport = {port}\n'
        async with home(tmp_path, broker, [org], extra=web) as (sim, _platform):
            anna = Carer("Anna", "c-7f31", org, "verzorgende")
            sim.issue(anna, windows=inside)
            assert (await sim.attempt(anna)).granted
            log = (sim.dir / "gateway.log").read_text()
            assert '"web.cannot_listen"' in log and str(port) in log
