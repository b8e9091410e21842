"""The import rule, checked mechanically: hareflow -> scheduler/worker/web -> common, never back."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Each service folder installs as ``hareflow.<folder>``; what it may not import, by module prefix.
#: ``hareflow`` alone stands for the authoring API and the CLI (``hareflow/``).
SERVICES = ("common", "scheduler", "worker", "web")
FORBIDDEN = {
    "common": {"hareflow", "hareflow.scheduler", "hareflow.worker", "hareflow.web"},
    "scheduler": {"hareflow", "hareflow.worker", "hareflow.web"},
    "worker": {"hareflow", "hareflow.scheduler", "hareflow.web"},
    "web": {"hareflow", "hareflow.scheduler", "hareflow.worker"},
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def owner(module: str) -> str | None:
    """Which part a module belongs to: a service prefix (``hareflow.web``), ``hareflow`` for the
    authoring API and CLI, a bare service name (the old, colliding layout), or None (third party)."""
    parts = module.split(".")
    if parts[0] in SERVICES:
        return parts[0]
    if parts[0] != "hareflow":
        return None
    if len(parts) > 1 and parts[1] in SERVICES:
        return f"hareflow.{parts[1]}"
    return "hareflow"


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_packages_import_only_downward(package: str) -> None:
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        owners = {owner(m) for m in imported_modules(path)} - {None}
        bad = owners & (FORBIDDEN[package] | set(SERVICES))
        if bad:
            offenders.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert offenders == []


def test_no_module_imports_a_service_by_its_bare_top_level_name() -> None:
    """``common``, ``web``, ... are folders of this repository, installed only as ``hareflow.*``."""
    offenders = []
    for folder in ("hareflow", *SERVICES, "tests", "benchmarks", "examples"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            bare = {m for m in imported_modules(path) if m.split(".")[0] in SERVICES}
            if bare:
                offenders.append(f"{path.relative_to(ROOT)} imports {sorted(bare)}")
    assert offenders == []


def test_importing_hareflow_loads_only_the_authoring_api() -> None:
    code = (
        "import sys, hareflow; heavy = [m for m in ('sqlalchemy', 'pika', 'aio_pika', 'flask', 'click', "
        "'prometheus_client') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_importing_the_cli_loads_no_database_broker_or_web_library() -> None:
    code = (
        "import sys, hareflow.cli; "
        "heavy = [m for m in ('sqlalchemy', 'pika', 'aio_pika', 'flask', 'werkzeug', 'prometheus_client', "
        "'yaml', 'cryptography') "
        "if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
