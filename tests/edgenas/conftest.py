"""Fixtures for the core tests: every test gets its own feature cache and measurement store."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_edgenas_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch ~/.cache: tests that share a cache ask for ``shared_env`` (tests/conftest.py)."""
    monkeypatch.setenv("EDGENAS_CACHE", str(tmp_path / "edgenas-cache"))
    monkeypatch.setenv("EDGENAS_STORE", str(tmp_path / "edgenas-store.sqlite"))


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread(one_thread_per_module: None) -> None:
    """One torch thread while this folder's modules run (see tests/conftest.py)."""
