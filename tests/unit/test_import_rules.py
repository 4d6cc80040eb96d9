"""Imports go one way: api -> models <- workers (the import-linter contracts in pyproject)."""

from __future__ import annotations

import ast
import pathlib
import shutil
import subprocess
import sys

from tests.services import ROOT


def test_import_linter_contracts_hold():
    """lint-imports keeps every contract (models imports neither side; api never workers)."""
    lint = shutil.which("lint-imports", path=str(pathlib.Path(sys.executable).parent))
    assert lint, "import-linter is not installed (make install)"
    result = subprocess.run([lint], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


def test_api_modules_import_no_worker_code():
    """A direct scan too: no module under api/ names the workers package."""
    offenders = []
    for path in pathlib.Path(ROOT, "api").rglob("*.py"):
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
