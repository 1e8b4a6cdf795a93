from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import load_config
from gateway.keys import write_key_pair
from protocols.errors import ConfigError


def _write(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "lockgw.toml"
    p.write_text(body)
    return p


GOOD = """
[site]
id = "site-3f9c2a7d"
timezone = "Europe/Amsterdam"
data_dir = "data"

[[issuers]]
id = "org-a"
public_key = "keys/org-a.pub"
roles = ["verzorgende"]
purposes = ["planned"]
doors = ["front"]
"""


def test_valid_config_resolves_paths_relative_to_the_file(tmp_path: Path) -> None:
    write_key_pair(tmp_path / "keys", "org-a")
    cfg = load_config(_write(tmp_path, GOOD))
    assert cfg.site.data_dir == tmp_path / "data"
    assert cfg.issuers[0].public_key == tmp_path / "keys" / "org-a.pub"


def test_every_problem_is_listed_not_just_the_first(tmp_path: Path) -> None:
    body = GOOD.replace('timezone = "Europe/Amsterdam"', 'timezone = "Mars/Olympus"\ncolour = 1')
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, body))
    text = "\n".join(info.value.problems)
    assert "site.colour: unknown key" in text
    assert "unknown time zone 'Mars/Olympus'" in text


def test_the_bluetooth_adapter_is_named_as_bluez_names_it(tmp_path: Path) -> None:
    write_key_pair(tmp_path / "keys", "org-a")
    assert load_config(_write(tmp_path, GOOD)).bluetooth.adapter == "hci0"
    cfg = load_config(_write(tmp_path, GOOD + '\n[bluetooth]\nadapter = "hci1"\n'))
    assert cfg.bluetooth.adapter == "hci1"
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, GOOD + '\n[bluetooth]\nadapter = "AA:BB:CC:DD:EE:FF"\n'))
    assert info.value.problems == [
        "bluetooth.adapter: 'AA:BB:CC:DD:EE:FF' is not a BlueZ adapter name; use hci0, hci1, "
        "... (not a BLE address)"
    ]


def test_missing_key_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, GOOD))
    assert any("issuers[0].public_key" in p and "not found" in p for p in info.value.problems)


def test_broken_toml_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, "[site\nid="))
    assert "not valid TOML" in info.value.problems[0]


async def test_check_config_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, GOOD)
    assert await main(["check-config", "--config", str(path)]) == 1
    assert "not found" in capsys.readouterr().err
    write_key_pair(tmp_path / "keys", "org-a")
    assert await main(["check-config", "--config", str(path)]) == 0


async def test_keys_new_writes_private_key_with_mode_0600(tmp_path: Path) -> None:
    assert await main(["keys", "new", "--out", str(tmp_path), "--name", "org"]) == 0
    assert (tmp_path / "org.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "org.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    # never overwrite a key
    assert await main(["keys", "new", "--out", str(tmp_path), "--name", "org"]) == 1


def test_the_shipped_example_config_matches_the_schema() -> None:
    import tomllib
    from pathlib import Path

    from gateway.config import Config

    root = Path(__file__).resolve().parent.parent
    data = tomllib.loads((root / "config" / "example.toml").read_text())
    cfg = Config.model_validate(data)
    assert cfg.site.id == "site-3f9c2a7d"
    assert [d.driver for d in cfg.devices] == ["carelock-lock", "carelock-keysafe"]
    assert cfg.phone_link.ble and cfg.bluetooth.adapter == "hci0"
