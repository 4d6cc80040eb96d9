"""The shape the code promises: job statuses are written only by models/lifecycle.py."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("api", "workers", "models", "migrations/env.py", "ops")
LIFECYCLE = ROOT / "models" / "lifecycle.py"
#: Not part of a running system: fills a scratch database with finished jobs, in SQL, for
#: the benchmark and the tests at size.
FILLER = ROOT / "ops" / "dev" / "fill_tables.py"

#: SQL text that writes the jobs table.
_SQL_WRITE = re.compile(r"\b(UPDATE\s+jobs|INSERT\s+INTO\s+jobs|DELETE\s+FROM\s+jobs)\b", re.I)


def job_writes(source: str) -> list[str]:
    """Where ``source`` writes a job: ``update/insert/delete(Job)`` (Core), an assignment
    to ``<something>.status``, or SQL text that writes ``jobs``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("update", "insert", "delete")
            and node.args
            and isinstance(node.args[0], ast.Name)
            and node.args[0].id == "Job"
        ):
            found.append(f"line {node.lineno}: {node.func.id}(Job)")
        elif isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Attribute) and target.attr == "status":
                    found.append(f"line {node.lineno}: .status assigned")
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and _SQL_WRITE.search(node.value)
        ):
            found.append(f"line {node.lineno}: SQL writes jobs")
    return found


def product_files() -> list[Path]:
    files: list[Path] = []
    for part in PRODUCT:
        path = ROOT / part
        files.extend([path] if path.is_file() else sorted(path.rglob("*.py")))
    return files


def test_only_the_lifecycle_module_writes_jobs():
    writes = {
        str(path.relative_to(ROOT)): job_writes(path.read_text())
        for path in product_files()
        if path not in (LIFECYCLE, FILLER)
    }
    assert {path: lines for path, lines in writes.items() if lines} == {}
    assert job_writes(LIFECYCLE.read_text()), "the lifecycle module itself must be found"
    assert job_writes(FILLER.read_text()), "the filler is exempt, not invisible"


def test_the_check_sees_each_kind_of_write():
    assert job_writes("update(Job).values(status='X')") == ["line 1: update(Job)"]
    assert job_writes("job.status = 'FAILURE'") == ["line 1: .status assigned"]
    assert job_writes("text('UPDATE jobs SET status = 1')") == ["line 1: SQL writes jobs"]
    assert job_writes("select(Job.status)") == []
