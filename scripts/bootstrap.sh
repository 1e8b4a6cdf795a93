#!/usr/bin/env bash
# Shared set-up for scripts/test and scripts/demo: a venv with the package and
# its test tools, the Debian mosquitto broker, and dbus-daemon (the tests over
# BlueZ run BlueZoo on a private bus of their own; no bluetoothd, no radio). Idempotent and quick when
# nothing changed (a stamp of pyproject.toml's hash skips the pip step).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

py="${PYTHON:-python3}"
if ! "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
    echo "lockgw needs Python 3.11 or newer; $py is $("$py" --version 2>&1)" >&2
    exit 1
fi

if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
    echo "== installing the mosquitto broker (Debian package)"
    if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq mosquitto mosquitto-clients >/dev/null
    # the package starts a system broker on :1883; lockgw starts its own on a free port
    $sudo systemctl disable --now mosquitto >/dev/null 2>&1 || true
fi

if ! command -v dbus-daemon >/dev/null 2>&1 && [ ! -x /usr/bin/dbus-daemon ]; then
    echo "== installing dbus-daemon (Debian package)"
    if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq dbus-daemon >/dev/null
fi

# The browser tests (tests/test_demo.py): Debian's Chromium, driven by Playwright; no
# browser is downloaded from elsewhere
if ! command -v chromium >/dev/null 2>&1; then
    echo "== installing Chromium (Debian package) for the browser tests"
    if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi
if ! command -v npm >/dev/null 2>&1; then
    echo "== installing npm (Debian package) for the accessibility checker"
    if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nodejs npm >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv"
    "$py" -m venv .venv
fi
stamp=".venv/.lockgw-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "== installing lockgw and its test tools into .venv"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e ".[test]"
    echo "$want" > "$stamp"
fi

# axe-core, the WCAG checker the browser tests inject into each page (npm registry, pinned)
axe_version="4.11.0"
if [ "$(cat .venv/node_modules/axe-core/.lockgw-version 2>/dev/null)" != "$axe_version" ]; then
    echo "== installing axe-core $axe_version into .venv/node_modules"
    npm install --prefix .venv --no-save --no-audit --no-fund --loglevel=error \
        "axe-core@$axe_version" >/dev/null
    echo "$axe_version" > .venv/node_modules/axe-core/.lockgw-version
fi
