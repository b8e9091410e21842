"""The import rule, checked mechanically: hareflow -> scheduler/worker/web -> common, never back."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "common": {"hareflow", "scheduler", "worker", "web"},
    "scheduler": {"hareflow", "worker", "web"},
    "worker": {"hareflow", "scheduler", "web"},
    "web": {"hareflow", "scheduler", "worker"},
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_packages_import_only_downward(package: str) -> None:
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = imported_packages(path) & FORBIDDEN[package]
        if bad:
            offenders.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
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
        "heavy = [m for m in ('sqlalchemy', 'pika', 'aio_pika', 'flask', 'werkzeug', 'prometheus_client') "
        "if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
