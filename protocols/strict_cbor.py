"""A strict decoder for the CBOR subset lockgw's signed messages use.

Accepted: unsigned and negative integers (up to 64 bits), byte strings, UTF-8 text,
arrays, maps with integer or text keys, ``false``, ``true``, ``null`` — in *preferred
serialisation* (RFC 8949 §4.1: every length and integer in its shortest form) with
definite lengths only. Refused: floats, tags (the caller peels the COSE/CWT tags off the
outside), ``undefined`` and other simple values, indefinite lengths, duplicate map keys,
nesting deeper than :data:`MAX_DEPTH`, truncated input and trailing bytes — everything
with more than one meaning or more than one spelling.

Why not cbor2 here: cbor2 decodes semantic tags into Python objects, keeps the last of
duplicate keys and accepts every spelling, and (measured) costs 10–15 µs per call even for
a few bytes; this decoder is pure Python, total (any bytes → value or
:class:`StrictCBORError`), never allocates more than its input, and is faster on tokens.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["MAX_DEPTH", "StrictCBORError", "loads"]

MAX_DEPTH: Final = 8
_MIN: Final = {24: 24, 25: 0x100, 26: 0x10000, 27: 0x100000000}
_WIDTH: Final = {24: 1, 25: 2, 26: 4, 27: 8}
_SIMPLE: Final = {0xF4: False, 0xF5: True, 0xF6: None}


class StrictCBORError(ValueError):
    """The bytes are not strict, preferred-serialised plain CBOR; the message says why."""


def _item(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    v: Any
    ib = data[pos]
    pos += 1
    # fast paths for what tokens are made of: small integers, short text, short bytes
    if ib < 0x18:
        return ib, pos
    if 0x60 <= ib < 0x78:
        end = pos + ib - 0x60
        if end > len(data):
            raise StrictCBORError("truncated string")
        try:
            return data[pos:end].decode("utf-8"), end
        except UnicodeDecodeError:
            raise StrictCBORError("text is not UTF-8") from None
    if ib == 0x58:  # a byte string of 24..255 bytes (keys, ids, signatures)
        n = data[pos]
        end = pos + 1 + n
        if n < 24 or end > len(data):
            raise StrictCBORError("byte string length not in shortest form, or truncated")
        return data[pos + 1 : end], end
    mt = ib >> 5
    ai = ib & 31
    if mt == 7:
        if ib in _SIMPLE:
            return _SIMPLE[ib], pos
        raise StrictCBORError(f"CBOR simple value or float 0x{ib:02x} is not allowed")
    if ai < 24:
        arg = ai
    elif ai < 28:
        width = _WIDTH[ai]
        end = pos + width
        if end > len(data):
            raise StrictCBORError("truncated")
        arg = int.from_bytes(data[pos:end], "big")
        pos = end
        if arg < _MIN[ai]:
            raise StrictCBORError("an integer or length is not in its shortest form")
    else:
        raise StrictCBORError("indefinite lengths and reserved encodings are not allowed")
    if mt == 0:
        return arg, pos
    if mt == 1:
        return -1 - arg, pos
    if mt in {2, 3}:
        end = pos + arg
        if end > len(data):
            raise StrictCBORError("truncated string")
        if mt == 2:
            return data[pos:end], end
        try:
            return data[pos:end].decode("utf-8"), end
        except UnicodeDecodeError:
            raise StrictCBORError("text is not UTF-8") from None
    if mt == 6:
        raise StrictCBORError(f"CBOR tag {arg} is not allowed here")
    if depth >= MAX_DEPTH:
        raise StrictCBORError("nested too deeply")
    if mt == 4:
        if arg > len(data) - pos:
            raise StrictCBORError("truncated array")
        items = []
        n = len(data)
        for _ in range(arg):
            # the common scalars inline (no call): this loop and the map's are the hot path
            ib = data[pos]
            if ib < 0x18:
                v = ib
                pos += 1
            elif 0x60 <= ib < 0x78:
                end = pos + 1 + ib - 0x60
                if end > n:
                    raise StrictCBORError("truncated string")
                v = data[pos + 1 : end].decode("utf-8")
                pos = end
            elif 0x40 <= ib < 0x58:
                end = pos + 1 + ib - 0x40
                if end > n:
                    raise StrictCBORError("truncated string")
                v = data[pos + 1 : end]
                pos = end
            elif ib == 0x19:
                end = pos + 3
                if end > n:
                    raise StrictCBORError("truncated")
                v = (data[pos + 1] << 8) | data[pos + 2]
                if v < 0x100:
                    raise StrictCBORError("an integer or length is not in its shortest form")
                pos = end
            elif ib == 0x1A:
                end = pos + 5
                if end > n:
                    raise StrictCBORError("truncated")
                v = int.from_bytes(data[pos + 1 : end], "big")
                if v < 0x10000:
                    raise StrictCBORError("an integer or length is not in its shortest form")
                pos = end
            else:
                v, pos = _item(data, pos, depth + 1)
            items.append(v)
        return items, pos
    # mt == 5: a map
    if 2 * arg > len(data) - pos:
        raise StrictCBORError("truncated map")
    out: dict[Any, Any] = {}
    n = len(data)
    for _ in range(arg):
        # keys inline: a small integer or short text (claims, header labels, frame keys)
        ib = data[pos]
        if ib < 0x18:
            k: Any = ib
            pos += 1
        elif 0x20 <= ib < 0x38:
            k = 0x1F - ib
            pos += 1
        elif 0x60 <= ib < 0x78:
            end = pos + 1 + ib - 0x60
            if end > n:
                raise StrictCBORError("truncated string")
            k = data[pos + 1 : end].decode("utf-8")
            pos = end
        else:
            k, pos = _item(data, pos, depth + 1)
            if type(k) is not int and type(k) is not str:
                raise StrictCBORError("map keys must be integers or text")
        if k in out:
            raise StrictCBORError(f"duplicate map key {k!r}")
        ib = data[pos]
        if ib < 0x18:
            v = ib
            pos += 1
        elif 0x60 <= ib < 0x78:
            end = pos + 1 + ib - 0x60
            if end > n:
                raise StrictCBORError("truncated string")
            v = data[pos + 1 : end].decode("utf-8")
            pos = end
        elif 0x40 <= ib < 0x58:
            end = pos + 1 + ib - 0x40
            if end > n:
                raise StrictCBORError("truncated string")
            v = data[pos + 1 : end]
            pos = end
        elif ib == 0x19:
            end = pos + 3
            if end > n:
                raise StrictCBORError("truncated")
            v = (data[pos + 1] << 8) | data[pos + 2]
            if v < 0x100:
                raise StrictCBORError("an integer or length is not in its shortest form")
            pos = end
        elif ib == 0x1A:
            end = pos + 5
            if end > n:
                raise StrictCBORError("truncated")
            v = int.from_bytes(data[pos + 1 : end], "big")
            if v < 0x10000:
                raise StrictCBORError("an integer or length is not in its shortest form")
            pos = end
        else:
            v, pos = _item(data, pos, depth + 1)
        out[k] = v
    return out, pos


def loads(data: bytes, pos: int = 0) -> Any:
    """Decode exactly one item from ``data[pos:]``; raise StrictCBORError on any defect."""
    try:
        value, end = _item(data, pos, 0)
    except IndexError:
        raise StrictCBORError("truncated") from None
    except UnicodeDecodeError:
        raise StrictCBORError("text is not UTF-8") from None
    if end != len(data):
        raise StrictCBORError(f"{len(data) - end} trailing byte(s)")
    return value
