"""The gateway's one TOML config file (CONTRACT §7), validated by pydantic.

Unknown keys are an error. Relative paths are relative to the config file.
:func:`load_config` returns a :class:`Config` or raises
:class:`protocols.errors.ConfigError` listing *every* problem in words a
technician understands; an unknown key or a bad value does not hide the problems
after it (the offending keys are set aside and the rest checked again).

Problems come in four kinds (``docs/install.md``):

- **core** (site, access, issuers, devices, ports and addresses): :func:`load_config`
  raises; ``lockgw run`` exits with EX_CONFIG (78) and systemd does not restart it
  into the same error;
- **key** (an issuer's or command signer's key file missing, unreadable, not an
  Ed25519 public key): :func:`load_config` keeps them in :attr:`Config.key_problems`;
  ``run`` starts without those keys (their carers are refused with
  ``issuer_unavailable``, health names them) — one organisation's broken file must not
  lock out everyone. Only when *no* key can be used is it a core problem
  (:func:`key_problems`);
- **start** (the data directory cannot be used): :func:`start_problems`; ``run``
  exits 78 too;
- **broker** (the ``[mqtt]`` section: its URL, TLS files, password file):
  :func:`load_config` keeps them in :attr:`Config.broker_problems` and gives the
  defaults; ``run`` starts *without* the broker link — the doors keep working
  offline, every event is kept for later, health says why — because a typo in the
  MQTT section must not lock a resident's carers out.

``lockgw check-config`` (:func:`check_config`) reports all four and exits 1 on any.
Files the config names are checked for type before they are read (a FIFO or
``/dev/zero`` is refused, never read), and secrets (TLS key, password file) must
not be readable by group or others.
"""

from __future__ import annotations

import copy
import os
import re
import stat
import tomllib
from datetime import date
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from protocols.errors import ConfigError

__all__ = [
    "MAX_CONFIG_BYTES",
    "AccessConfig",
    "BluetoothConfig",
    "CommandSignerConfig",
    "Config",
    "DeviceConfig",
    "HealthConfig",
    "IssuerConfig",
    "JournalConfig",
    "MqttConfig",
    "MqttTlsConfig",
    "PhoneLinkConfig",
    "SiteConfig",
    "VisitsConfig",
    "WebConfig",
    "check_config",
    "host_port",
    "key_problems",
    "load_config",
    "start_problems",
]

Role = str
Purpose = Literal["planned", "emergency"]


#: a config file larger than this is not one (and is not read to the end)
MAX_CONFIG_BYTES = 1024 * 1024


def host_port(value: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) → (host, port); ValueError in words."""
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{value!r} is not host:port, e.g. 127.0.0.1:47100")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or any(c.isspace() for c in host) or "/" in host:
        raise ValueError(f"{value!r}: {host!r} is not a host name or address")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{value!r}: the port must be a number from 1 to 65535, not {port!r}")
    return host, int(port)


def _host_port_or_none(v: str | None) -> str | None:
    if v:
        host_port(v)
    return v or None


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SiteConfig(_Section):
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    timezone: str = "Europe/Amsterdam"
    data_dir: Path = Path("/var/lib/lockgw")
    #: emergency-purpose tokens open outside their windows only while an alarm is
    #: raised for the site; set true to let them open outside windows at any time.
    emergency_outside_window_without_alarm: bool = False
    #: warn (``roster.over_limit``, the resident's page) when the issuers' rosters list
    #: more people than this who may enter (the CCV's advice for key-safe codes: at most
    #: five people); None = no warning
    max_people: int | None = Field(default=None, ge=1, le=10_000)
    #: the language of everything lockgw says to people here (the resident's page, audit
    #: show, devices, health): "nl" (Dutch, the default) or "en"
    language: Literal["nl", "en"] = "nl"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"unknown time zone {v!r} (use an IANA name like Europe/Amsterdam)"
            ) from exc
        return v


class MqttTlsConfig(_Section):
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure_skip_verify: bool = False


class MqttConfig(_Section):
    url: str = "mqtt://127.0.0.1:1883"
    client_id: str | None = None
    username: str | None = None
    password_file: Path | None = None
    keepalive: int = Field(default=30, ge=5, le=3600)
    protocol: Literal["5", "3.1.1"] = "5"
    tls: MqttTlsConfig | None = None
    #: first and last reconnect delay, seconds (capped, jittered backoff)
    reconnect_min: float = Field(default=0.5, gt=0)
    reconnect_max: float = Field(default=30.0, gt=0)
    #: publish Home Assistant MQTT discovery configs: read-only entities for every device
    #: (docs/homeassistant.md)
    homeassistant: bool = False
    #: MQTT 5 Maximum Packet Size the gateway announces on connect: the broker does not
    #: send it anything larger (the largest thing it needs is a 256 KiB revocation list
    #: or roster). Each message is checked against its kind's own limit again on arrival.
    max_packet_size: int = Field(default=300_000, ge=270_000, le=268_435_455)
    #: the topic prefix Home Assistant's MQTT integration listens on for discovery
    discovery_prefix: str = Field(
        default="homeassistant", min_length=1, pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$"
    )

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if not (v.startswith("mqtt://") or v.startswith("mqtts://")):
            raise ValueError("must start with mqtt:// or mqtts://, e.g. mqtt://127.0.0.1:1883")
        u = urlparse(v)
        try:
            port = u.port
        except ValueError:
            raise ValueError(
                f"{v!r}: the port must be a number from 1 to 65535"
            ) from None
        if port == 0 or not u.hostname:
            raise ValueError(f"{v!r} needs a host and a port from 1 to 65535 (or none)")
        return v


class PhoneLinkConfig(_Section):
    #: host:port of the TCP transport for simulators and tests; empty = off
    loopback: str | None = "127.0.0.1:47100"
    #: serve the exchange as a BLE GATT peripheral through BlueZ, on ``[bluetooth] adapter``
    ble: bool = False
    #: seconds a phone has for each step of the exchange
    step_timeout: float = Field(default=10.0, gt=0, le=60)
    #: seconds the phone waits at most for the device to confirm
    device_timeout: float = Field(default=5.0, gt=0, le=30)
    #: also accept the old ``lockgw-unlock-v1`` exchange (hello in the clear, gateway not
    #: authenticated): only while a site's phones migrate to v2; see protocols/README.md
    accept_v1: bool = False
    #: connections that have not sent their proof yet, at most; beyond it an idle or
    #: trickling one is closed to let the newcomer in (gateway/floods.py)
    max_pending: int = Field(default=64, ge=2, le=4096)
    #: the same, per source address: a flood from one address cannot fill the link
    max_pending_per_source: int = Field(default=16, ge=2, le=4096)
    #: pending connections at most, however young; beyond it the oldest idle one is
    #: closed at once. Each is a file descriptor: the daemon raises its soft file limit
    #: to fit them (up to the service's hard LimitNOFILE)
    max_connections: int = Field(default=2048, ge=2, le=16384)
    #: seconds over which floods are counted: connections closed to make room and
    #: malformed attempts are journaled as one row per source per interval, with a count
    flood_interval: float = Field(default=60.0, ge=1, le=3600)

    _loopback = field_validator("loopback")(_host_port_or_none)


class BluetoothConfig(_Section):
    """The BlueZ adapter the gateway uses: for the phone peripheral and for the drivers."""

    #: BlueZ's name of the adapter (``hciconfig`` / ``btmgmt info``; /org/bluez/<adapter> on D-Bus)
    adapter: str = "hci0"

    @field_validator("adapter")
    @classmethod
    def _adapter_name(cls, v: str) -> str:
        if re.fullmatch(r"hci[0-9]{1,3}", v) is None:
            raise ValueError(
                f"{v!r} is not a BlueZ adapter name; use hci0, hci1, ... (not a BLE address)"
            )
        return v


class AccessConfig(_Section):
    #: tolerated clock difference for nbf / exp, seconds
    skew_seconds: int = Field(default=60, ge=0, le=900)
    #: failed attempts per door within ``rate_window`` before ``rate_limited``
    rate_limit: int = Field(default=10, ge=1)
    rate_window: int = Field(default=60, ge=1)
    #: denials at a door within ``suspicious_window`` that raise access.suspicious
    suspicious_after: int = Field(default=5, ge=2)
    suspicious_window: int = Field(default=300, ge=10)
    #: what still opens while the clock cannot be trusted: "emergency" (default: care safety
    #: first, alarm responders still get in), "none" (burglary safety first) or "all"
    untrusted_clock_allows: Literal["none", "emergency", "all"] = "emergency"
    #: seconds a raised alarm stays raised when nobody clears it
    alarm_expiry: int = Field(default=2 * 3600, ge=60, le=7 * 24 * 3600)
    #: seconds a challenge nonce stays valid (CONTRACT §3: at most 30)
    nonce_ttl: int = Field(default=30, ge=1, le=30)
    #: tokens the gateway holds for presentation by cti (CONTRACT §4 credentials)
    max_held_tokens: int = Field(default=1000, ge=1, le=100_000)
    #: a token its issuer's current roster does not list: "flag" (granted, journaled with
    #: ``not_on_roster``) or "refuse" (planned care refused with ``not_on_roster``;
    #: emergency entries are granted and flagged). No roster from the issuer: no check.
    roster_check: Literal["flag", "refuse"] = "flag"
    #: seconds after a granted unlock (a phone or a remote opening) after which the lock is
    #: locked again when nobody opened the door (the lock reports its door closed); 0 = never.
    #: Counted from the journaled grant: an opening still waiting when the gateway stops or
    #: crashes is relocked after the restart (``gateway.relock``)
    relock_unused_after: int = Field(default=30, ge=0, le=3600)


class IssuerConfig(_Section):
    id: str = Field(min_length=1)
    #: the organisation's name as the resident knows it ("Thuiszorg West"); default: the id
    name: str | None = Field(default=None, min_length=1, max_length=80)
    public_key: Path
    roles: list[Role] = Field(min_length=1)
    purposes: list[Purpose] = Field(min_length=1)
    doors: list[str] = Field(min_length=1)
    #: refuse this issuer's planned-care tokens once its last revocation list is
    #: older than this many seconds (None = off)
    revocation_max_age: int | None = Field(default=None, gt=0)
    #: the resident's consent: first and last day (site's zone, inclusive); None = open
    consent_from: date | None = None
    consent_until: date | None = None
    #: the last day (site's zone, inclusive) this organisation's key is trusted: after
    #: it, what it signed is refused ``issuer_unavailable`` until the new key is
    #: configured; health warns ``[health] warn_days`` ahead. None: no end set
    key_valid_until: date | None = None
    #: the function-access matrix: role → purposes that role may use here. When set, a
    #: role missing from it is not permitted; when absent, every role in ``roles`` may
    #: use every purpose in ``purposes``.
    matrix: dict[Role, list[Purpose]] | None = None

    @property
    def title(self) -> str:
        """The name to show people."""
        return self.name or self.id

    def purposes_for(self, role: str) -> frozenset[str]:
        """The purposes ``role`` may use with this issuer (empty: role not permitted)."""
        if role not in self.roles:
            return frozenset()
        if self.matrix is None:
            return frozenset(self.purposes)
        return frozenset(self.matrix.get(role, ())) & frozenset(self.purposes)


class CommandSignerConfig(_Section):
    id: str = Field(min_length=1)
    public_key: Path
    #: commands this signer may give (default: all)
    commands: list[Literal["unlock", "unlatch", "lock", "open", "refresh", "alarm"]] | None = None


class DeviceConfig(_Section):
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    door: str = Field(min_length=1)
    driver: str = Field(min_length=1)
    address: str = Field(min_length=1)

    @field_validator("address")
    @classmethod
    def _loopback_address(cls, v: str) -> str:
        if v.startswith("loopback://"):
            host_port(v.removeprefix("loopback://"))
        return v

    #: "keep" = stay connected: the default, because an unlock is then one link round trip
    #: (p50 64 ms at BLE timing vs 490 ms connecting on demand, bench/device_connection.py) and
    #: door / jam / key notifications arrive at once instead of at the next poll;
    #: "on_demand" = connect per command and per health poll (docs/devices.md §5).
    #: Left out, the driver's default applies: "keep", except "on_demand" for a Nuki
    #: (battery life; woken by its advertisement, docs/nuki.md)
    connection: Literal["keep", "on_demand"] = "keep"
    battery_low: int = Field(default=20, ge=1, le=99)
    battery_critical: int = Field(default=10, ge=1, le=99)
    #: a device quiet this many seconds is polled (a refresh of its state); left out, the
    #: driver's default: 60 s, a Nuki 1800 s (its beacon says when it has news)
    health_interval: float = Field(default=60.0, gt=0)
    #: seconds the door may stand open before door.left_open
    door_left_open_after: float = Field(default=300.0, gt=0)
    #: seconds after a compartment opening before keysafe.key_not_returned
    key_not_returned_after: float = Field(default=30 * 60.0, gt=0)
    #: seconds every device wait may take (connect, command, refresh) before device_unavailable
    command_timeout: float = Field(default=5.0, gt=0, le=30)
    #: first and last reconnect delay, seconds (capped, jittered backoff)
    reconnect_min: float = Field(default=1.0, gt=0)
    reconnect_max: float = Field(default=60.0, gt=0)
    #: driver-specific settings (validated by the driver)
    options: dict[str, Any] = Field(default_factory=dict)


class JournalConfig(_Section):
    retention_days: int = Field(default=365, ge=1)
    #: optional ceiling on the journal file, bytes (None: the disk is the limit); when
    #: reached, new events raise JournalFull as on a full disk (docs/audit.md)
    max_bytes: int | None = Field(default=None, ge=1024 * 1024)
    #: scheduling priority (nice value) of the journal's writer process, where allowed
    #: (root, or the systemd unit's LimitNICE=); every unlock waits for its commit
    writer_nice: int = Field(default=-10, ge=-20, le=0)
    #: how often the journal's head is signed with the site key while events are added,
    #: seconds (also at start and at stop; docs/audit.md "A tail that cannot be cut")
    head_interval: float = Field(default=60.0, ge=1.0, le=3600.0)


class VisitsConfig(_Section):
    """How a granted entry is followed until it ends (``gateway.visits``)."""

    #: end the visit with ``door_not_opened`` when nobody opened the door within this, seconds
    no_entry_after: int = Field(default=120, ge=5)
    #: end it with ``left_unlocked`` when the door is shut but not relocked within this
    relock_after: int = Field(default=300, ge=5)
    #: end it with ``visit_not_closed`` after this long, whatever happened
    max_duration: int = Field(default=4 * 3600, ge=60)


class WebConfig(_Section):
    """The resident's page (``gateway.web``): read only, off unless enabled."""

    enabled: bool = False
    #: where to listen: the hub's address on the home network ("0.0.0.0": every address)
    address: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    #: the address people type, for ``lockgw resident-link`` (default: from address and port)
    public_url: str | None = None
    #: how long a device stays logged in after opening a link, days
    session_days: int = Field(default=30, ge=1, le=365)
    #: serve HTTPS with this certificate (PEM; key_file when the key is apart)
    cert_file: Path | None = None
    key_file: Path | None = None

    @field_validator("public_url")
    @classmethod
    def _http(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://, e.g. http://hub.local:8080")
        return v


class HealthConfig(_Section):
    #: host:port for a Prometheus text endpoint on loopback; empty = off
    metrics: str | None = None
    #: seconds between looks at the gateway's health: the snapshot for ``lockgw health``,
    #: the retained status and the ``health.warning`` / ``health.cleared`` events
    interval: float = Field(default=5.0, ge=0.2, le=60)
    #: warn (``consent.ending``) this many days before the resident's consent for an
    #: organisation ends (``consent_until``)
    warn_days: int = Field(default=14, ge=0, le=365)
    #: warn (``token.expiring``) this many hours before a person's newest token the site
    #: knows of (held here, or on the organisation's roster) expires with none newer
    token_warn_hours: int = Field(default=24, ge=0, le=24 * 90)

    _metrics = field_validator("metrics")(_host_port_or_none)


class Config(_Section):
    site: SiteConfig
    mqtt: MqttConfig = MqttConfig()
    phone_link: PhoneLinkConfig = PhoneLinkConfig()
    bluetooth: BluetoothConfig = BluetoothConfig()
    access: AccessConfig = AccessConfig()
    journal: JournalConfig = JournalConfig()
    visits: VisitsConfig = VisitsConfig()
    health: HealthConfig = HealthConfig()
    web: WebConfig = WebConfig()
    issuers: list[IssuerConfig] = Field(default_factory=list)
    command_signers: list[CommandSignerConfig] = Field(default_factory=list)
    devices: list[DeviceConfig] = Field(default_factory=list)
    #: where the file was loaded from (set by load_config, not a TOML key)
    source: Path | None = Field(default=None, exclude=True)
    #: what is wrong with the [mqtt] section (set by load_config, not a TOML key): when
    #: not empty, ``mqtt`` holds the defaults and the daemon runs without the broker
    broker_problems: list[str] = Field(default_factory=list, exclude=True)
    #: issuers' and command signers' key files that cannot be used (set by load_config,
    #: not a TOML key; :func:`key_problems`): the daemon runs without those keys
    key_problems: list[str] = Field(default_factory=list, exclude=True)

    def issuer(self, iss: str) -> IssuerConfig | None:
        return next((i for i in self.issuers if i.id == iss), None)

    def device(self, device_id: str) -> DeviceConfig | None:
        return next((d for d in self.devices if d.id == device_id), None)


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "(top level)"


def _problems_from(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        where = _loc(tuple(err["loc"]))
        if err["type"] == "extra_forbidden":
            problems.append(f"{where}: unknown key (check the spelling; see config/example.toml)")
        elif err["type"] == "missing":
            problems.append(f"{where}: required but missing")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {msg}")
    return problems


def _resolve(base: Path, p: Path) -> Path:
    return p if p.is_absolute() else (base / p)


def _semantic_problems(cfg: Config) -> list[str]:
    """Cross-field checks pydantic cannot express, and the files the config names."""
    problems: list[str] = []
    for section, ids in (
        ("issuers", [i.id for i in cfg.issuers]),
        ("command_signers", [s.id for s in cfg.command_signers]),
        ("devices", [d.id for d in cfg.devices]),
    ):
        seen: set[str] = set()
        for n, ident in enumerate(ids):
            if ident in seen:
                problems.append(f"{section}[{n}].id: {ident!r} appears twice")
            seen.add(ident)
    for n, iss in enumerate(cfg.issuers):
        if iss.consent_from and iss.consent_until and iss.consent_until < iss.consent_from:
            problems.append(
                f"issuers[{n}] ({iss.id}): consent_until ({iss.consent_until}) is before "
                f"consent_from ({iss.consent_from})"
            )
        for role, purposes in (iss.matrix or {}).items():
            if role not in iss.roles:
                problems.append(
                    f"issuers[{n}].matrix: role {role!r} is not in this issuer's roles "
                    f"{iss.roles}; add it there or remove it from the matrix"
                )
            for p in purposes:
                if p not in iss.purposes:
                    problems.append(
                        f"issuers[{n}].matrix.{role}: purpose {p!r} is not in this issuer's "
                        f"purposes {iss.purposes}"
                    )
    for n, dev in enumerate(cfg.devices):
        if dev.battery_critical >= dev.battery_low:
            problems.append(
                f"devices[{n}]: battery_critical ({dev.battery_critical}) must be below "
                f"battery_low ({dev.battery_low})"
            )
        if dev.reconnect_min > dev.reconnect_max:
            problems.append(
                f"devices[{n}]: reconnect_min ({dev.reconnect_min:g}) must not exceed "
                f"reconnect_max ({dev.reconnect_max:g})"
            )
    return problems


def key_problems(cfg: Config) -> tuple[list[str], bool]:
    """Every issuer's and command signer's key file that cannot be used, in words, and
    whether that is fatal: only when *no* key at all can be used (no issuer and no
    command signer) — then the gateway could open for nobody. Otherwise ``run`` starts
    without the keys it cannot use: those issuers' carers (those signers' commands) are
    refused with ``issuer_unavailable`` and health names them, while everyone else's
    carers get in (care-safety first: one organisation's broken key file must not lock
    out the others')."""
    from gateway.keys import load_public_key  # local: keys imports config-free helpers only

    key_files = [
        (f"issuers[{n}].public_key", f"issuer {i.id!r}", i.public_key)
        for n, i in enumerate(cfg.issuers)
    ]
    key_files += [
        (f"command_signers[{n}].public_key", f"command signer {s.id!r}", s.public_key)
        for n, s in enumerate(cfg.command_signers)
    ]
    problems: list[str] = []
    for where, who, path in key_files:
        try:
            load_public_key(path)
        except Exception as exc:  # every problem is reported, never raised
            problems.append(f"{where} ({who}): {exc}")
    fatal = bool(key_files) and len(problems) == len(key_files)
    return problems, fatal


_NOT_TOML_KEYS = ("source", "broker_problems", "key_problems")


def _read_text(path: Path) -> str:
    """The config file's text; never blocks on a FIFO or a device, never reads more
    than :data:`MAX_CONFIG_BYTES`. Raises ConfigError."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ConfigError(str(path), ["file not found"]) from None
    except PermissionError:
        raise ConfigError(str(path), ["cannot read the file (permission denied)"]) from None
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot open the file ({exc.strerror})"]) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise ConfigError(str(path), ["is a directory; give the config file (lockgw.toml)"])
        raise ConfigError(str(path), ["is not a regular file (a device or a pipe?)"])
    with os.fdopen(fd, "rb") as f:
        try:
            raw = f.read(MAX_CONFIG_BYTES + 1)
        except OSError as exc:
            raise ConfigError(str(path), [f"cannot read the file ({exc.strerror})"]) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(str(path), [f"larger than {MAX_CONFIG_BYTES} bytes: not a config file"])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(str(path), ["not UTF-8 text"]) from None


_DROP = object()


def _set_aside(data: Any, loc: tuple[int | str, ...]) -> bool:
    """Remove what ``loc`` names from ``data`` (a list item is marked, then purged)."""
    node = data
    for part in loc[:-1]:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return False
    last = loc[-1]
    try:
        if isinstance(node, dict) and last in node:
            del node[last]
            return True
        if isinstance(node, list) and isinstance(last, int) and last < len(node):
            node[last] = _DROP
            return True
    except TypeError:
        return False
    return False


def _purge(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _purge(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_purge(v) for v in data if v is not _DROP]
    return data


def _validate(raw: dict[str, Any]) -> tuple[Config | None, list[str], list[str]]:
    """Validate, and on errors set the offending keys aside and validate again, so that
    one unknown key or bad value does not hide the rest. Returns (the config of what
    was left, or None; core problems; broker problems — those in ``[mqtt]``, which is
    then left at its defaults)."""
    data = copy.deepcopy(raw)
    core: list[str] = []
    broker: list[str] = []
    for key in _NOT_TOML_KEYS:
        if key in data:
            del data[key]
            core.append(f"{key}: unknown key (check the spelling; see config/example.toml)")
    for _ in range(10):
        try:
            return Config.model_validate(data), core, broker
        except ValidationError as exc:
            errors = exc.errors()
            progress = False
            for err, problem in zip(errors, _problems_from(exc), strict=True):
                loc = tuple(err["loc"])
                if loc and loc[0] == "mqtt":
                    if problem not in broker:
                        broker.append(problem)
                    progress |= _set_aside(data, ("mqtt",))
                    continue
                if problem not in core:
                    core.append(problem)
                # a missing key: the table that lacks it goes; otherwise the key itself
                target = loc[:-1] if err["type"] == "missing" else loc
                if target:
                    progress |= _set_aside(data, target)
            data = _purge(data)
            if not progress:
                return None, core, broker
    return None, core, broker


def _file_problem(path: Path, *, secret: bool, what: str) -> str | None:
    """Is ``path`` a readable regular file (and, for a secret, the owner's only)?"""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return f"{path}: not found"
    except OSError as exc:
        return f"{path}: cannot be read ({exc.strerror})"
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(st.st_mode):
        return f"{path}: not a regular file, not a {what}"
    mode = stat.S_IMODE(st.st_mode)
    if secret and mode & 0o077:
        return f"{path}: readable by others (mode {mode:04o}); run chmod 600 {path}"
    return None


def _broker_file_problems(cfg: Config) -> list[str]:
    mqtt = cfg.mqtt
    problems: list[str] = []
    tls = mqtt.tls
    files: list[tuple[str, Path | None, bool, str]] = [
        ("mqtt.password_file", mqtt.password_file, True, "password file"),
    ]
    if tls is not None:
        files += [
            ("mqtt.tls.ca_file", tls.ca_file, False, "CA certificate"),
            ("mqtt.tls.cert_file", tls.cert_file, False, "certificate"),
            ("mqtt.tls.key_file", tls.key_file, True, "private key"),
        ]
        if not mqtt.url.startswith("mqtts://"):
            problems.append(
                "mqtt.tls: set, but the url is mqtt:// (no TLS); use mqtts:// or remove [mqtt.tls]"
            )
        if tls.key_file is not None and tls.cert_file is None:
            problems.append("mqtt.tls.key_file: given without cert_file")
    for where, path, secret, what in files:
        if path is not None and (problem := _file_problem(path, secret=secret, what=what)):
            problems.append(f"{where}: {problem}")
    return problems


def _web_file_problems(cfg: Config) -> list[str]:
    """The resident's page's certificate and key, when it serves HTTPS (check-config
    only: what ``run`` does with them is the page's business, ``gateway.web``)."""
    web = cfg.web
    problems: list[str] = []
    for where, path, secret, what in (
        ("web.cert_file", web.cert_file, False, "certificate"),
        ("web.key_file", web.key_file, True, "private key"),
    ):
        if web.enabled and path is not None and (
            problem := _file_problem(path, secret=secret, what=what)
        ):
            problems.append(f"{where}: {problem}")
    return problems


def start_problems(cfg: Config) -> list[str]:
    """What stops ``lockgw run`` before it starts: a data directory that is not a
    directory or that this user cannot write. One that does not exist yet is fine when
    it can be a directory (systemd's ``StateDirectory=`` makes it at the first start,
    owned by the service's user, so whether this user could create it says nothing)."""
    data_dir = cfg.site.data_dir
    if data_dir.exists() or data_dir.is_symlink():
        if not data_dir.is_dir():
            return [f"site.data_dir: {data_dir} exists and is not a directory"]
        if not os.access(data_dir, os.W_OK | os.X_OK):
            return [f"site.data_dir: {data_dir} is not writable by this user"]
    parent = data_dir.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return [f"site.data_dir: {data_dir} cannot be created: {parent} is not a directory"]
    return []


def _resolved(cfg: Config, path: Path) -> Config:
    base = path.resolve().parent
    site = cfg.site.model_copy(update={"data_dir": _resolve(base, cfg.site.data_dir)})
    issuers = [
        i.model_copy(update={"public_key": _resolve(base, i.public_key)}) for i in cfg.issuers
    ]
    signers = [
        s.model_copy(update={"public_key": _resolve(base, s.public_key)})
        for s in cfg.command_signers
    ]
    tls = cfg.mqtt.tls
    if tls is not None:
        tls = tls.model_copy(
            update={
                k: _resolve(base, v)
                for k in ("ca_file", "cert_file", "key_file")
                if (v := getattr(tls, k)) is not None
            }
        )
    web = cfg.web.model_copy(
        update={
            k: _resolve(base, v)
            for k in ("cert_file", "key_file")
            if (v := getattr(cfg.web, k)) is not None
        }
    )
    pw = cfg.mqtt.password_file
    mqtt = cfg.mqtt.model_copy(
        update={"tls": tls, "password_file": _resolve(base, pw) if pw is not None else None}
    )
    return cfg.model_copy(
        update={
            "site": site,
            "issuers": issuers,
            "command_signers": signers,
            "mqtt": mqtt,
            "web": web,
            "source": path.resolve(),
        }
    )


def _load(path: Path) -> tuple[Config | None, list[str], list[str]]:
    """(config or None, core problems, broker problems)."""
    text = _read_text(path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [f"not valid TOML: {exc}"]) from None
    cfg, core, broker = _validate(raw)
    if cfg is None:
        return None, core, broker
    cfg = _resolved(cfg, path)
    core += [p for p in _semantic_problems(cfg) if p not in core]
    keys, fatal = key_problems(cfg)
    if fatal:  # said on the first one: every line names its file
        first = f"{keys[0]} (and no other issuer's or signer's key can be used either)"
        core += [first, *keys[1:]]
    elif keys:
        cfg = cfg.model_copy(update={"key_problems": keys})
    broker += _broker_file_problems(cfg)
    if broker:
        cfg = cfg.model_copy(update={"mqtt": MqttConfig(), "broker_problems": broker})
    return cfg, core, broker


def load_config(path: str | Path) -> Config:
    """Read, validate and resolve a config file; raise ConfigError with every core
    problem. Broker problems do not raise: they are in ``broker_problems``."""
    path = Path(path)
    cfg, core, _ = _load(path)
    if core or cfg is None:
        raise ConfigError(str(path), core)
    return cfg


def check_config(path: str | Path) -> tuple[Config | None, list[str]]:
    """Everything ``lockgw run`` needs, checked at once: (the config when it loads, every
    problem — core, key, broker and start — in words). Raises nothing but ConfigError for
    a file that cannot be read or parsed at all."""
    path = Path(path)
    cfg, core, broker = _load(path)
    problems = core + broker
    if cfg is not None:
        problems += cfg.key_problems + start_problems(cfg) + _web_file_problems(cfg)
        if cfg.site.data_dir.is_dir():
            # not a reason for run to stop (it moves a damaged key aside), but the
            # installer should know before the platform hears that the key changed
            from gateway.site_keys import problems as site_key_problems

            problems += site_key_problems(cfg.site.data_dir)
    return (cfg if not core else None), problems
