"""What the benchmark runs on, built once into a cache folder and reused by later runs.

- ``checkpoint/``: a transformers folder (``config.json``, ``model.safetensors``,
  ``tokenizer.json``, ``tokenizer_config.json``) holding full-size ``distilbert-base-cased``-shaped
  random weights from ``tests/synthetic.py`` (speed does not depend on the values);
- ``model.onnx``: the same ``DistilBertModel`` exported by ``torch.onnx.export`` (fp32);
- ``npdistil/``: npdistil's converted copy of the folder (made by ``npdistil.load``).

The tokenizer: the real cased vocabulary cannot be downloaded here, so a cased BERT WordPiece
vocabulary (up to 28,996 entries, as distilbert-base-cased) is learned with ``tokenizers`` from
the docstrings of the Python standard library, never from the benchmark corpus itself. Token
counts per text depend on the vocabulary; speed per token does not.

The corpus: the paragraphs of CPython's bundled ``pydoc_data.topics`` (its text differs between
Python releases, so the count does too).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SYNTHETIC = ROOT / "tests" / "synthetic.py"
VOCAB_SIZE = 28996  # distilbert-base-cased's
MAX_TOKENS = 512  # the model's positions; corpus texts are truncated here
# Bump when what the cache holds changes meaning; a mismatch rebuilds it.
CACHE_VERSION = 1


def corpus() -> list[str]:
    """The paragraphs of every ``pydoc_data.topics`` entry: split on blank lines, stripped,
    empty ones dropped, in the module's order."""
    from pydoc_data.topics import topics

    return [p.strip() for text in topics.values() for p in re.split(r"\n\s*\n", text) if p.strip()]


def _stdlib_docstrings() -> list[str]:
    """Triple-quoted strings of the standard library's own modules (not pydoc_data)."""
    import sysconfig

    lib = Path(sysconfig.get_paths()["stdlib"])
    pattern = re.compile(r'"""(.*?)"""', re.S)
    texts = []
    for path in sorted(lib.rglob("*.py")):
        parts = set(path.relative_to(lib).parts)
        if parts & {"site-packages", "dist-packages", "pydoc_data"}:
            continue
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        texts.extend(s.strip() for s in pattern.findall(source) if s.strip())
    return texts


def train_tokenizer(path: Path) -> dict[str, Any]:
    """Learn a cased BERT WordPiece tokenizer (``[CLS] $A [SEP]``) and save its
    ``tokenizer.json``; returns what was learned from what."""
    from tokenizers import BertWordPieceTokenizer, processors

    texts = _stdlib_docstrings()
    bert = BertWordPieceTokenizer(lowercase=False, strip_accents=False)
    bert.train_from_iterator(texts, vocab_size=VOCAB_SIZE, min_frequency=1, show_progress=False)
    tok = bert._tokenizer  # the plain tokenizers.Tokenizer inside the wrapper
    # The trainer leaves no post-processor: add BERT's, as distilbert-base-cased's file has.
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    assert tok.token_to_id("[PAD]") == 0, "pad_token_id 0 is what the config says"
    tok.save(str(path))
    return {
        "kind": "cased BERT WordPiece learned with tokenizers.BertWordPieceTokenizer",
        "trained_on": f"docstrings of the Python {sys.version.split()[0]} standard library",
        "n_training_texts": len(texts),
        "vocab_size": tok.get_vocab_size(),
        "target_vocab_size": VOCAB_SIZE,
    }


def _synthetic_module() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("npdistil_bench_synthetic", SYNTHETIC)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fingerprint() -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION}|{sys.version_info[:2]}|".encode())
    h.update(SYNTHETIC.read_bytes())
    return h.hexdigest()[:16]


def write_checkpoint(folder: Path) -> dict[str, Any]:
    """The transformers folder with full-size random weights and the learned tokenizer."""
    import numpy as np
    from safetensors.numpy import save_file

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    synthetic = _synthetic_module()
    state = synthetic.full_size_state_dict(seed=0)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = synthetic.full_size_config()
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tokenizer = train_tokenizer(folder / "tokenizer.json")
    tokenizer_config = {
        "tokenizer_class": "DistilBertTokenizer",
        "do_lower_case": False,
        "model_max_length": MAX_TOKENS,
        "pad_token": "[PAD]",
        "unk_token": "[UNK]",
        "cls_token": "[CLS]",
        "sep_token": "[SEP]",
        "mask_token": "[MASK]",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    n_params = int(sum(np.prod(a.shape) for a in state.values()))
    return {
        "weights": "tests/synthetic.py full_size_state_dict(seed=0)",
        "n_params": n_params,
        "tokenizer": tokenizer,
    }


def export_onnx(folder: str, output: str) -> dict[str, Any]:
    """Export transformers' DistilBertModel from ``folder`` to ONNX (fp32, dynamic batch and
    sequence axes, one file). Runs in a child process: the parent never imports torch."""
    import warnings

    import torch
    from transformers import DistilBertModel

    warnings.filterwarnings("ignore")
    model = DistilBertModel.from_pretrained(folder).eval()
    ids = torch.randint(106, VOCAB_SIZE, (2, 16))
    mask = torch.ones_like(ids)
    axes = {0: "batch", 1: "sequence"}
    tmp = output + ".tmp"
    torch.onnx.export(
        model,
        (ids, mask),
        tmp,
        input_names=["input_ids", "attention_mask"],
        output_names=["last_hidden_state"],
        dynamic_shapes={"input_ids": axes, "attention_mask": axes},
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    Path(tmp).replace(output)
    return {"exporter": "torch.onnx.export(dynamo=True)", "torch": torch.__version__}


def prepare(cache: Path, run_in_child: Any, log: Any) -> dict[str, Any]:
    """Build whatever the cache lacks; returns the paths and how they were made.

    ``run_in_child(function, *args)`` runs ``function`` in a fresh process (for torch).
    """
    cache.mkdir(parents=True, exist_ok=True)
    stamp = cache / "assets.json"
    folder, onnx_path = cache / "checkpoint", cache / "model.onnx"
    info: dict[str, Any] = {}
    if stamp.is_file():
        info = json.loads(stamp.read_text())
    if info.get("fingerprint") != _fingerprint() or not (folder / "model.safetensors").is_file():
        log("writing the full-size synthetic checkpoint and learning a tokenizer (once) ...")
        info = {"fingerprint": _fingerprint(), "checkpoint": write_checkpoint(folder)}
        onnx_path.unlink(missing_ok=True)
        stamp.write_text(json.dumps(info, indent=2))
    if not onnx_path.is_file():
        log("exporting the checkpoint to ONNX with torch.onnx (once) ...")
        info["onnx_export"] = run_in_child(export_onnx, str(folder), str(onnx_path))
        stamp.write_text(json.dumps(info, indent=2))
    return {
        "folder": str(folder),
        "onnx": str(onnx_path),
        "npdistil_cache": str(cache / "npdistil"),
        **info,
    }
