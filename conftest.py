"""Doctests (in npdistil/ and the docs) run from the repository root, with the tiny test model
at hand and an npdistil cache of their own; they never reach the network."""

from __future__ import annotations

from pathlib import Path

import pytest
from _pytest.doctest import DoctestItem

ROOT = Path(__file__).parent


@pytest.fixture(autouse=True)
def _doctest_at_home(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch) -> None:
    if isinstance(request.node, DoctestItem):
        monkeypatch.chdir(ROOT)
        monkeypatch.setenv("NPDISTIL_CACHE", str(tmp_path / "npdistil-cache"))
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
