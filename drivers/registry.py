"""Driver names → driver classes: the built-ins plus the entry-point group ``lockgw.drivers``.

A supplier adds a protocol without touching the gateway by shipping a distribution
that declares, in its ``pyproject.toml``::

    [project.entry-points."lockgw.drivers"]
    acme-lock = "acme_lockgw.driver:AcmeLockDriver"

and the site config then says ``driver = "acme-lock"``. Built-in names cannot be
shadowed by an entry point (that would let any installed package replace the lock
driver); such an entry point is ignored with a warning. Nothing is imported until a
driver is asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points

import structlog

from drivers.base import Driver
from protocols.errors import LockgwError

__all__ = [
    "BUILTIN",
    "ENTRY_POINT_GROUP",
    "DriverLoadError",
    "Registry",
    "UnknownDriver",
    "available",
    "get_driver",
]

log = structlog.get_logger("lockgw.drivers")

ENTRY_POINT_GROUP = "lockgw.drivers"

#: built-in driver names → "module:Class" (imported on first use)
BUILTIN: Mapping[str, str] = {
    "carelock-lock": "drivers.carelock:CarelockLockDriver",
    "carelock-keysafe": "drivers.carelock:CarelockKeysafeDriver",
    "nuki": "drivers.nuki:NukiDriver",
}


class UnknownDriver(LockgwError):
    """No driver has this name (fields ``name``, ``available``)."""

    def __init__(self, name: str, available: list[str]) -> None:
        super().__init__(
            f"no driver named {name!r}; installed drivers: {', '.join(available) or 'none'}. "
            f"Check the device's 'driver' in the config, or install the supplier's package "
            f"(it registers itself in the entry-point group {ENTRY_POINT_GROUP!r})"
        )
        self.name = name
        self.available = available


class DriverLoadError(LockgwError):
    """A driver name is registered but its class cannot be loaded (fields ``name``, ``target``)."""

    def __init__(self, name: str, target: str, problem: str) -> None:
        super().__init__(f"driver {name!r} ({target}) cannot be loaded: {problem}")
        self.name = name
        self.target = target
        self.problem = problem


class Registry:
    """Built-ins plus the entry points of ``group``; tests build their own."""

    def __init__(
        self, builtins: Mapping[str, str] = BUILTIN, group: str = ENTRY_POINT_GROUP
    ) -> None:
        self.builtins = dict(builtins)
        self.group = group

    def _entry_points(self) -> dict[str, EntryPoint]:
        found: dict[str, EntryPoint] = {}
        for ep in entry_points(group=self.group):
            if ep.name in self.builtins:
                log.warning(
                    "entry point shadows a built-in driver; ignored",
                    driver=ep.name,
                    target=ep.value,
                )
            elif ep.name in found and found[ep.name].value != ep.value:
                log.warning(
                    "two packages register this driver name; the first wins",
                    driver=ep.name,
                    kept=found[ep.name].value,
                    ignored=ep.value,
                )
            else:
                found.setdefault(ep.name, ep)
        return found

    def available(self) -> list[str]:
        return sorted(set(self.builtins) | set(self._entry_points()))

    def target(self, name: str) -> str:
        """The ``module:Class`` a name points at; :class:`UnknownDriver` if none."""
        if name in self.builtins:
            return self.builtins[name]
        ep = self._entry_points().get(name)
        if ep is None:
            raise UnknownDriver(name, self.available())
        return ep.value

    def get(self, name: str) -> type[Driver]:
        target = self.target(name)
        module_name, sep, attr = target.partition(":")
        if not sep or not module_name or not attr:
            raise DriverLoadError(name, target, "expected 'module:Class'")
        try:
            obj: object = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except ImportError as exc:
            raise DriverLoadError(name, target, f"{type(exc).__name__}: {exc}") from exc
        except AttributeError as exc:
            raise DriverLoadError(name, target, f"{module_name} has no {attr}") from exc
        if not isinstance(obj, type) or not issubclass(obj, Driver):
            raise DriverLoadError(name, target, "not a subclass of drivers.base.Driver")
        return obj


_default = Registry()


def available() -> list[str]:
    """Every driver name this installation knows, sorted."""
    return _default.available()


def get_driver(name: str) -> type[Driver]:
    """The driver class for ``name``; :class:`UnknownDriver` / :class:`DriverLoadError`."""
    return _default.get(name)
