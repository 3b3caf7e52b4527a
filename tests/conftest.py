"""Fixtures shared by unit and integration tests."""

from __future__ import annotations

import pytest

from streams.settings import Settings, load_settings


@pytest.fixture
def make_settings(tmp_path):
    """``make_settings(**overrides)``: settings from the defaults (the process environment is
    ignored) with in-memory tables and table/model state under this test's ``tmp_path``."""

    def make(**overrides) -> Settings:
        values = {"store": "memory", "data_dir": tmp_path / "data", **overrides}
        return load_settings(values, environ={})

    return make
