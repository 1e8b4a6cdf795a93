"""Home Assistant MQTT discovery (``[mqtt] homeassistant = true``, docs/homeassistant.md).

Three levels: the discovery configs against HA's published conventions (pure); a running
gateway's retained configs on a real mosquitto, stale ones cleared; and a real Home
Assistant (2024.3.3, installed from PyPI into a cache of its own by ``uv``) that builds
its entities and device registry from a running gateway's messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from gateway.mqtt.homeassistant import HaDevice, discovery_messages, node_id
from protocols.device import Capability, DeviceKind
from simulators.broker import MosquittoBroker, free_port
from simulators.platform import Platform
from simulators.site import DeviceSpec, SimSite

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "tests" / "homeassistant" / "requirements.txt"
#: HA's own pattern for a discovery topic after the prefix (its mqtt/discovery.py)
TOPIC = re.compile(
    r"(?P<component>\w+)/(?:(?P<node_id>[a-zA-Z0-9_-]+)/)?(?P<object_id>[a-zA-Z0-9_-]+)/config"
)

LOCK = HaDevice(
    id="front.lock",
    door="front",
    kind=DeviceKind.LOCK,
    capabilities=frozenset(
        {Capability.LOCK, Capability.UNLOCK, Capability.DOOR_SENSOR, Capability.BATTERY}
    ),
    manufacturer="carelock",
    model="CL-1",
    serial="S-1",
    firmware="1.2",
)
SAFE = HaDevice(
    id="front-keysafe",
    door="front",
    kind=DeviceKind.KEYSAFE,
    capabilities=frozenset({Capability.OPEN, Capability.KEY_SENSOR, Capability.BATTERY}),
)


def _configs(**kw: Any) -> dict[str, dict[str, Any]]:
    msgs = discovery_messages(
        site=kw.pop("site", "site.1"),
        prefix=kw.pop("prefix", "homeassistant"),
        version="1.0",
        devices=kw.pop("devices", [LOCK, SAFE]),
    )
    return {t: json.loads(p) for t, p in msgs.items()}


# -- the conventions ----------------------------------------------------------------------
def test_discovery_follows_the_published_conventions_and_opens_nothing() -> None:
    configs = _configs()
    gateway_id = node_id("site.1")
    assert gateway_id == "lockgw_site_1"  # '.' is not allowed in a node id
    uniques = [c["unique_id"] for c in configs.values()]
    assert len(set(uniques)) == len(uniques)
    for topic, cfg in configs.items():
        assert topic.startswith("homeassistant/"), topic
        m = TOPIC.fullmatch(topic.removeprefix("homeassistant/"))
        assert m and m["node_id"] == gateway_id, topic
        assert m["component"] in ("sensor", "binary_sensor"), topic  # read-only platforms
        assert not [k for k in cfg if "command" in k], f"{topic} could command something"
        assert cfg["origin"] == {"name": "lockgw", "sw": "1.0"}
        assert cfg["device"]["identifiers"]
        assert cfg["state_topic"].startswith("lockgw/v1/site.1/")
        if cfg["device"]["identifiers"] == [gateway_id]:
            continue  # the gateway's own connectivity sensor: always available
        assert cfg["device"]["via_device"] == gateway_id
        assert cfg["availability_mode"] == "all"
        assert [a["topic"] for a in cfg["availability"]] == [
            "lockgw/v1/site.1/status",
            f"lockgw/v1/site.1/devices/{cfg['device']['name']}/availability",
        ]


def test_each_device_gets_its_entities_and_registry_entry() -> None:
    configs = _configs()
    by_name = {(c["device"]["name"], c["name"]): (t, c) for t, c in configs.items()}
    topic, lock = by_name[("front.lock", "Lock")]
    assert topic.startswith("homeassistant/sensor/")
    assert lock["device_class"] == "enum"
    assert lock["options"] == ["locked", "unlocked", "unlatched", "jammed"]
    assert lock["device"] == {
        "identifiers": ["lockgw_site_1_front_lock"],
        "name": "front.lock",
        "manufacturer": "carelock",
        "model": "CL-1",
        "serial_number": "S-1",
        "sw_version": "1.2",
        "via_device": "lockgw_site_1",
    }
    assert by_name[("front.lock", "Door")][1]["device_class"] == "door"
    battery = by_name[("front.lock", "Battery")][1]
    assert (battery["device_class"], battery["unit_of_measurement"]) == ("battery", "%")
    assert by_name[("front.lock", "Problem")][1]["device_class"] == "problem"
    assert ("front.lock", "Key present") not in by_name
    assert by_name[("front-keysafe", "Key present")][1]["value_template"]
    assert by_name[("front-keysafe", "Compartment")][1]["device_class"] == "opening"
    # what the key safe did not tell yet is left out, not sent as "unknown"
    assert "manufacturer" not in by_name[("front-keysafe", "Problem")][1]["device"]
    gateway = [c for c in configs.values() if c["device"]["identifiers"] == ["lockgw_site_1"]]
    assert [c["device_class"] for c in gateway] == ["connectivity"]


def test_the_discovery_prefix_is_the_configured_one() -> None:
    assert all(t.startswith("ha-test/") for t in _configs(prefix="ha-test"))


# -- a running gateway --------------------------------------------------------------------
def _enable(site: SimSite, prefix: str = "homeassistant") -> None:
    text = site.config.read_text()
    site.config.write_text(
        text.replace("[mqtt]\n", f'[mqtt]\nhomeassistant = true\ndiscovery_prefix = "{prefix}"\n', 1)
    )


class _Retained:
    """Everything retained under a topic filter, as the broker holds it now."""

    def __init__(self, url: str, topic: str) -> None:
        self.host, self.port = url.removeprefix("mqtt://").split(":")
        self.topic = topic
        self.messages: dict[str, bytes] = {}
        self._new = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> _Retained:
        ready = asyncio.Event()
        self._task = asyncio.create_task(self._run(ready))
        async with asyncio.timeout(10):
            await ready.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self, ready: asyncio.Event) -> None:
        async with aiomqtt.Client(self.host, int(self.port)) as client:
            await client.subscribe(self.topic, qos=1)
            ready.set()
            async for msg in client.messages:
                payload = msg.payload if isinstance(msg.payload, bytes) else b""
                if payload:
                    self.messages[str(msg.topic)] = payload
                else:
                    self.messages.pop(str(msg.topic), None)
                async with self._new:
                    self._new.notify_all()

    async def wait(self, pred: Callable[[], bool], timeout: float = 20) -> None:
        async with asyncio.timeout(timeout), self._new:
            await self._new.wait_for(pred)


@pytest.mark.slow
async def test_a_running_gateway_retains_its_discovery_and_clears_what_is_no_longer_there(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    lock = DeviceSpec("front-lock", "front", "lock", "carelock-lock")
    async with SimSite(tmp_path, devices=[lock]) as site:
        site.write_config(broker.url)
        _enable(site, "ha-test")
        await site.start_devices()
        await site.pair_all()
        node = node_id(site.site)
        async with Platform(broker.url, site.site) as platform:
            # what a removed device (or an older release) left at the broker
            await platform.send(f"ha-test/sensor/{node}/old-lock_lock/config", b"{}", retain=True)
            async with _Retained(broker.url, f"ha-test/+/{node}/+/config") as seen:
                await seen.wait(lambda: len(seen.messages) == 1)
                await site.start_gateway()
                await seen.wait(
                    lambda: f"ha-test/sensor/{node}/front-lock_lock/config" in seen.messages
                    and f"ha-test/sensor/{node}/old-lock_lock/config" not in seen.messages
                )
                # maker, model, serial and firmware reach the registry once the lock answered
                topic = f"ha-test/sensor/{node}/front-lock_lock/config"
                await seen.wait(lambda: "serial_number" in json.loads(seen.messages[topic])["device"])
                assert set(seen.messages) == {
                    f"ha-test/binary_sensor/{node}/{node}/config",
                    f"ha-test/sensor/{node}/front-lock_lock/config",
                    f"ha-test/binary_sensor/{node}/front-lock_door/config",
                    f"ha-test/binary_sensor/{node}/front-lock_problem/config",
                    f"ha-test/sensor/{node}/front-lock_battery/config",
                }


# -- a real Home Assistant ----------------------------------------------------------------
def _ha_python() -> Path:
    """Home Assistant's interpreter: a venv built once per requirements file, in a cache
    outside the repository (``$LOCKGW_HA_VENV`` to choose another place)."""
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:12]
    default = Path.home() / ".cache" / "lockgw-test" / f"homeassistant-{digest}"
    venv = Path(os.environ.get("LOCKGW_HA_VENV", default))
    python = venv / "bin" / "python"
    stamp = venv / ".complete"
    if stamp.exists():
        return python
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    assert uv, "uv is a test dependency (pip install -e '.[test]')"
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([uv, "venv", "-q", "-p", sys.executable, str(venv)], check=True)
    subprocess.run(
        [uv, "pip", "install", "-q", "-p", str(python), "--no-deps", "-r", str(REQUIREMENTS)],
        check=True,
    )
    stamp.write_text(digest)
    return python


def _ha_config(conf: Path, broker: MosquittoBroker) -> None:
    (conf / ".storage").mkdir(parents=True)
    (conf / "configuration.yaml").write_text(
        "homeassistant:\n  name: lockgw-test\n  latitude: 52.37\n  longitude: 4.89\n"
        "  elevation: 0\n  unit_system: metric\n  time_zone: Europe/Amsterdam\n  country: NL\n"
        f"http:\n  server_host: 127.0.0.1\n  server_port: {free_port()}\n"
        # every entity's state, back on the broker, where the test reads it
        "mqtt_statestream:\n  base_topic: hastate\n  publish_attributes: true\n"
        "logger:\n  default: warning\n"
    )
    entry = {
        "entry_id": "lockgwtestmqtt",
        "version": 1,
        "minor_version": 1,
        "domain": "mqtt",
        "title": "test broker",
        "data": {"broker": "127.0.0.1", "port": broker.port, "discovery": True},
        "options": {},
        "pref_disable_new_entities": False,
        "pref_disable_polling": False,
        "source": "user",
        "unique_id": None,
        "disabled_by": None,
    }
    (conf / ".storage" / "core.config_entries").write_text(
        json.dumps(
            {"version": 1, "minor_version": 1, "key": "core.config_entries",
             "data": {"entries": [entry]}}
        )
    )


@contextlib.asynccontextmanager
async def _home_assistant(
    tmp_path: Path, broker: MosquittoBroker
) -> AsyncIterator[tuple[Path, asyncio.subprocess.Process]]:
    python = await asyncio.to_thread(_ha_python)
    conf = tmp_path / "ha"
    _ha_config(conf, broker)
    log = tmp_path / "ha.log"
    proc = await asyncio.create_subprocess_exec(
        str(python), "-m", "homeassistant", "-c", str(conf), "--skip-pip",
        "--log-file", str(log),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        yield conf, proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(30):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


def _slug(text: str) -> str:
    """An object id as HA makes an entity id of it."""
    return re.sub(r"[^a-z0-9_]", "_", text.lower())


class _HaStates:
    """Home Assistant's entity states as mqtt_statestream publishes them."""

    def __init__(self) -> None:
        self.states: dict[str, str] = {}
        self.attributes: dict[str, dict[str, Any]] = {}

    def take(self, topic: str, payload: bytes) -> None:
        parts = topic.split("/")  # hastate/<domain>/<object_id>/<state|attribute>
        if len(parts) != 4:
            return
        entity, leaf = f"{parts[1]}.{parts[2]}", parts[3]
        text = payload.decode()
        if leaf == "state":
            self.states[entity] = text
        else:
            with contextlib.suppress(ValueError):
                self.attributes.setdefault(entity, {})[leaf] = json.loads(text)


@pytest.mark.slow
@pytest.mark.timeout(600)  # the first run on a machine builds Home Assistant's venv
async def test_home_assistant_builds_the_entities_from_a_running_gateway(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    async with SimSite(tmp_path) as site:
        site.write_config(broker.url)
        _enable(site)
        await site.start_devices()
        await site.pair_all()
        ha = _HaStates()
        seen = _Retained(broker.url, "hastate/#")
        async with seen, _home_assistant(tmp_path, broker) as (conf, proc):
            await site.start_gateway()

            async def until(pred: Callable[[], bool], timeout: float = 60) -> None:
                async def check() -> bool:
                    for t, p in list(seen.messages.items()):
                        ha.take(t, p)
                    return pred()

                async with asyncio.timeout(timeout):
                    while not await check():
                        assert proc.returncode is None, (tmp_path / "ha.log").read_text()[-3000:]
                        await asyncio.sleep(0.2)

            expected = {
                "sensor.front_lock_lock": "locked",
                "binary_sensor.front_lock_door": "off",
                "binary_sensor.front_lock_problem": "off",
                "binary_sensor.front_keysafe_compartment": "off",
                "binary_sensor.front_keysafe_key": "on",
                "binary_sensor.front_keysafe_problem": "off",
                f"binary_sensor.{_slug(node_id(site.site))}": "on",
            }
            await until(lambda: all(ha.states.get(e) == v for e, v in expected.items()))
            await until(lambda: ha.states.get("sensor.front_lock_battery", "").isdigit())
            assert ha.attributes["sensor.front_lock_battery"]["device_class"] == "battery"
            assert ha.attributes["binary_sensor.front_lock_door"]["device_class"] == "door"

            # the door opens, the key is taken: HA follows
            await site.switch("front-lock", "door", "open")
            await site.switch("front-keysafe", "compartment", "open")
            await site.switch("front-keysafe", "key", "take")
            await until(
                lambda: ha.states.get("binary_sensor.front_lock_door") == "on"
                and ha.states.get("binary_sensor.front_keysafe_key") == "off"
                and ha.states.get("binary_sensor.front_keysafe_compartment") == "on"
            )
            await site.switch("front-lock", "door", "close")

            # a jam: the lock sensor says jammed and the problem is on, with its name
            await site.switch("front-lock", "jam", "on")
            async with Platform(broker.url, site.site) as platform:
                await platform.send_command(site.command("unlock"))
                await until(
                    lambda: ha.states.get("sensor.front_lock_lock") == "jammed"
                    and ha.states.get("binary_sensor.front_lock_problem") == "on"
                )
            assert ha.attributes["binary_sensor.front_lock_problem"]["problems"] == ["lock_jammed"]

            # the key safe gone: its entities become unavailable, the lock's stay
            await site.stop("sim-front-keysafe")
            await until(
                lambda: ha.states.get("binary_sensor.front_keysafe_key") == "unavailable"
                and ha.states.get("sensor.front_lock_lock") == "jammed"
            )
            # the gateway gone: everything behind it is unavailable, its own sensor off
            await site.stop("gateway")
            await until(
                lambda: ha.states.get("sensor.front_lock_lock") == "unavailable"
                and ha.states.get(f"binary_sensor.{_slug(node_id(site.site))}") == "off"
            )
        # HA writes its registries when it stops: the devices, their maker, via the gateway
        registry = json.loads((conf / ".storage" / "core.device_registry").read_text())
        devices = {d["name"]: d for d in registry["data"]["devices"]}
        gateway = devices[f"lockgw {site.site}"]
        lock = devices["front-lock"]
        assert lock["via_device_id"] == gateway["id"]
        assert lock["manufacturer"] not in (None, "unknown") and lock["model"]
        assert lock["serial_number"] and lock["sw_version"]
        assert devices["front-keysafe"]["via_device_id"] == gateway["id"]
        entities = json.loads((conf / ".storage" / "core.entity_registry").read_text())
        by_id = {e["entity_id"]: e for e in entities["data"]["entities"]}
        assert set(expected) <= set(by_id) and {e["platform"] for e in by_id.values()} == {"mqtt"}
        # (its enum options: HA 2024.3's MQTT sensor drops the key; newer ones keep it)
        assert by_id["sensor.front_lock_lock"]["device_id"] == lock["id"]
        assert not [e for e in by_id if e.startswith("lock.")]  # nothing that could open
