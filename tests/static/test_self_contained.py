"""The repository stands on its own: nothing in it cites a file that only our build machines
have (the planning notes beside the checkout). A user who clones it has none of them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.services import ROOT

pytestmark = pytest.mark.static

# Spelled in pieces so that this file does not match itself.
OUTSIDE = ["../" + "shared", "ARCHITECTURE" + ".md", "API_CONTRACT" + ".md", "STYLE" + ".md"]


def test_no_tracked_file_cites_a_file_outside_the_repository():
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    citing = []
    for name in filter(None, files):
        path = Path(ROOT, name.decode())
        if not path.is_file():
            continue
        text = path.read_bytes().decode("utf-8", errors="ignore")
        citing += [f"{name.decode()}: {needle}" for needle in OUTSIDE if needle in text]
    assert citing == []
