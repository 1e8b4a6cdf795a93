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
    """One item of any kind at ``pos``; (value, position after it)."""
    ib = data[pos]
    pos += 1
    mt = ib >> 5
    ai = ib & 31
    if mt == 7:
        if ib in _SIMPLE:
            return _SIMPLE[ib], pos
        raise StrictCBORError(f"CBOR simple value or float 0x{ib:02x} is not allowed")
    if ai < 24:
        arg = ai
    elif ai < 28:
        end = pos + _WIDTH[ai]
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
    if mt == 2 or mt == 3:  # noqa: PLR1714 - two int compares beat a set on the hot path
        end = pos + arg
        if end > len(data):
            raise StrictCBORError("truncated string")
        return (data[pos:end] if mt == 2 else data[pos:end].decode("utf-8")), end
    if mt == 6:
        raise StrictCBORError(f"CBOR tag {arg} is not allowed here")
    if mt == 4:
        return _array(data, pos, arg, depth + 1)
    return _map(data, pos, arg, depth + 1)


def _value(data: bytes, pos: int, n: int, depth: int) -> tuple[Any, int]:
    """Like :func:`_item`, with the shapes tokens are made of tried first."""
    ib = data[pos]
    if ib < 0x18:
        return ib, pos + 1
    if 0x60 <= ib < 0x78:
        end = pos + 1 + ib - 0x60
        if end > n:
            raise StrictCBORError("truncated string")
        return data[pos + 1 : end].decode("utf-8"), end
    if 0x40 <= ib < 0x58:
        end = pos + 1 + ib - 0x40
        if end > n:
            raise StrictCBORError("truncated string")
        return data[pos + 1 : end], end
    if 0x80 <= ib < 0x98:
        return _array(data, pos + 1, ib - 0x80, depth + 1)
    if 0xA0 <= ib < 0xB8:
        return _map(data, pos + 1, ib - 0xA0, depth + 1)
    if ib == 0x19:
        end = pos + 3
        if end > n:
            raise StrictCBORError("truncated")
        v = (data[pos + 1] << 8) | data[pos + 2]
        if v < 0x100:
            raise StrictCBORError("an integer or length is not in its shortest form")
        return v, end
    if ib == 0x1A:
        end = pos + 5
        if end > n:
            raise StrictCBORError("truncated")
        v = int.from_bytes(data[pos + 1 : end], "big")
        if v < 0x10000:
            raise StrictCBORError("an integer or length is not in its shortest form")
        return v, end
    if ib == 0x58:  # a byte string of 24..255 bytes (keys, signatures)
        size = data[pos + 1]
        end = pos + 2 + size
        if size < 24 or end > n:
            raise StrictCBORError("byte string length not in shortest form, or truncated")
        return data[pos + 2 : end], end
    return _item(data, pos, depth)


def _array(data: bytes, pos: int, count: int, depth: int) -> tuple[list[Any], int]:
    if depth > MAX_DEPTH:
        raise StrictCBORError("nested too deeply")
    n = len(data)
    if count > n - pos:
        raise StrictCBORError("truncated array")
    items: list[Any] = []
    append = items.append
    for _ in range(count):
        v, pos = _value(data, pos, n, depth)
        append(v)
    return items, pos


def _map(data: bytes, pos: int, count: int, depth: int) -> tuple[dict[Any, Any], int]:
    if depth > MAX_DEPTH:
        raise StrictCBORError("nested too deeply")
    n = len(data)
    if 2 * count > n - pos:
        raise StrictCBORError("truncated map")
    out: dict[Any, Any] = {}
    k: Any
    for _ in range(count):
        # keys inline: a small integer or short text (claims, header labels, frame keys)
        ib = data[pos]
        if ib < 0x18:
            k = ib
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
            k, pos = _item(data, pos, depth)
            if type(k) is not int and type(k) is not str:
                raise StrictCBORError("map keys must be integers or text")
        if k in out:
            raise StrictCBORError(f"duplicate map key {k!r}")
        out[k], pos = _value(data, pos, n, depth)
    return out, pos


def loads(data: bytes, pos: int = 0) -> Any:
    """Decode exactly one item from ``data[pos:]``; raise StrictCBORError on any defect."""
    try:
        value, end = _value(data, pos, len(data), 0)
    except IndexError:
        raise StrictCBORError("truncated") from None
    except UnicodeDecodeError:
        raise StrictCBORError("text is not UTF-8") from None
    except RecursionError:  # pragma: no cover - MAX_DEPTH keeps recursion shallow
        raise StrictCBORError("nested too deeply") from None
    if end != len(data):
        raise StrictCBORError(f"{len(data) - end} trailing byte(s)")
    return value
