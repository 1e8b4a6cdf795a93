"""The access decision: may this phone, with this token, open this door now?

:meth:`AccessController.decide` checks, in this order, and the first failure is the
answer (CONTRACT §3 reasons):

1. the phone is not over the rate limit (``rate_limited``);
2. the nonce is one this gateway issued, unused and not older than ``nonce_ttl``
   (``nonce_reused``; it is spent whatever the outcome);
3. the token decodes strictly (``malformed``), names a configured issuer
   (``unknown_issuer``) and carries that issuer's signature (``bad_signature``);
4. the phone proves possession of the token's ``cnf`` key over nonce, site, door and
   action (``bad_proof``) — a forwarded token stops here;
5. ``aud`` is this site (``wrong_site``); neither ``cti`` nor ``sub`` is revoked (``revoked``);
6. the clock: behind the time floor it is untrusted, "now" becomes the floor and
   ``access.untrusted_clock_allows`` decides (``clock_untrusted``);
7. the resident's consent for the issuer covers today (``issuer_not_consented``);
8. ``nbf`` / ``exp`` with ``skew_seconds`` (``not_yet_valid`` / ``expired``);
9. the door is in the token and in the issuer's consented doors (``wrong_door``);
10. the role is in the issuer's function-access matrix (``role_not_permitted``) and one
    of the token's purposes is allowed for that role (``purpose_not_permitted``);
11. the time windows, in the site's zone: inside → planned care; outside → only an
    emergency purpose, only while an alarm is raised unless
    ``site.emergency_outside_window_without_alarm`` (``outside_window``; flagged);
12. planned care needs a fresh revocation list when the issuer has
    ``revocation_max_age``, or when the issuer's list was lost with ``revocations.json``
    and has not arrived again (``revocation_stale``); emergency access keeps working;
13. the issuer's current roster (when it has sent one) lists the token: if not, the
    grant is flagged ``not_on_roster``, or with ``access.roster_check = "refuse"``
    planned care is refused (``not_on_roster``); emergency access keeps working, flagged.
    With ``"refuse"``, an issuer whose roster was lost with ``rosters.json`` and has not
    arrived again has its planned care refused too (``not_on_roster``, saying so).

The state behind these checks lives in ``<data_dir>/access/`` (:mod:`gateway.access.state`).
When a file is missing (after the first start) or damaged, the controller takes the
safe side and says so (:attr:`AccessController.fallbacks`): the time floor comes from
the journal (:mod:`gateway.access.clock`), lost revocation lists are awaited again
(:mod:`gateway.access.revocations`), and for lost used-command ids every command that
could have been used before the loss is refused (:meth:`AccessController.verify_command`).
The alarm state is rebuilt from the journal's newest alarm event.

Every denial is counted for rate limiting and the ``suspicious`` flag
(:mod:`gateway.access.ratelimit`).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Final
from zoneinfo import ZoneInfo

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.access.clock import ClockStatus, TimeFloor
from gateway.access.models import (
    AccessRequest,
    Decision,
    RevocationOutcome,
    RevocationStatus,
    RosterOutcome,
)
from gateway.access.ratelimit import RateLimiter
from gateway.access.revocations import RevocationStore
from gateway.access.rosters import (
    LOST_FLAG as _LOST_ROSTER_FLAG,
)
from gateway.access.rosters import (
    NAMES_FILE,
    HeldRoster,
    Person,
    RosterStore,
    people_of,
)
from gateway.access.state import StateDir, StateFallback, StateHistory
from gateway.config import AccessConfig, CommandSignerConfig, Config, IssuerConfig
from gateway.keys import load_public_key
from protocols.control import MAX_AHEAD, Command, RevocationList, Roster
from protocols.cose import KeyRing
from protocols.errors import (
    ControlMessageError,
    KeyFileError,
    ProtocolError,
    Reason,
    TokenError,
)
from protocols.token import (
    MAX_TOKEN,
    ProofError,
    TokenClaims,
    decode_token,
    verify_presentation,
    verify_token,
)
from protocols.windows import LocalClock, in_windows_at

__all__ = ["AccessController"]

log = structlog.get_logger("lockgw.access")

_MAX_NONCES: Final = 4096
_MAX_COMMANDS: Final = 100_000
_COMMANDS_FILE: Final = "commands.json"
_ALARM_FILE: Final = "alarm.json"
#: the names' file and what its loss means (they come back with the next roster);
#: ``rosters.json`` is the roster store's own (:mod:`gateway.access.rosters`)
_NAMES_LOST: Final = (
    "the names rosters gave carers were lost: the resident's views show pseudonyms "
    "until the rosters arrive again"
)
_ROSTERS_FILE: Final = "rosters.json"


#: every purpose claim a valid token can carry (protocols.token: 1 or 2 distinct purposes)
_PURPOSE_CLAIMS: Final = tuple(
    c for n in (1, 2) for c in itertools.permutations(("planned", "emergency"), n)
)


class _Issuer:
    """One consented issuer, precomputed for the hot path."""

    __slots__ = (
        "cfg",
        "consent_from",
        "consent_until",
        "doors",
        "key_valid_until",
        "max_age",
        "purposes_for",
        "usable",
    )

    def __init__(self, cfg: IssuerConfig) -> None:
        self.cfg = cfg
        self.doors = frozenset(cfg.doors)
        self.purposes_for = {role: cfg.purposes_for(role) for role in cfg.roles}
        #: (role, the token's purposes) → those of them this issuer's matrix allows, for
        #: every role that allows any and every purposes claim a token can carry
        self.usable: dict[tuple[str, tuple[str, ...]], tuple[str, ...]] = {
            (role, claimed): tuple(p for p in claimed if p in allowed)
            for role, allowed in self.purposes_for.items()
            if allowed
            for claimed in _PURPOSE_CLAIMS
        }
        self.max_age = cfg.revocation_max_age
        self.consent_from = cfg.consent_from
        self.consent_until = cfg.consent_until
        self.key_valid_until = cfg.key_valid_until


def _limits(a: AccessConfig) -> tuple[int, int, int, int]:
    return (a.rate_limit, a.rate_window, a.suspicious_after, a.suspicious_window)


class _Deny(Exception):
    def __init__(self, reason: Reason, detail: str) -> None:
        self.reason = reason
        self.detail = detail


class AccessController:
    """The gateway's access decision and the state it keeps (see the module docstring).

    Not thread-safe; the daemon calls it from its event loop only. All methods are
    synchronous and fast (no network, small atomic file writes).
    """

    def __init__(
        self,
        config: Config,
        *,
        history: StateHistory | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``history``: what the journal says (the daemon passes it); None when there is
        no journal to ask, so a missing file is taken as a first start."""
        self._clock = clock
        self._monotonic = monotonic
        self._state = StateDir(Path(config.site.data_dir) / "access")
        # insertion order = expiry order; OrderedDict keeps popping the oldest O(1)
        self._nonces: OrderedDict[bytes, float] = OrderedDict()
        self._random = b""
        self._random_at = 0
        self._apply_config(config)
        self._floor = TimeFloor(
            self._state,
            clock=clock,
            monotonic=monotonic,
            tolerance=config.access.skew_seconds,
            history=history,
        )
        #: every state file found missing or damaged at this start, with the side taken
        self.fallbacks: list[StateFallback] = []
        if self._floor.fallback is not None:
            self.fallbacks.append(self._floor.fallback)
        self._trusted_before = True
        t = self._now()[1]
        self._revocations = RevocationStore(
            self._state, issuers=self._issuers, history=history, now=clock()
        )
        if self._revocations.fallback is not None:
            self.fallbacks.append(self._revocations.fallback)
        loaded = self._state.read(NAMES_FILE)  # a damaged file is set aside here, reported
        if loaded.problem == "damaged":
            self.fallbacks.append(
                StateFallback(
                    file=NAMES_FILE,
                    problem="damaged",
                    fallback=_NAMES_LOST,
                    at=clock(),
                    kept_as=loaded.kept_as,
                    detail=loaded.detail,
                )
            )
        self._rosters = self._roster_store(history, at_start=True)
        if self._rosters.fallback is not None:
            self.fallbacks.append(self._rosters.fallback)
        self._load_commands(history, t)
        self._load_alarm(history, t)
        self._held: dict[bytes, int] = {}
        #: held token id -> (iss, sub), for health (a token about to expire, for whom)
        self._held_who: dict[bytes, tuple[str, str]] = {}
        for path in self._state.held_dir.glob("*.cwt"):
            try:
                claims = decode_token(path.read_bytes())
            except (OSError, TokenError) as exc:
                kept = self._state.set_aside(path)
                self._state.problems.append(f"{path}: not a readable token; ignored")
                self.fallbacks.append(
                    StateFallback(
                        file=f"held/{path.name}",
                        problem="damaged",
                        fallback="the held token was dropped: a phone presenting it by its id "
                        "is refused until the platform sends the token again",
                        at=clock(),
                        kept_as=kept,
                        detail=f"{path}: {exc}",
                    )
                )
                continue
            if path.stem == claims.cti.hex():
                self._held[claims.cti] = claims.exp
                self._held_who[claims.cti] = (claims.iss, claims.sub)
        for fb in self.fallbacks:
            log.error(
                "access.state_fallback",
                file=fb.file,
                problem=fb.problem,
                fallback=fb.fallback,
                kept_as=fb.kept_as,
            )

    def _lost(self, problem: str | None, history: StateHistory | None) -> bool:
        return problem == "damaged" or (
            problem == "missing" and history is not None and history.has_events
        )

    def _load_commands(self, history: StateHistory | None, t: float) -> None:
        """The used command ids; after a loss, the ``exp`` below which commands are refused.

        A command that was used before the loss was verified at some time ``u`` before
        this start ``t``, when its ``exp`` could be at most ``u + MAX_AHEAD + skew``.
        Every command with ``exp < t + MAX_AHEAD + skew`` could be such a one; a command
        with a later ``exp`` cannot have passed the ahead-check before ``t``, so it was
        issued after the loss. Those are refused, these accepted (CONTRACT §5)."""
        loaded = self._state.read(_COMMANDS_FILE)
        raw = loaded.value
        used: dict[str, int] = {}
        self._refuse_exp_before: float | None = None
        if isinstance(raw, dict) and isinstance(raw.get("used"), dict):
            used = {str(k): v for k, v in raw["used"].items() if isinstance(v, int)}
            before = raw.get("refuse_exp_before")
            if isinstance(before, int | float) and before > t - self._skew:
                self._refuse_exp_before = float(before)
        elif isinstance(raw, dict):  # the older form: {request_id: exp}
            used = {str(k): v for k, v in raw.items() if isinstance(v, int)}
        elif loaded.problem is None:
            loaded = self._state.damaged(_COMMANDS_FILE, "does not hold command ids")
        self._used_commands = used
        if self._lost(loaded.problem, history):
            self._refuse_exp_before = t + MAX_AHEAD + self._skew
            until = datetime.fromtimestamp(self._refuse_exp_before, self._tz)
            self.fallbacks.append(
                StateFallback(
                    file=_COMMANDS_FILE,
                    problem=loaded.problem or "damaged",
                    fallback="the record of used remote commands was lost: every command that "
                    "could have been sent before this start is refused (nonce_reused), i.e. "
                    f"each expiring before {until:%H:%M:%S}; newer commands work",
                    at=self._clock(),
                    kept_as=loaded.kept_as,
                    detail=loaded.detail,
                    until=self._refuse_exp_before,
                )
            )
        if loaded.problem is not None:  # first start or a loss: the file exists from now on
            self._save_commands()

    def _save_commands(self) -> None:
        self._state.save(
            _COMMANDS_FILE,
            {"used": self._used_commands, "refuse_exp_before": self._refuse_exp_before},
        )

    def _load_alarm(self, history: StateHistory | None, t: float) -> None:
        loaded = self._state.read(_ALARM_FILE)
        alarm = loaded.value
        self._alarm_until: float | None = None
        if isinstance(alarm, dict) and loaded.problem is None:
            if alarm.get("raised") is True:
                until = alarm.get("until")
                self._alarm_until = float(until) if isinstance(until, int | float) else None
        elif loaded.problem is None:
            loaded = self._state.damaged(_ALARM_FILE, "does not hold an alarm state")
        if self._lost(loaded.problem, history):
            last = history.alarm if history is not None else None
            if last is not None and last[0]:
                self._alarm_until = last[1] + self.config.access.alarm_expiry
            raised = self._alarm_until is not None and t < self._alarm_until
            when = (
                datetime.fromtimestamp(self._alarm_until, self._tz).strftime("%H:%M")
                if self._alarm_until is not None
                else ""
            )
            self.fallbacks.append(
                StateFallback(
                    file=_ALARM_FILE,
                    problem=loaded.problem or "damaged",
                    fallback="the alarm state was taken from the journal: "
                    + (f"an alarm is raised until {when}" if raised else "no alarm is raised"),
                    at=self._clock(),
                    kept_as=loaded.kept_as,
                    detail=loaded.detail,
                )
            )
        if loaded.problem is not None:
            self._state.save(_ALARM_FILE, {"raised": self._alarm_until is not None,
                                           "until": self._alarm_until})

    # -- configuration ------------------------------------------------------------------
    def _apply_config(self, config: Config) -> None:
        self.config = config
        self.site = config.site.id
        self._tz = ZoneInfo(config.site.timezone)
        self._local = LocalClock(self._tz)
        acc = config.access
        self._skew = acc.skew_seconds
        self._nonce_ttl = float(acc.nonce_ttl)
        self._untrusted_allows = acc.untrusted_clock_allows
        self._emergency_anytime = config.site.emergency_outside_window_without_alarm
        self._issuers = {i.id: _Issuer(i) for i in config.issuers}
        #: issuer / command signer id → why its key file cannot be used; it is left out
        #: of the key ring, and what it signed is refused with ``issuer_unavailable``
        self.unavailable: dict[str, str] = {}
        self.unavailable_signers: dict[str, str] = {}
        self._issuer_ring = KeyRing(self._keys(config.issuers, self.unavailable, "issuer"))
        self._signer_ring = KeyRing(
            self._keys(config.command_signers, self.unavailable_signers, "command_signer")
        )
        self._signer_commands = {s.id: s.commands for s in config.command_signers}
        self._roster_refuses = acc.roster_check == "refuse"
        self._limiter = RateLimiter(
            limit=acc.rate_limit,
            window=acc.rate_window,
            suspicious_after=acc.suspicious_after,
            suspicious_window=acc.suspicious_window,
            monotonic=self._monotonic,
        )

    @staticmethod
    def _keys(
        entries: list[IssuerConfig] | list[CommandSignerConfig], unusable: dict[str, str], what: str
    ) -> dict[str, Ed25519PublicKey]:
        """The public keys that load; the others go to ``unusable`` with the reason (one
        broken key file must not lock out every other organisation's carers)."""
        keys: dict[str, Ed25519PublicKey] = {}
        for e in entries:
            try:
                keys[e.id] = load_public_key(e.public_key)
            except KeyFileError as exc:
                unusable[e.id] = str(exc)
                log.error(f"access.{what}_unavailable", id=e.id, problem=str(exc))
        return keys

    def reload(self, config: Config) -> None:
        """New config (SIGHUP); revocations, floor, alarm, held tokens and nonces stay.
        A key file that cannot be loaded leaves its issuer (signer) unavailable, as at
        start; one fixed since is taken up."""
        old_limiter, old_access = self._limiter, self.config.access
        self._apply_config(config)
        if _limits(old_access) == _limits(config.access):
            self._limiter = old_limiter  # keep the counters
        self._floor.tolerance = config.access.skew_seconds
        # verified again with the issuers now consented to
        self._rosters = self._roster_store()

    # -- challenges -----------------------------------------------------------------------
    def new_challenge(self) -> bytes:
        """A fresh 16-byte nonce, valid once, for ``access.nonce_ttl`` seconds."""
        now = self._monotonic()
        nonces = self._nonces
        at = self._random_at
        if at >= len(self._random):
            self._random, at = os.urandom(4096), 0  # one system call per 256 nonces
            # ... and then the expired challenges go (a decision refuses them anyway)
            while nonces and next(iter(nonces.values())) <= now:
                nonces.popitem(last=False)
        if len(nonces) >= _MAX_NONCES:  # bounded: the oldest outstanding one gives way
            nonces.popitem(last=False)
        nonce = self._random[at : at + 16]
        self._random_at = at + 16
        nonces[nonce] = now + self._nonce_ttl
        return nonce

    # -- time -----------------------------------------------------------------------------
    def clock_status(self) -> ClockStatus:
        return self._floor.status()

    def _now(self) -> tuple[bool, float]:
        """(trusted, the time decisions use: the clock, or the floor when it is behind)."""
        trusted, now, floor = self._floor.check()
        if trusted is not self._trusted_before:
            self._trusted_before = trusted
            if trusted:
                log.info("access.clock_trusted", now=now, floor=floor)
            else:
                log.warning("access.clock_untrusted", now=now, floor=floor, behind=floor - now)
        return trusted, (now if now >= floor else floor)

    def flush(self) -> None:
        """Persist the time floor (the daemon calls this on shutdown)."""
        self._floor.flush()

    def persist_time_floor(self) -> bool:
        """Persist the time floor when it is due (every ``PERSIST_EVERY`` seconds); the
        daemon calls this on a worker thread, so no decision waits for the disk."""
        return self._floor.persist_due()

    # -- alarm ----------------------------------------------------------------------------
    def set_alarm(self, raised: bool, *, until: float | None = None) -> None:
        """Raise (until ``until``, default now + ``access.alarm_expiry``) or clear."""
        if raised:
            _, t = self._now()
            self._alarm_until = until if until is not None else t + self.config.access.alarm_expiry
        else:
            self._alarm_until = None
        self._state.save(_ALARM_FILE, {"raised": raised, "until": self._alarm_until})

    def _alarm_at(self, t: float) -> bool:
        return self._alarm_until is not None and t < self._alarm_until

    @property
    def alarm_raised(self) -> bool:
        return self._alarm_at(self._now()[1])

    # -- the decision ---------------------------------------------------------------------
    def decide(self, req: AccessRequest) -> Decision:
        limiter = self._limiter
        if limiter.peer_limited(req.peer):
            self._nonces.pop(req.nonce, None)  # used up, even though refused unheard
            denials, suspicious = limiter.record_denial(req.peer, req.door, count_peer=False)
            return Decision(
                granted=False,
                reason=Reason.RATE_LIMITED,
                suspicious=suspicious,
                denials=denials,
                detail=f"too many denials for {req.peer}",
            )
        claims: TokenClaims | None = None
        try:
            # one flat path (each call saved is measurable here): nonce, token, proof
            expires = self._nonces.pop(req.nonce, None)
            if expires is None or expires < self._monotonic():
                raise _Deny(Reason.NONCE_REUSED, "nonce unknown, used or expired")
            raw = req.token if req.token is not None else self._held_for(req)
            claims = verify_presentation(
                raw,
                self._issuer_ring,
                req.proof,
                nonce=req.nonce,
                site=self.site,
                door=req.door,
                action=req.action,
                binding=req.binding,
            )
            return self._grant_or_deny(req, claims)
        except _Deny as deny:
            reason, detail = deny.reason, deny.detail
        except ProofError as exc:  # a good token on the wrong phone: still attributed
            claims, reason, detail = exc.claims, exc.reason, exc.detail
        except ProtocolError as exc:  # malformed, unknown_issuer, bad_signature
            reason, detail = exc.reason, exc.detail
            if reason is Reason.UNKNOWN_ISSUER and self.unavailable:
                reason, detail = self._unavailable(req, reason, detail)
        return self._denied(req, claims, reason, detail)

    def _unavailable(self, req: AccessRequest, reason: Reason, detail: str) -> tuple[Reason, str]:
        """An unknown issuer that is configured but whose key file cannot be used:
        ``issuer_unavailable``, saying why (the token is not verified, so it is not
        attributed)."""
        try:
            raw = req.token if req.token is not None else self._held_for(req)
            iss = decode_token(raw).iss
        except (_Deny, TokenError):
            return reason, detail
        problem = self.unavailable.get(iss)
        if problem is None:
            return reason, detail
        return Reason.ISSUER_UNAVAILABLE, f"issuer {iss}'s key cannot be used: {problem}"

    def record_malformed(self, peer: str, door: str) -> tuple[int, bool]:
        """A phone exchange refused before any decision (a frame that does not parse):
        counted like every denial, for rate limiting and the ``suspicious`` flag.
        Returns (denials at ``door`` in the suspicious window, newly suspicious)."""
        return self._limiter.record_denial(peer, door)

    def _denied(
        self, req: AccessRequest, claims: TokenClaims | None, reason: Reason, detail: str
    ) -> Decision:
        limiter = self._limiter
        door_limited = limiter.door_limited(req.door)
        denials, suspicious = limiter.record_denial(req.peer, req.door)
        if door_limited:
            detail = f"{reason.value} ({detail}); door under attack, answered rate_limited"
            reason = Reason.RATE_LIMITED
        trusted = self._floor.check()[0]
        return Decision(
            granted=False,
            reason=reason,
            iss=claims.iss if claims else None,
            sub=claims.sub if claims else None,
            role=claims.role if claims else None,
            token_id=claims.cti.hex() if claims else None,
            suspicious=suspicious,
            clock_trusted=trusted,
            detail=detail,
            denials=denials,
        )

    def _held_for(self, req: AccessRequest) -> bytes:
        """The held token an attempt names by ``cti`` (it sent no token of its own)."""
        if req.token_ref is None:
            raise _Deny(Reason.MALFORMED, "neither token nor token_ref")
        raw = self.held_token(req.token_ref)
        if raw is None:
            raise _Deny(Reason.MALFORMED, f"no held token {req.token_ref.hex()[:8]}…")
        return raw

    def _grant_or_deny(self, req: AccessRequest, c: TokenClaims) -> Decision:
        deny = self._denied  # deny(req, c, reason, detail); no closure on the hot path
        if c.aud != self.site:
            return deny(req, c, Reason.WRONG_SITE, f"token for site {c.aud!r}")
        held = self._revocations.get(c.iss)  # is_revoked() and the freshness, one lookup
        if held is not None and (c.cti in held.cti or c.sub in held.sub):
            return deny(req, c, Reason.REVOKED, f"revoked by {c.iss}")
        trusted, t = self._now()
        mode = self._untrusted_allows
        if not trusted and mode == "none":
            return deny(
                req, c, Reason.CLOCK_UNTRUSTED, "clock behind the time floor; nothing opens"
            )
        issuer = self._issuers[c.iss]  # verify_presentation found its key: configured
        if issuer.key_valid_until is not None:
            today = datetime.fromtimestamp(t, self._tz).date()
            if today > issuer.key_valid_until:
                return deny(
                    req,
                    c,
                    Reason.ISSUER_UNAVAILABLE,
                    f"issuer {c.iss}'s key was trusted until {issuer.key_valid_until}",
                )
        if issuer.consent_from is not None or issuer.consent_until is not None:
            today = datetime.fromtimestamp(t, self._tz).date()
            if (issuer.consent_from is not None and today < issuer.consent_from) or (
                issuer.consent_until is not None and today > issuer.consent_until
            ):
                return deny(
                    req,
                    c,
                    Reason.ISSUER_NOT_CONSENTED,
                    f"the resident's consent for {c.iss} does not cover {today}",
                )
        skew = self._skew
        if c.nbf is not None and t + skew < c.nbf:
            return deny(req, c, Reason.NOT_YET_VALID, f"valid from {c.nbf}")
        if t - skew > c.exp:
            return deny(req, c, Reason.EXPIRED, f"expired at {c.exp}")
        if req.door not in c.doors or req.door not in issuer.doors:
            return deny(req, c, Reason.WRONG_DOOR, f"door {req.door!r} not in token or consent")
        usable = issuer.usable.get((c.role, c.purposes))
        if usable is None:
            return deny(
                req, c, Reason.ROLE_NOT_PERMITTED, f"role {c.role!r} not permitted for {c.iss}"
            )
        if not usable:
            return deny(
                req,
                c,
                Reason.PURPOSE_NOT_PERMITTED,
                f"purposes {list(c.purposes)} not permitted for role {c.role!r}",
            )
        emergency = "emergency" in usable
        windows_known = trusted or mode == "all"
        if windows_known:
            inside = not c.windows or in_windows_at(c.windows, *self._local.day_minute(t))
        else:
            inside = not c.windows
        outside_flag = False
        alarm = False
        if inside:
            purpose = "planned" if "planned" in usable else "emergency"
        elif emergency and (self._emergency_anytime or (alarm := self._alarm_at(t))):
            purpose, outside_flag = "emergency", True
        elif not windows_known:
            return deny(
                req, c, Reason.CLOCK_UNTRUSTED, "clock untrusted: windows cannot be checked"
            )
        else:
            return deny(req, c, Reason.OUTSIDE_WINDOW, "outside the token's time windows")
        if purpose == "planned":
            max_age = issuer.max_age  # HeldList.age() inline: made at min(iat, received_at)
            stale = (
                self._stale_detail(c.iss, max_age, t)
                if max_age is not None
                and (held is None or t - held.iat > max_age or t - held.received_at > max_age)
                else ""
            )
            awaiting = self._revocations.awaiting
            if awaiting and c.iss in awaiting:
                stale = self._lost_detail(c.iss)
            untrusted = not trusted and mode == "emergency"
            if stale or untrusted:
                if emergency and (alarm or self._alarm_at(t)):
                    purpose = "emergency"
                elif untrusted:
                    return deny(
                        req, c, Reason.CLOCK_UNTRUSTED, "clock untrusted: planned care waits"
                    )
                else:
                    return deny(req, c, Reason.REVOCATION_STALE, stale)
        roster = self._rosters.get(c.iss)
        if roster is None and purpose == "planned" and self._roster_refuses:
            waits = self._rosters.awaiting
            if waits and c.iss in waits:  # lost: unknown who is listed, the safe side
                if emergency and (alarm or self._alarm_at(t)):
                    purpose = "emergency"
                else:
                    return deny(req, c, Reason.NOT_ON_ROSTER, self._roster_lost_detail(c.iss))
        if roster is not None and c.cti not in roster.ctis and c.sub not in roster.subs:
            if self._roster_refuses and purpose == "planned":
                return deny(
                    req, c, Reason.NOT_ON_ROSTER, f"not on {c.iss}'s roster (seq {roster.seq})"
                )
            return Decision(
                True,
                Reason.OK,
                c.iss,
                c.sub,
                c.role,
                purpose,
                c.cti.hex(),
                outside_flag,
                False,
                trusted,
                not_on_roster=True,
            )
        # positional: granted, reason, iss, sub, role, purpose, token_id,
        # emergency_outside_window, suspicious, clock_trusted (keywords cost µs here)
        return Decision(
            True,
            Reason.OK,
            c.iss,
            c.sub,
            c.role,
            purpose,
            c.cti.hex(),
            outside_flag,
            False,
            trusted,
        )

    # -- revocations ----------------------------------------------------------------------
    def _lost_detail(self, iss: str) -> str:
        seq = self._revocations.awaiting.get(iss, 0)
        return (
            f"the revocation list of {iss} was lost (revocations.json missing or damaged); "
            f"waiting for its list again (seq {seq} or later)"
        )

    def _stale_detail(self, iss: str, max_age: int | None, t: float) -> str:
        if max_age is None:
            return ""
        held = self._revocations.get(iss)
        if held is None:
            return f"no revocation list from {iss} yet (required within {max_age} s)"
        age = held.age(t)
        if age > max_age:
            return f"revocation list of {iss} is {age:.0f} s old (maximum {max_age} s)"
        return ""

    def apply_revocation(self, raw: bytes) -> RevocationOutcome:
        """Verify a signed revocation list and, when its seq is higher, replace the held one."""
        try:
            rl = RevocationList.verify(raw, self._issuer_ring)
        except ControlMessageError as exc:
            issuer = seq = None
            try:  # name the sender in the report when the bytes at least decode
                unverified = RevocationList.decode(raw)
                issuer, seq = unverified.iss, unverified.seq
            except ControlMessageError:
                pass
            log.warning("access.revocation_refused", iss=issuer, seq=seq, reason=exc.reason.value)
            return RevocationOutcome("refused", issuer, seq, reason=exc.reason, detail=exc.detail)
        held = self._revocations.get(rl.iss)
        held_seq = held.seq if held is not None else None
        nc, ns = len(rl.cti), len(rl.sub)
        if self._revocations.apply(rl, received_at=self._now()[1], raw=raw) is None:
            return RevocationOutcome(
                "ignored",
                rl.iss,
                rl.seq,
                held_seq,
                nc,
                ns,
                detail=f"seq {rl.seq} is not above the held seq {held_seq}",
            )
        log.info("access.revocation_applied", iss=rl.iss, seq=rl.seq, cti=nc, sub=ns)
        return RevocationOutcome("applied", rl.iss, rl.seq, held_seq, nc, ns)

    def held_revocation(self, iss: str) -> tuple[int, bytes] | None:
        """The seq and signed bytes of the newest revocation list held for a configured
        issuer (to put back on the broker); None when none is held, or not its bytes."""
        held = self._revocations.get(iss)
        if iss not in self._issuers or held is None or held.raw is None:
            return None
        return held.seq, held.raw

    # -- rosters -------------------------------------------------------------------------
    def held_roster(self, iss: str) -> tuple[int, bytes] | None:
        """The seq and signed bytes of a configured issuer's roster for this site."""
        for h in self._rosters.held():
            if h.iss == iss and iss in self._issuers:
                return h.seq, h.raw
        return None

    def _roster_store(
        self, history: StateHistory | None = None, *, at_start: bool = False
    ) -> RosterStore:
        return RosterStore(
            self._state,
            self.site,
            self._issuer_ring,
            forget_after=self.config.journal.retention_days * 86400.0,
            history=history,
            now=self._clock(),
            at_start=at_start,
        )

    def _roster_lost_detail(self, iss: str) -> str:
        seq = self._rosters.awaiting.get(iss, 0)
        return (
            f"the roster of {iss} was lost (rosters.json missing or damaged); waiting for "
            f"its roster again (seq {seq} or later)"
        )

    def names(self) -> dict[tuple[str, str], Person]:
        """(iss, sub) → the name and role a roster gave them, for the resident's views."""
        return self._rosters.names()

    def apply_roster(self, raw: bytes) -> RosterOutcome:
        """Verify a signed roster for this site and, when its seq is higher, replace the
        issuer's held one."""
        try:
            roster = Roster.verify(raw, self._issuer_ring, site=self.site)
        except ControlMessageError as exc:
            issuer = seq = None
            try:
                unverified = Roster.decode(raw)
                issuer, seq = unverified.iss, unverified.seq
            except ControlMessageError:
                pass
            log.warning("access.roster_refused", iss=issuer, seq=seq, reason=exc.reason.value)
            return RosterOutcome("refused", issuer, seq, reason=exc.reason, detail=exc.detail)
        old = self._rosters.get(roster.iss)
        held_seq = old.seq if old is not None else None
        _, t = self._now()
        change = self._rosters.apply(roster, raw, received_at=t)
        if change is None:
            return RosterOutcome(
                "ignored",
                roster.iss,
                roster.seq,
                held_seq,
                detail=f"seq {roster.seq} is not above the held seq {held_seq}",
            )
        people = len(people_of(roster.entries))
        log.info(
            "access.roster_applied",
            iss=roster.iss,
            seq=roster.seq,
            people=people,
            added=len(change.added),
            removed=len(change.removed),
        )
        return RosterOutcome(
            "applied",
            roster.iss,
            roster.seq,
            held_seq,
            people=people,
            added=change.added,
            removed=change.removed,
            changed=change.changed,
            site_people=self.site_people(t),
        )

    def rosters(self) -> list[HeldRoster]:
        """The rosters held, one per issuer that sent one."""
        return self._rosters.held()

    def site_people(self, now: float | None = None) -> int:
        """How many people the held rosters list (valid at ``now``), all issuers together."""
        t = self._now()[1] if now is None else now
        return sum(len(people_of(h.roster.entries, t)) for h in self._rosters.held())

    def revocation_status(self) -> list[RevocationStatus]:
        """Per configured issuer: the held list and whether it is stale."""
        _, t = self._now()
        out = []
        for iss, issuer in self._issuers.items():
            held = self._revocations.get(iss)
            out.append(
                RevocationStatus(
                    iss=iss,
                    seq=held.seq if held else None,
                    iat=held.iat if held else None,
                    received_at=held.received_at if held else None,
                    age=held.age(t) if held else None,
                    max_age=issuer.max_age,
                    stale=bool(self._stale_detail(iss, issuer.max_age, t))
                    or iss in self._revocations.awaiting,
                    cti_count=len(held.cti) if held else 0,
                    sub_count=len(held.sub) if held else 0,
                )
            )
        return out

    # -- signed commands ------------------------------------------------------------------
    def verify_command(self, raw: bytes) -> Command:
        """Verify a signed command and spend its ``request_id``. Raises ControlMessageError:
        ``malformed``, ``unknown_issuer`` (unknown signer), ``bad_signature``, ``wrong_site``,
        ``expired``, ``role_not_permitted`` (the signer may not give that command),
        ``nonce_reused`` (the request id was seen before)."""
        _, t = self._now()
        try:
            cmd = Command.verify(raw, self._signer_ring, site=self.site, now=t, skew=self._skew)
        except ControlMessageError as exc:
            # a command names its signer only by its key's kid: with a signer's key file
            # unusable, an unknown kid may be that signer's — the answer says so
            if exc.reason is Reason.UNKNOWN_ISSUER and self.unavailable_signers:
                names = ", ".join(sorted(self.unavailable_signers))
                raise ControlMessageError(
                    Reason.ISSUER_UNAVAILABLE,
                    f"{exc.detail}; the key of command signer(s) {names} cannot be used "
                    "(lockgw check-config)",
                ) from None
            raise
        allowed = self._signer_commands.get(cmd.signer or "")
        if allowed is not None and cmd.cmd not in allowed:
            raise ControlMessageError(
                Reason.ROLE_NOT_PERMITTED, f"signer {cmd.signer} may not send {cmd.cmd!r}"
            )
        before = self._refuse_exp_before
        if before is not None:
            if cmd.exp < before:
                raise ControlMessageError(
                    Reason.NONCE_REUSED,
                    "the record of used commands was lost; a command that could have been "
                    "sent before the gateway started is refused: send a new one",
                )
            if t - self._skew > before:
                self._refuse_exp_before = None  # every such command has expired by now
        used = self._used_commands
        if cmd.request_id in used:
            raise ControlMessageError(
                Reason.NONCE_REUSED, f"request_id {cmd.request_id!r} was used before"
            )
        horizon = t - self._skew
        for rid in [r for r, exp in used.items() if exp < horizon]:
            del used[rid]
        if len(used) >= _MAX_COMMANDS:
            raise ControlMessageError(Reason.RATE_LIMITED, "too many live commands")
        used[cmd.request_id] = cmd.exp
        self._save_commands()
        return cmd

    # -- held tokens ----------------------------------------------------------------------
    def hold_token(self, raw: bytes) -> TokenClaims:
        """Verify a token from the platform and keep it for presentation by ``cti``.
        Raises TokenError (malformed, unknown_issuer, bad_signature, wrong_site, expired,
        revoked)."""
        claims = verify_token(raw, self._issuer_ring)
        if claims.aud != self.site:
            raise TokenError(Reason.WRONG_SITE, f"token for site {claims.aud!r}")
        _, t = self._now()
        if t - self._skew > claims.exp:
            raise TokenError(Reason.EXPIRED, f"expired at {claims.exp}")
        if self._revocations.is_revoked(claims.iss, claims.cti, claims.sub):
            raise TokenError(Reason.REVOKED, f"revoked by {claims.iss}")
        for cti in [k for k, exp in self._held.items() if exp < t - self._skew]:
            self._drop_held(cti)
        limit = self.config.access.max_held_tokens
        while len(self._held) >= limit and claims.cti not in self._held:
            self._drop_held(min(self._held, key=self._held.__getitem__))
        self._state.write_bytes(self._state.held_dir / f"{claims.cti.hex()}.cwt", raw)
        self._held[claims.cti] = claims.exp
        self._held_who[claims.cti] = (claims.iss, claims.sub)
        return claims

    def _drop_held(self, cti: bytes) -> None:
        self._held.pop(cti, None)
        self._held_who.pop(cti, None)
        with contextlib.suppress(OSError):
            (self._state.held_dir / f"{cti.hex()}.cwt").unlink()

    def held_token(self, cti: bytes) -> bytes | None:
        if cti not in self._held:
            return None
        try:
            raw = (self._state.held_dir / f"{cti.hex()}.cwt").read_bytes()
        except OSError:
            return None
        return raw if len(raw) <= MAX_TOKEN else None

    # -- health ---------------------------------------------------------------------------
    def tokens_expiring(self, within: float) -> list[tuple[str, str, float]]:
        """For health: (iss, sub, exp) of each person whose newest token the site knows of
        — held here, or listed on the issuer's roster — expires within ``within`` seconds
        with none newer known, soonest first."""
        _, t = self._now()
        newest: dict[tuple[str, str], float] = {}

        def see(who: tuple[str, str], exp: float) -> None:
            if exp > newest.get(who, 0.0):
                newest[who] = exp

        for cti, exp in self._held.items():
            who = self._held_who.get(cti)
            if who is not None:
                see(who, float(exp))
        for h in self._rosters.held():
            for e in h.roster.entries:
                see((h.iss, e.sub), float("inf") if e.exp is None else float(e.exp))
        out = [(iss, sub, exp) for (iss, sub), exp in newest.items() if t < exp <= t + within]
        return sorted(out, key=lambda x: x[2])

    def state_notices(self) -> list[StateFallback]:
        """For health: every state file found missing or damaged at this start, with the
        safe side taken and whether it still restricts anything — and restrictions left
        in force from an earlier start (they are persisted, so a restart lifts nothing)."""
        t = self._now()[1]
        awaiting = sorted(self._revocations.awaiting)
        before = self._refuse_exp_before
        commands_in_force = before is not None and t - self._skew <= before
        roster_waits = sorted(self._rosters.awaiting)
        roster_text = (
            f"planned care of {', '.join(roster_waits)} is refused (not_on_roster) until "
            "each sends its roster again; emergency access still opens"
        )
        out: list[StateFallback] = []
        seen: set[str] = set()
        for fb in self.fallbacks:
            seen.add(fb.file)
            in_force = False
            text = fb.fallback
            if fb.file == "revocations.json" and fb.issuers:
                in_force = bool(awaiting)
                if in_force:
                    text = (
                        f"planned care of {', '.join(awaiting)} is refused (revocation_stale) "
                        "until each sends its revocation list again; emergency access still "
                        "opens"
                    )
                else:
                    text = "every lost revocation list has arrived again; no restriction left"
            elif fb.file == _ROSTERS_FILE and fb.issuers:
                in_force = bool(roster_waits) and self._roster_refuses
                if in_force:
                    text = roster_text
                elif roster_waits:
                    text = _LOST_ROSTER_FLAG
                else:
                    text = "every lost roster has arrived again; no restriction left"
            elif fb.file == _COMMANDS_FILE:
                in_force = commands_in_force
                if not in_force:
                    text = "every command that could have been sent before the loss has expired"
            issuers = awaiting if fb.file == "revocations.json" and in_force else fb.issuers
            if fb.file == _ROSTERS_FILE and fb.issuers:
                issuers = roster_waits
            out.append(replace(fb, fallback=text, in_force=in_force, issuers=issuers))
        if awaiting and "revocations.json" not in seen:
            out.append(
                StateFallback(
                    file="revocations.json",
                    problem="missing",
                    fallback=f"planned care of {', '.join(awaiting)} is refused "
                    "(revocation_stale) until each sends its revocation list again (lost at "
                    "an earlier start); emergency access still opens",
                    at=t,
                    issuers=awaiting,
                    in_force=True,
                )
            )
        if roster_waits and self._roster_refuses and _ROSTERS_FILE not in seen:
            out.append(
                StateFallback(
                    file=_ROSTERS_FILE,
                    problem="missing",
                    fallback=roster_text + " (lost at an earlier start)",
                    at=t,
                    issuers=roster_waits,
                    in_force=True,
                )
            )
        if commands_in_force and _COMMANDS_FILE not in seen:
            out.append(
                StateFallback(
                    file=_COMMANDS_FILE,
                    problem="missing",
                    fallback="remote commands that could have been sent before an earlier "
                    "loss of the used-command record are refused until they expire",
                    at=t,
                    until=before,
                    in_force=True,
                )
            )
        return out

    @property
    def state_problems(self) -> list[str]:
        """State files that could not be read at start (and were set aside)."""
        return list(self._state.problems)

    @property
    def state_write_failures(self) -> int:
        return self._state.write_failures
