"""The loopback GATT transport: GATT over a TCP stream, for simulators and tests.

A *central* (the gateway's bleak backend, ``drivers/loopback``) talks to a *peripheral*
(a simulator's GATT server, ``simulators/gatt_server.py``). Each frame is a 4-byte
big-endian length, then one CBOR map with a text key ``"t"`` naming its type::

    central → peripheral                         peripheral → central
    {"t":"scan"}                                 {"t":"adv","name","uuids","mfr"}   then close
    {"t":"connect","v":1}                        {"t":"hello","v":1,"name","mtu"}
    {"t":"discover","id"}                        {"t":"services","id","s":[service…]}
    {"t":"read","id","h"}                        {"t":"value","id","v"}
    {"t":"write","id","h","v"}                   {"t":"ok","id"}
    {"t":"write_cmd","h","v"}                    (no answer: write without response)
    {"t":"subscribe","id","h"}                   {"t":"ok","id"}
    {"t":"unsubscribe","id","h"}                 {"t":"ok","id"}
                                                 {"t":"error","id","code","msg"}  (ATT error)
                                                 {"t":"notify","h","v"}
    {"t":"disconnect","reason"}                  {"t":"disconnect","reason"}

``id`` is the central's request number (echoed in the answer), ``h`` an attribute handle,
``v`` an attribute value (at most 512 bytes, as in ATT), ``code`` an ATT error code.
A service is ``{"u": uuid, "h": handle, "c": [{"u", "h", "p": GATT property bits,
"d": [{"u", "h"}]}]}``; UUIDs are lower-case 128-bit text.

Decoding is strict: unknown types or keys, wrong types, out-of-range numbers and
oversize frames raise :class:`FrameError`; a frame of the wrong direction is refused by
:func:`decode_from_central` / :func:`decode_from_peripheral`. Pure: bytes in, values out.
"""

from __future__ import annotations

import io
import re
import struct
import uuid as _uuid
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from typing import Any, Final

import cbor2

from protocols.errors import FrameError

__all__ = [
    "BLUETOOTH_BASE_UUID",
    "MAX_FRAME",
    "MAX_VALUE",
    "PROTOCOL_VERSION",
    "SCHEME",
    "Advertisement",
    "AttError",
    "CentralFrame",
    "CharacteristicDef",
    "Connect",
    "DescriptorDef",
    "Disconnect",
    "Discover",
    "ErrorReply",
    "FrameBuffer",
    "Hello",
    "Notification",
    "Ok",
    "PeripheralFrame",
    "Property",
    "Read",
    "Scan",
    "ServiceDef",
    "Services",
    "Subscribe",
    "Unsubscribe",
    "Value",
    "Write",
    "WriteCommand",
    "decode_from_central",
    "decode_from_peripheral",
    "encode",
    "normalize_uuid",
    "pack",
    "parse_address",
]

PROTOCOL_VERSION: Final = 1
SCHEME: Final = "loopback://"
#: one frame, length prefix excluded (a service table of 128 characteristics fits)
MAX_FRAME: Final = 16384
#: an attribute value, as ATT allows (long reads / writes)
MAX_VALUE: Final = 512
MAX_ID: Final = 2**32 - 1
MAX_HANDLE: Final = 0xFFFF
MAX_SERVICES: Final = 32
MAX_CHARACTERISTICS: Final = 128
MAX_DESCRIPTORS: Final = 8
MAX_ADV_UUIDS: Final = 16
MAX_MFR_ENTRIES: Final = 8
MAX_MFR_DATA: Final = 64
MIN_MTU: Final = 23
MAX_MTU: Final = 517
_MAX_TEXT: Final = 64
_MAX_MSG: Final = 200
_LEN = struct.Struct(">I")

BLUETOOTH_BASE_UUID: Final = "0000{:04x}-0000-1000-8000-00805f9b34fb"
_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class Property(IntFlag):
    """GATT characteristic property bits (Core spec Vol 3 Part G 3.3.1.1)."""

    BROADCAST = 0x01
    READ = 0x02
    WRITE_WITHOUT_RESPONSE = 0x04
    WRITE = 0x08
    NOTIFY = 0x10
    INDICATE = 0x20
    AUTHENTICATED_SIGNED_WRITES = 0x40
    EXTENDED_PROPERTIES = 0x80


_ALL_PROPERTIES: Final = 0xFF


class AttError(IntEnum):
    """ATT error codes a peripheral answers with (Core spec Vol 3 Part F 3.4.1.1)."""

    INVALID_HANDLE = 0x01
    READ_NOT_PERMITTED = 0x02
    WRITE_NOT_PERMITTED = 0x03
    INVALID_PDU = 0x04
    INSUFFICIENT_AUTHENTICATION = 0x05
    REQUEST_NOT_SUPPORTED = 0x06
    INSUFFICIENT_AUTHORIZATION = 0x08
    ATTRIBUTE_NOT_FOUND = 0x0A
    INVALID_ATTRIBUTE_VALUE_LENGTH = 0x0D
    UNLIKELY_ERROR = 0x0E
    INSUFFICIENT_RESOURCES = 0x11
    VALUE_NOT_ALLOWED = 0x13
    WRITE_REQUEST_REJECTED = 0xFC
    CCCD_IMPROPERLY_CONFIGURED = 0xFD
    PROCEDURE_ALREADY_IN_PROGRESS = 0xFE
    OUT_OF_RANGE = 0xFF


def normalize_uuid(value: str | int) -> str:
    """A 16-/32-bit number or UUID text → lower-case 128-bit text; ``ValueError`` otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= 0xFFFFFFFF:
            raise ValueError(f"a short UUID is 16 or 32 bits, not {value:#x}")
        return f"{value:08x}-0000-1000-8000-00805f9b34fb"
    if isinstance(value, str):
        text = value.strip().lower()
        if re.fullmatch(r"[0-9a-f]{4}|[0-9a-f]{8}", text):
            return normalize_uuid(int(text, 16))
        return str(_uuid.UUID(text))
    raise ValueError(f"not a UUID: {value!r}")


def parse_address(address: str) -> tuple[str, int]:
    """``loopback://host:port`` → ``(host, port)``; ``ValueError`` saying what is wrong."""
    if not address.startswith(SCHEME):
        raise ValueError(f"{address!r} is not a loopback address ({SCHEME}host:port)")
    rest = address[len(SCHEME) :]
    host, sep, port_text = rest.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{address!r}: expected {SCHEME}host:port with a port 1..65535")
    return host, int(port_text)


# -- the GATT table ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DescriptorDef:
    uuid: str
    handle: int


@dataclass(frozen=True, slots=True)
class CharacteristicDef:
    uuid: str
    handle: int
    properties: int
    descriptors: tuple[DescriptorDef, ...] = ()


@dataclass(frozen=True, slots=True)
class ServiceDef:
    uuid: str
    handle: int
    characteristics: tuple[CharacteristicDef, ...] = ()


# -- frames, central → peripheral ------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Scan:
    def to_map(self) -> dict[str, Any]:
        return {"t": "scan"}


@dataclass(frozen=True, slots=True)
class Connect:
    version: int = PROTOCOL_VERSION

    def to_map(self) -> dict[str, Any]:
        return {"t": "connect", "v": self.version}


@dataclass(frozen=True, slots=True)
class Discover:
    id: int

    def to_map(self) -> dict[str, Any]:
        return {"t": "discover", "id": self.id}


@dataclass(frozen=True, slots=True)
class Read:
    id: int
    handle: int

    def to_map(self) -> dict[str, Any]:
        return {"t": "read", "id": self.id, "h": self.handle}


@dataclass(frozen=True, slots=True)
class Write:
    """Write with response."""

    id: int
    handle: int
    value: bytes

    def to_map(self) -> dict[str, Any]:
        return {"t": "write", "id": self.id, "h": self.handle, "v": self.value}


@dataclass(frozen=True, slots=True)
class WriteCommand:
    """Write without response: never answered, not even with an error."""

    handle: int
    value: bytes

    def to_map(self) -> dict[str, Any]:
        return {"t": "write_cmd", "h": self.handle, "v": self.value}


@dataclass(frozen=True, slots=True)
class Subscribe:
    id: int
    handle: int

    def to_map(self) -> dict[str, Any]:
        return {"t": "subscribe", "id": self.id, "h": self.handle}


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    id: int
    handle: int

    def to_map(self) -> dict[str, Any]:
        return {"t": "unsubscribe", "id": self.id, "h": self.handle}


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Either side ends the link on purpose; the other closes the stream."""

    reason: str = "disconnect"

    def to_map(self) -> dict[str, Any]:
        return {"t": "disconnect", "reason": self.reason}


# -- frames, peripheral → central ------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Advertisement:
    name: str
    service_uuids: tuple[str, ...] = ()
    manufacturer_data: dict[int, bytes] = field(default_factory=dict)

    def to_map(self) -> dict[str, Any]:
        return {
            "t": "adv",
            "name": self.name,
            "uuids": list(self.service_uuids),
            "mfr": dict(self.manufacturer_data),
        }


@dataclass(frozen=True, slots=True)
class Hello:
    name: str
    mtu: int
    version: int = PROTOCOL_VERSION

    def to_map(self) -> dict[str, Any]:
        return {"t": "hello", "v": self.version, "name": self.name, "mtu": self.mtu}


@dataclass(frozen=True, slots=True)
class Services:
    id: int
    services: tuple[ServiceDef, ...]

    def to_map(self) -> dict[str, Any]:
        return {
            "t": "services",
            "id": self.id,
            "s": [
                {
                    "u": s.uuid,
                    "h": s.handle,
                    "c": [
                        {
                            "u": c.uuid,
                            "h": c.handle,
                            "p": c.properties,
                            "d": [{"u": d.uuid, "h": d.handle} for d in c.descriptors],
                        }
                        for c in s.characteristics
                    ],
                }
                for s in self.services
            ],
        }


@dataclass(frozen=True, slots=True)
class Value:
    id: int
    value: bytes

    def to_map(self) -> dict[str, Any]:
        return {"t": "value", "id": self.id, "v": self.value}


@dataclass(frozen=True, slots=True)
class Ok:
    id: int

    def to_map(self) -> dict[str, Any]:
        return {"t": "ok", "id": self.id}


@dataclass(frozen=True, slots=True)
class ErrorReply:
    id: int
    code: int
    message: str = ""

    def to_map(self) -> dict[str, Any]:
        return {"t": "error", "id": self.id, "code": self.code, "msg": self.message}


@dataclass(frozen=True, slots=True)
class Notification:
    handle: int
    value: bytes

    def to_map(self) -> dict[str, Any]:
        return {"t": "notify", "h": self.handle, "v": self.value}


CentralFrame = (
    Scan | Connect | Discover | Read | Write | WriteCommand | Subscribe | Unsubscribe | Disconnect
)
PeripheralFrame = (
    Advertisement | Hello | Services | Value | Ok | ErrorReply | Notification | Disconnect
)


# -- encoding -------------------------------------------------------------------------------
def encode(frame: CentralFrame | PeripheralFrame) -> bytes:
    """CBOR of one frame (no length prefix). Values are checked as strictly as on decode."""
    m = frame.to_map()
    # round-trip through the strict decoder's field checks so nothing invalid leaves
    _check(m)
    data: bytes = cbor2.dumps(m)
    if len(data) > MAX_FRAME:
        raise FrameError(f"frame of {len(data)} bytes exceeds {MAX_FRAME}")
    return data


def pack(frame: CentralFrame | PeripheralFrame) -> bytes:
    """Length prefix and CBOR of one frame, ready for the stream."""
    body = encode(frame)
    return _LEN.pack(len(body)) + body


class FrameBuffer:
    """Incremental parser of the length-prefixed stream: ``feed(bytes)``, then ``next_frame()``.

    A declared length over :data:`MAX_FRAME` (or zero) raises :class:`FrameError` at once,
    before the body arrives, so the stream can be closed without buffering it.
    """

    HEADER: Final = _LEN.size

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data

    @staticmethod
    def body_length(header: bytes) -> int:
        """Length declared by a 4-byte header; refuses zero and oversize."""
        (n,) = _LEN.unpack(header)
        if not 0 < n <= MAX_FRAME:
            raise FrameError(f"declared frame length {n} is not within 1..{MAX_FRAME}")
        return int(n)

    def next_frame(self) -> bytes | None:
        if len(self._buf) < _LEN.size:
            return None
        n = self.body_length(bytes(self._buf[: _LEN.size]))
        if len(self._buf) < _LEN.size + n:
            return None
        body = bytes(self._buf[_LEN.size : _LEN.size + n])
        del self._buf[: _LEN.size + n]
        return body


# -- strict decoding --------------------------------------------------------------------------
def _only(m: dict[Any, Any], keys: set[str]) -> None:
    extra = set(m) - keys
    missing = keys - set(m)
    if extra:
        raise FrameError(f"unexpected keys {sorted(map(repr, extra))}")
    if missing:
        raise FrameError(f"missing keys {sorted(missing)}")


def _int(m: dict[Any, Any], key: str, lo: int, hi: int) -> int:
    v = m.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise FrameError(f"{key!r} must be an integer in {lo}..{hi}")
    return v


def _text(m: dict[Any, Any], key: str, limit: int, *, empty: bool = False) -> str:
    v = m.get(key)
    if not isinstance(v, str) or not (0 if empty else 1) <= len(v) <= limit:
        raise FrameError(f"{key!r} must be text of {0 if empty else 1}..{limit} characters")
    return v


def _value(m: dict[Any, Any], key: str = "v") -> bytes:
    v = m.get(key)
    if not isinstance(v, bytes) or len(v) > MAX_VALUE:
        raise FrameError(f"{key!r} must be a byte string of at most {MAX_VALUE} bytes")
    return v


def _uuid_text(v: Any) -> str:
    if not isinstance(v, str) or not _UUID_RE.match(v):
        raise FrameError("a UUID must be lower-case 128-bit text (xxxxxxxx-xxxx-…)")
    return v


def _list(m: dict[Any, Any], key: str, limit: int) -> list[Any]:
    v = m.get(key)
    if not isinstance(v, list) or len(v) > limit:
        raise FrameError(f"{key!r} must be a list of at most {limit} items")
    return v


def _services(items: list[Any]) -> tuple[ServiceDef, ...]:
    services: list[ServiceDef] = []
    handles: set[int] = set()
    n_chars = 0

    def handle(m: dict[Any, Any]) -> int:
        h = _int(m, "h", 1, MAX_HANDLE)
        if h in handles:
            raise FrameError(f"handle {h} appears twice")
        handles.add(h)
        return h

    for s in items:
        if not isinstance(s, dict):
            raise FrameError("a service is a map")
        _only(s, {"u", "h", "c"})
        s_uuid, s_handle = _uuid_text(s["u"]), handle(s)
        chars: list[CharacteristicDef] = []
        for c in _list(s, "c", MAX_CHARACTERISTICS):
            n_chars += 1
            if n_chars > MAX_CHARACTERISTICS:
                raise FrameError(f"more than {MAX_CHARACTERISTICS} characteristics")
            if not isinstance(c, dict):
                raise FrameError("a characteristic is a map")
            _only(c, {"u", "h", "p", "d"})
            c_uuid, c_handle = _uuid_text(c["u"]), handle(c)
            props = _int(c, "p", 0, _ALL_PROPERTIES)
            descs: list[DescriptorDef] = []
            for d in _list(c, "d", MAX_DESCRIPTORS):
                if not isinstance(d, dict):
                    raise FrameError("a descriptor is a map")
                _only(d, {"u", "h"})
                descs.append(DescriptorDef(_uuid_text(d["u"]), handle(d)))
            chars.append(CharacteristicDef(c_uuid, c_handle, props, tuple(descs)))
        services.append(ServiceDef(s_uuid, s_handle, tuple(chars)))
    return tuple(services)


def _mfr(v: Any) -> dict[int, bytes]:
    if not isinstance(v, dict) or len(v) > MAX_MFR_ENTRIES:
        raise FrameError(f"'mfr' must be a map of at most {MAX_MFR_ENTRIES} entries")
    out: dict[int, bytes] = {}
    for k, data in v.items():
        if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k <= 0xFFFF:
            raise FrameError("a manufacturer id is an integer 0..65535")
        if not isinstance(data, bytes) or len(data) > MAX_MFR_DATA:
            raise FrameError(f"manufacturer data is at most {MAX_MFR_DATA} bytes")
        out[k] = data
    return out


def _check(m: dict[str, Any]) -> CentralFrame | PeripheralFrame:
    """Build the frame a decoded map describes, or raise :class:`FrameError`."""
    t = m.get("t")
    frame: CentralFrame | PeripheralFrame
    if t == "scan":
        _only(m, {"t"})
        frame = Scan()
    elif t == "connect":
        _only(m, {"t", "v"})
        frame = Connect(_int(m, "v", 1, 255))
    elif t == "discover":
        _only(m, {"t", "id"})
        frame = Discover(_int(m, "id", 0, MAX_ID))
    elif t == "read":
        _only(m, {"t", "id", "h"})
        frame = Read(_int(m, "id", 0, MAX_ID), _int(m, "h", 1, MAX_HANDLE))
    elif t == "write":
        _only(m, {"t", "id", "h", "v"})
        frame = Write(_int(m, "id", 0, MAX_ID), _int(m, "h", 1, MAX_HANDLE), _value(m))
    elif t == "write_cmd":
        _only(m, {"t", "h", "v"})
        frame = WriteCommand(_int(m, "h", 1, MAX_HANDLE), _value(m))
    elif t == "subscribe":
        _only(m, {"t", "id", "h"})
        frame = Subscribe(_int(m, "id", 0, MAX_ID), _int(m, "h", 1, MAX_HANDLE))
    elif t == "unsubscribe":
        _only(m, {"t", "id", "h"})
        frame = Unsubscribe(_int(m, "id", 0, MAX_ID), _int(m, "h", 1, MAX_HANDLE))
    elif t == "disconnect":
        _only(m, {"t", "reason"})
        frame = Disconnect(_text(m, "reason", _MAX_MSG, empty=True))
    elif t == "adv":
        _only(m, {"t", "name", "uuids", "mfr"})
        uuids = tuple(_uuid_text(u) for u in _list(m, "uuids", MAX_ADV_UUIDS))
        frame = Advertisement(_text(m, "name", _MAX_TEXT, empty=True), uuids, _mfr(m["mfr"]))
    elif t == "hello":
        _only(m, {"t", "v", "name", "mtu"})
        frame = Hello(
            name=_text(m, "name", _MAX_TEXT, empty=True),
            mtu=_int(m, "mtu", MIN_MTU, MAX_MTU),
            version=_int(m, "v", 1, 255),
        )
    elif t == "services":
        _only(m, {"t", "id", "s"})
        frame = Services(_int(m, "id", 0, MAX_ID), _services(_list(m, "s", MAX_SERVICES)))
    elif t == "value":
        _only(m, {"t", "id", "v"})
        frame = Value(_int(m, "id", 0, MAX_ID), _value(m))
    elif t == "ok":
        _only(m, {"t", "id"})
        frame = Ok(_int(m, "id", 0, MAX_ID))
    elif t == "error":
        _only(m, {"t", "id", "code", "msg"})
        frame = ErrorReply(
            _int(m, "id", 0, MAX_ID),
            _int(m, "code", 1, 0xFF),
            _text(m, "msg", _MAX_MSG, empty=True),
        )
    elif t == "notify":
        _only(m, {"t", "h", "v"})
        frame = Notification(_int(m, "h", 1, MAX_HANDLE), _value(m))
    else:
        raise FrameError(
            f"unknown frame type {t!r}" if isinstance(t, str) else "missing frame type 't'"
        )
    return frame


def _decode(data: bytes) -> CentralFrame | PeripheralFrame:
    if len(data) > MAX_FRAME:
        raise FrameError(f"frame of {len(data)} bytes exceeds {MAX_FRAME}")
    stream = io.BytesIO(data)
    try:
        m = cbor2.CBORDecoder(stream).decode()
    except Exception as exc:  # cbor2 raises many types on hostile input
        raise FrameError(f"not CBOR: {type(exc).__name__}") from None
    if stream.tell() != len(data):  # cbor2.loads would silently ignore trailing bytes
        raise FrameError(f"{len(data) - stream.tell()} bytes after the CBOR map")
    if not isinstance(m, dict):
        raise FrameError("a frame is a CBOR map")
    return _check(m)


_FROM_CENTRAL: Final = (
    Scan,
    Connect,
    Discover,
    Read,
    Write,
    WriteCommand,
    Subscribe,
    Unsubscribe,
    Disconnect,
)
_FROM_PERIPHERAL: Final = (
    Advertisement,
    Hello,
    Services,
    Value,
    Ok,
    ErrorReply,
    Notification,
    Disconnect,
)


def decode_from_central(data: bytes) -> CentralFrame:
    """Strictly decode a frame a peripheral received; peripheral-only types are refused."""
    frame = _decode(data)
    if not isinstance(frame, _FROM_CENTRAL):
        raise FrameError(f"a central does not send {type(frame).__name__} frames")
    return frame


def decode_from_peripheral(data: bytes) -> PeripheralFrame:
    """Strictly decode a frame a central received; central-only types are refused."""
    frame = _decode(data)
    if not isinstance(frame, _FROM_PERIPHERAL):
        raise FrameError(f"a peripheral does not send {type(frame).__name__} frames")
    return frame
