"""Wire formats and models of lockgw: pure, no I/O, no asyncio.

Bytes go in, values come out. Everything here is safe to call on hostile
input: a decoder either returns a value or raises a :class:`protocols.errors.LockgwError`
subclass with a typed reason.
"""
