"""drivers/registry.py: built-in names and a supplier's driver found through a real installed
distribution (a dist-info with entry_points.txt on sys.path), not a mock of importlib."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from drivers import registry
from drivers.base import Driver
from drivers.registry import BUILTIN, DriverLoadError, Registry, UnknownDriver

SUPPLIER_MODULE = textwrap.dedent(
    """
    from drivers.base import Driver
    from protocols.device import Capability, DeviceKind

    class AcmeLockDriver(Driver):
        name = "acme-lock"
        kind = DeviceKind.LOCK
        capabilities = frozenset({Capability.LOCK, Capability.UNLOCK})

        async def _connect(self): ...
        async def _disconnect(self): ...
        async def _execute(self, action): raise NotImplementedError
        async def _refresh(self): raise NotImplementedError
        async def _pair(self): ...
        async def device_info(self): raise NotImplementedError

        @property
        def is_connected(self): return False

    class NotADriver:
        pass
    """
)


def install_supplier(site: Path, entry_points: dict[str, str], dist: str = "acme_lockgw") -> None:
    """Write what `pip install acme-lockgw` would leave in site-packages."""
    pkg = site / dist
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "driver.py").write_text(SUPPLIER_MODULE)
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[lockgw.drivers]\n{lines}")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_builtin_names_are_listed_without_importing_anything() -> None:
    assert set(BUILTIN) == {"carelock-lock", "carelock-keysafe", "nuki"}
    assert {"carelock-lock", "carelock-keysafe", "nuki"} <= set(registry.available())


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_builtin_drivers_load_as_driver_classes_named_as_registered(name: str) -> None:
    cls = registry.get_driver(name)
    assert issubclass(cls, Driver) and cls.name == name


def test_a_supplier_driver_is_found_through_its_entry_point(site: Path) -> None:
    install_supplier(site, {"acme-lock": "acme_lockgw.driver:AcmeLockDriver"})
    assert "acme-lock" in registry.available()
    cls = registry.get_driver("acme-lock")
    assert cls.__name__ == "AcmeLockDriver" and issubclass(cls, Driver)
    assert cls.name == "acme-lock"


def test_unknown_name_says_what_is_installed_and_what_to_do(site: Path) -> None:
    install_supplier(site, {"acme-lock": "acme_lockgw.driver:AcmeLockDriver"})
    with pytest.raises(UnknownDriver) as exc:
        registry.get_driver("acme-lok")
    assert exc.value.name == "acme-lok"
    assert "acme-lock" in exc.value.available and "nuki" in exc.value.available
    assert "lockgw.drivers" in str(exc.value) and "install" in str(exc.value)


def test_broken_registrations_are_load_errors(site: Path) -> None:
    install_supplier(
        site,
        {
            "gone": "acme_lockgw.missing:Driver",
            "typo": "acme_lockgw.driver:AcmeLokDriver",
            "impostor": "acme_lockgw.driver:NotADriver",
            "shapeless": "acme_lockgw.driver",
        },
    )
    for name, problem in [
        ("gone", "ModuleNotFoundError"),
        ("typo", "has no AcmeLokDriver"),
        ("impostor", "not a subclass"),
        ("shapeless", "module:Class"),
    ]:
        with pytest.raises(DriverLoadError, match=problem) as exc:
            registry.get_driver(name)
        assert exc.value.name == name


def test_an_entry_point_cannot_shadow_a_builtin(site: Path) -> None:
    install_supplier(site, {"nuki": "acme_lockgw.driver:AcmeLockDriver"})
    assert registry.Registry().target("nuki") == BUILTIN["nuki"]


def test_a_registry_with_its_own_builtins(site: Path) -> None:
    install_supplier(site, {"acme-lock": "acme_lockgw.driver:AcmeLockDriver"})
    reg = Registry(builtins={"local": "acme_lockgw.driver:AcmeLockDriver"}, group="lockgw.drivers")
    assert reg.available() == ["acme-lock", "local"]
    assert reg.get("local") is reg.get("acme-lock")
