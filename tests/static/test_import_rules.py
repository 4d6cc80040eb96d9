"""Imports go one way: api -> models <- workers (the import-linter contracts in pyproject)."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.services import ROOT

pytestmark = pytest.mark.static

PACKAGES = ("api", "models", "workers")
CONFIG = tomllib.loads(Path(ROOT, "pyproject.toml").read_text())["tool"]["importlinter"]
CONTRACTS = [contract["name"] for contract in CONFIG["contracts"]]


@dataclass
class Report:
    exit_code: int
    kept: int
    broken: int
    broken_contracts: set[str]
    output: str


def lint_imports(root: Path) -> Report:
    """lint-imports run in ``root`` (its pyproject.toml and packages), read for its meaning."""
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint, "import-linter is not installed (make install)"
    done = subprocess.run(
        [lint, "--no-cache", "--no-logo"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    totals = re.search(r"^Contracts: (\d+) kept, (\d+) broken\.$", done.stdout, re.MULTILINE)
    assert totals, output
    return Report(
        exit_code=done.returncode,
        kept=int(totals[1]),
        broken=int(totals[2]),
        broken_contracts={
            c
            for c in CONTRACTS
            if re.search(rf"^{re.escape(c)} BROKEN$", done.stdout, re.MULTILINE)
        },
        output=output,
    )


def test_import_linter_keeps_every_contract():
    """Every contract in pyproject.toml is checked and kept, and lint-imports exits 0."""
    report = lint_imports(Path(ROOT))
    assert (report.exit_code, report.kept, report.broken) == (0, len(CONTRACTS), 0), report.output


def test_a_forbidden_import_breaks_the_contract(tmp_path: Path):
    """The contracts do forbid: in a copy of the packages, ``import api`` in models/ breaks
    "models imports neither api nor workers" and lint-imports exits 1."""
    for package in PACKAGES:
        shutil.copytree(
            Path(ROOT, package), tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(Path(ROOT, "pyproject.toml"), tmp_path)
    with (tmp_path / "models" / "clock.py").open("a") as clock:
        clock.write("\nimport api  # forbidden: models must not know the API\n")
    guarding = {
        c["name"]
        for c in CONFIG["contracts"]
        if "models" in c["source_modules"] and "api" in c["forbidden_modules"]
    }
    assert guarding, "no contract in pyproject.toml forbids models to import api"
    report = lint_imports(tmp_path)
    assert report.exit_code == 1, report.output
    assert report.kept + report.broken == len(CONTRACTS), report.output
    assert guarding <= report.broken_contracts, report.output


def test_api_modules_import_no_worker_code():
    """A direct scan too: no module under api/ names the workers package."""
    offenders = []
    for path in Path(ROOT, "api").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [f"{path}: {n}" for n in names if n.split(".")[0] == "workers"]
    assert offenders == []
