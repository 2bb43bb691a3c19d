"""Hugging Face checkpoint folder -> one self-contained npdistil safetensors file.

The file holds the weights laid out for the NumPy forward pass (see ``layout.py``), and in its
metadata the config, the tokenizer definition, the task heads, a sentence-transformers folder's
modules (``text/sentence.py``; Dense weights as tensors), where the weights came from (repo,
revision, commit, file name and sha256) and the format version. It is written to a
temporary name and renamed, so no reader ever sees half of it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import CheckpointError, InputError, IntegrityError
from ..model import quantize
from ..model.config import EncoderConfig
from ..model.transformer import Weights
from ..text import sentence
from ..text.tokenizer import tokenizer_definition
from . import layout, storage
from .torch_zip import read_torch_zip

__all__ = [
    "FORMAT_VERSION",
    "WEIGHT_FILES",
    "ConvertedFile",
    "convert_folder",
    "find_weights",
    "open_converted",
    "sha256_of",
]

FORMAT = "npdistil"
# 2: BERT, sentence-transformers modules. A version-1 reader would take a version-2 file of a
# sentence-transformers model for a plain one and silently pool it wrongly: it must refuse it.
# 3: small weights (metadata "dtype"; int8 matrices with their ".scale", or float16).
FORMAT_VERSION = 3
# The weight files npdistil reads, in order of preference.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_SHARDED = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def sha256_of(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def find_weights(folder: Path) -> Path:
    """The weights file of a checkpoint folder, or a CheckpointError saying what is there."""
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    for name in _SHARDED:
        if (folder / name).is_file():
            raise CheckpointError(f"{folder / name}: sharded checkpoints are not supported")
    present = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    raise CheckpointError(
        f"{folder}: no weights file (looked for {', '.join(WEIGHT_FILES)}; found {present})"
    )


def read_state_dict(path: Path) -> dict[str, np.ndarray]:
    """A transformers state dict from ``model.safetensors`` or ``pytorch_model.bin``."""
    if path.suffix == ".safetensors":
        return storage.read_tensors(path)
    return read_torch_zip(path)


def convert_folder(
    folder: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    source: Mapping[str, str] | None = None,
    expected_sha256: str | None = None,
    dtype: str = "float32",
) -> Path:
    """Convert a transformers DistilBERT, BERT, RoBERTa (XLM-R, CamemBERT) or MPNet folder
    (``config.json``, weights, tokenizer files; a sentence-transformers folder's modules too)
    into an npdistil file at ``output``; returns ``output``.

    ``source`` (repo, revision, commit) is recorded in the file. With ``expected_sha256``
    (the Hub's LFS hash), weights whose sha256 differs are refused. ``dtype="int8"`` or
    ``"float16"`` writes a small-weights file (about 1/4 or 1/2 of the float32 size; see
    ``model/quantize.py``), which ``load`` runs like any other.
    """
    if dtype not in quantize.DTYPES:
        raise InputError(f"dtype must be one of {quantize.DTYPES}, got {dtype!r}")
    folder, output = Path(folder), Path(output)
    config = EncoderConfig.from_json_file(folder / "config.json")
    weights_path = find_weights(folder)
    sha256 = sha256_of(weights_path)
    if expected_sha256 and sha256 != expected_sha256:
        raise IntegrityError(
            f"{weights_path}: sha256 is {sha256} but the Hub advertises {expected_sha256} "
            "(corrupt or tampered download)"
        )
    tensors, heads = layout.from_hf_state_dict(
        read_state_dict(weights_path), config, str(weights_path)
    )
    modules = sentence.read_folder(folder, config.dim, config.max_tokens, read_state_dict)
    tokenizer_json = tokenizer_definition(folder)
    if tokenizer_json is not None:
        _check_tokenizer_fits(tokenizer_json, config, folder)
    info = {"file": weights_path.name, "sha256": sha256, **(source or {})}
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "dtype": dtype,
        "config": json.dumps(config.to_dict(), sort_keys=True),
        "heads": json.dumps(heads),
        "source": json.dumps(info, sort_keys=True),
    }
    if tokenizer_json is not None:
        metadata["tokenizer"] = tokenizer_json
    if modules is not None:
        spec, module_tensors = modules
        metadata["sentence_transformers"] = json.dumps(spec, sort_keys=True)
        tensors |= module_tensors
    storage.write_atomic(output, quantize.compress(tensors, dtype), metadata)
    return output


def _check_tokenizer_fits(tokenizer_json: str, config: EncoderConfig, folder: Path) -> None:
    vocab = json.loads(tokenizer_json).get("model", {}).get("vocab", {})
    largest = max(vocab.values(), default=-1) if isinstance(vocab, dict) else len(vocab) - 1
    if largest >= config.vocab_size:
        raise CheckpointError(
            f"{folder}: the tokenizer has token id {largest}, beyond the model's "
            f"vocab_size {config.vocab_size}"
        )


# ---- reading converted files ------------------------------------------------------------------


class ConvertedFile(NamedTuple):
    """An npdistil file, opened: its weights are views of a read-only memory map."""

    path: Path
    config: EncoderConfig
    weights: Weights
    heads: layout.Heads
    tokenizer_json: str | None
    source: dict[str, Any]
    size_bytes: int
    n_tensors: int
    sentence: sentence.SentenceModel | None = None  # a sentence-transformers model's modules
    format_version: int = FORMAT_VERSION
    dtype: str = "float32"  # how the big matrices are stored: "float32", "float16" or "int8"


def open_converted(path: str | os.PathLike[str]) -> ConvertedFile:
    """Open an npdistil file, checking its format, version, config and every tensor's shape."""
    path = Path(path)
    header = storage.read_header(path)
    meta = header.metadata
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not an npdistil file (a plain safetensors file? convert a checkpoint "
            "folder with `npdistil convert`)"
        )
    try:
        version = int(meta.get("format_version", ""))
    except ValueError:
        raise CheckpointError(f"{path}: malformed format_version metadata") from None
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: written by a newer npdistil (format {version}; this version reads up to "
            f"{FORMAT_VERSION}): upgrade npdistil or convert the checkpoint again"
        )
    try:
        config_dict = json.loads(meta["config"])
        heads = json.loads(meta.get("heads", "[]"))
        source = json.loads(meta.get("source", "{}"))
        spec = (
            json.loads(meta["sentence_transformers"]) if "sentence_transformers" in meta else None
        )
    except (KeyError, ValueError):
        raise CheckpointError(f"{path}: malformed npdistil metadata") from None
    config = EncoderConfig.from_dict(config_dict, source=f"{path} (config metadata)")
    tensors = storage.read_tensors(path, header)
    modules = None if spec is None else sentence.from_spec(spec, tensors, config.dim, str(path))
    return ConvertedFile(
        path=path,
        config=config,
        weights=layout.build_weights(tensors, config, str(path)),
        heads=layout.build_heads(tensors, config, heads, str(path)),
        tokenizer_json=meta.get("tokenizer"),
        source=source,
        size_bytes=path.stat().st_size,
        n_tensors=len(tensors),
        sentence=modules,
        format_version=version,
        dtype=meta.get("dtype", "float32"),
    )


def recompress(path: str | os.PathLike[str], output: str | os.PathLike[str], dtype: str) -> Path:
    """Write the npdistil file ``path`` to ``output`` with its big matrices stored as
    ``dtype``: a float32 file can become any dtype; a small file only a copy of itself (its
    rounding cannot be undone)."""
    path, output = Path(path), Path(output)
    if dtype not in quantize.DTYPES:
        raise InputError(f"dtype must be one of {quantize.DTYPES}, got {dtype!r}")
    header = storage.read_header(path)
    have = header.metadata.get("dtype", "float32")
    if have != "float32" and have != dtype:
        raise InputError(
            f"{path}: its matrices are {have} already; convert the original checkpoint (a folder "
            f"or Hub id) to get {dtype}"
        )
    metadata = {**header.metadata, "dtype": dtype, "format_version": str(FORMAT_VERSION)}
    tensors = storage.read_tensors(path, header)
    storage.write_atomic(output, quantize.compress(tensors, dtype), metadata)
    return output
