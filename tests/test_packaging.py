"""The package declares what it imports: every third-party module imported by the four
packages belongs to a distribution in ``[project] dependencies`` (not only installed here
because a test tool or another dependency brought it)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gateway", "drivers", "protocols", "simulators")
#: developer tools inside the packages that nothing at run time imports (their imports are
#: declared in the ``test`` extra): the translation catalogue's tool (Babel)
DEV_ONLY = {Path("gateway/i18n_tool.py")}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_every_runtime_import_is_a_declared_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = {_name(r) for r in project["dependencies"]}
    owners = packages_distributions()
    missing: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.relative_to(ROOT) in DEV_ONLY:
                continue
            for module in _imports(path):
                if module in sys.stdlib_module_names or module in PACKAGES or module == "__future__":
                    continue
                dists = {_name(d) for d in owners.get(module, [module])}
                if not dists & declared:
                    missing.setdefault(module, set()).add(str(path.relative_to(ROOT)))
    assert not missing, f"imported but not in [project] dependencies: {missing}"


def test_the_build_requires_a_setuptools_that_reads_the_license_string() -> None:
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert isinstance(doc["project"]["license"], str)  # PEP 639: setuptools 77 or later
    (req,) = [r for r in doc["build-system"]["requires"] if _name(r) == "setuptools"]
    m = re.search(r">=\s*(\d+)", req)
    assert m and int(m.group(1)) >= 77, req
