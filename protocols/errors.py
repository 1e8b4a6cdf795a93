"""Every error lockgw raises on purpose, one tree under :class:`LockgwError`.

::

    LockgwError
    ├── ProtocolError            bytes that do not decode/verify (field: reason: Reason)
    │   ├── TokenError           a credential token (CONTRACT §2)
    │   ├── ControlMessageError  a signed command or revocation list (CONTRACT §5)
    │   └── FrameError           a phone frame, a GATT link frame, a device frame
    ├── AccessDenied             the access decision said no (field: reason: Reason)
    ├── ConfigError              the config file is wrong (field: problems: list[str])
    ├── KeyFileError             a key file is missing, unreadable or too open (field: path)
    ├── DeviceError              a lock or key safe (field: device_id)
    │   ├── DeviceUnavailable    cannot be reached in time (reason device_unavailable;
    │   │                        field: cause: Unreachable — not found, aborted, ...)
    │   ├── DeviceFailed         answered, but the action failed (reason device_failed)
    │   └── PairingError         pairing refused or broken
    │       └── PairingNotConfirmed  the device did not store it: its code was not
    │                                confirmed on the device (rejected, timed out)
    └── JournalError             the journal cannot write or read (disk full, corrupt)
        ├── JournalFull          the disk (or the journal's size limit) is full
        ├── JournalCorrupt       the database file is damaged or not a journal
        └── JournalForeign       the journal belongs to another site (data_dir is wrong)

Errors carry typed fields; code never has to parse a message string.
Messages meant for a person say what to do.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "AccessDenied",
    "ConfigError",
    "ControlMessageError",
    "DeviceError",
    "DeviceFailed",
    "DeviceUnavailable",
    "FrameError",
    "JournalCorrupt",
    "JournalError",
    "JournalForeign",
    "JournalFull",
    "KeyFileError",
    "LockgwError",
    "PairingError",
    "ProtocolError",
    "Reason",
    "TokenError",
    "Unreachable",
]


class Reason(StrEnum):
    """The result reasons of CONTRACT §3, exact strings."""

    OK = "ok"
    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_ISSUER = "unknown_issuer"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    WRONG_SITE = "wrong_site"
    WRONG_DOOR = "wrong_door"
    OUTSIDE_WINDOW = "outside_window"
    REVOKED = "revoked"
    BAD_PROOF = "bad_proof"
    NONCE_REUSED = "nonce_reused"
    ROLE_NOT_PERMITTED = "role_not_permitted"
    PURPOSE_NOT_PERMITTED = "purpose_not_permitted"
    ISSUER_NOT_CONSENTED = "issuer_not_consented"
    REVOCATION_STALE = "revocation_stale"
    RATE_LIMITED = "rate_limited"
    CLOCK_UNTRUSTED = "clock_untrusted"
    DEVICE_UNAVAILABLE = "device_unavailable"
    DEVICE_FAILED = "device_failed"
    #: an addition to CONTRACT §3: the issuer's current roster does not list the token
    #: and the site refuses such tokens (``access.roster_check = "refuse"``)
    NOT_ON_ROSTER = "not_on_roster"
    #: an addition to CONTRACT §3: the token's issuer (or the command's signer) is
    #: configured, but its key file cannot be used (missing, unreadable, not a key), so
    #: nothing it signed can be verified until it is fixed (``gateway.config.key_problems``)
    ISSUER_UNAVAILABLE = "issuer_unavailable"


class LockgwError(Exception):
    """Root of every error lockgw raises on purpose."""


class ProtocolError(LockgwError):
    """Bytes that do not decode or verify. ``reason`` says how it maps to CONTRACT §3."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class TokenError(ProtocolError):
    """A credential token is malformed, wrongly signed or unusable."""


class ControlMessageError(ProtocolError):
    """A signed command or revocation list is malformed or wrongly signed."""


class FrameError(ProtocolError):
    """A frame on a link (phone, loopback GATT, device) is malformed, too big or tampered."""

    def __init__(self, detail: str, reason: Reason = Reason.MALFORMED) -> None:
        super().__init__(reason, detail)


class AccessDenied(LockgwError):
    """The access decision refused; ``reason`` is the CONTRACT §3 string."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(f"{reason.value}{': ' + detail if detail else ''}")
        self.reason = reason
        self.detail = detail


class ConfigError(LockgwError):
    """The config is invalid; ``problems`` lists every problem in words a technician reads."""

    def __init__(self, path: str, problems: list[str]) -> None:
        super().__init__(f"{path}: " + "; ".join(problems))
        self.path = path
        self.problems = problems


class KeyFileError(LockgwError):
    """A key file is missing, unreadable, malformed or readable by others."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"key file {path}: {problem}")
        self.path = path
        self.problem = problem


class DeviceError(LockgwError):
    """Something went wrong with one device."""

    reason: Reason = Reason.DEVICE_FAILED

    def __init__(self, device_id: str, detail: str = "") -> None:
        super().__init__(f"device {device_id}: {detail or self.reason.value}")
        self.device_id = device_id
        self.detail = detail


class Unreachable(StrEnum):
    """Why a device could not be reached: every one is retried (capped backoff); the
    cause says what an installer looks at."""

    #: a wait ran out (the device or the link did not answer)
    NO_ANSWER = "no_answer"
    #: not seen in range, or gone from the Bluetooth stack's cache
    NOT_FOUND = "not_found"
    #: the Bluetooth stack aborted or refused the connection attempt (BlueZ: InProgress,
    #: le-connection-abort-by-local, no free connection slot)
    ABORTED = "aborted"
    #: an established link dropped
    LINK_LOST = "link_lost"
    #: the Bluetooth adapter is missing or powered off
    ADAPTER_MISSING = "adapter_missing"
    #: anything else the link layer reported
    OTHER = "other"


class DeviceUnavailable(DeviceError):
    """The device could not be reached (in time); ``cause`` says why."""

    reason = Reason.DEVICE_UNAVAILABLE

    def __init__(
        self, device_id: str, detail: str = "", cause: Unreachable = Unreachable.OTHER
    ) -> None:
        super().__init__(device_id, detail)
        self.cause = cause


class DeviceFailed(DeviceError):
    """The device answered but could not do what was asked (jammed, refused, bad state)."""

    reason = Reason.DEVICE_FAILED


class PairingError(DeviceError):
    """Pairing was refused by the device or its exchange was broken."""


class PairingNotConfirmed(PairingError):
    """The exchange was made, but the device did not store the pairing: nobody confirmed
    its code on the device in time, or it was rejected there."""


class JournalError(LockgwError):
    """The journal cannot be written or read (disk full, corrupt database, permissions)."""


class JournalFull(JournalError):
    """The journal cannot grow: the disk or its configured size limit is full."""


class JournalCorrupt(JournalError):
    """The journal's database file is damaged, or is not a lockgw journal."""


class JournalForeign(JournalError):
    """The journal belongs to another site: the config's ``data_dir`` points at another
    site's directory. Not a damage to repair: the gateway refuses to start."""
