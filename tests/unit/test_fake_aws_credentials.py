"""The fake AWS credentials the SQS tests run under: in force for the block, then undone."""

from __future__ import annotations

import os

import pytest

from tests.processes import FAKE_AWS, fake_aws_credentials


def test_fakes_are_in_force_inside_and_the_environment_is_restored_after(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "a key of the developer's own")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    before = dict(os.environ)
    with fake_aws_credentials():
        assert {name: os.environ.get(name) for name in FAKE_AWS} == FAKE_AWS
    assert dict(os.environ) == before
