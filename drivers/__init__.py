"""Drivers: one module per device family, behind :class:`drivers.base.Driver`."""
