"""Embedding files written as results arrive, in bounded memory, and renamed into place only
when complete: ``.npy`` (sentence embeddings, one row per text), ``.npz`` (one entry per text
and kind) and ``.jsonl`` (one record per text, with its id)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .encode import TokenEmbeddings, WordEmbeddings
from .errors import InputError

__all__ = ["open_writer"]

# A .npy header with room for any row count; rewritten in place with the final shape.
_NPY_HEADER_BYTES = 128


def _npy_header(rows: int, dim: int) -> bytes:
    text = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dim}), }}"
    body = text.ljust(_NPY_HEADER_BYTES - 10 - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body.encode("latin1")


class _Writer:
    def __init__(self, f: BinaryIO, kind: str) -> None:
        self.f, self.kind, self.count = f, kind, 0

    def write(self, ids: list[Any], texts: list[str], results: Any) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _NpyWriter(_Writer):
    dim = 0

    def __init__(self, f: BinaryIO, kind: str) -> None:
        if kind != "sentence":
            raise InputError("--format npy holds sentence embeddings only; use npz or jsonl")
        super().__init__(f, kind)
        f.write(_npy_header(0, 0))

    def write(self, ids: list[Any], texts: list[str], results: Any) -> None:
        rows = np.ascontiguousarray(results, dtype="<f4")
        self.dim = rows.shape[1]
        self.f.write(rows.tobytes())
        self.count += len(rows)

    def close(self) -> None:
        self.f.seek(0)
        self.f.write(_npy_header(self.count, self.dim))


class _NpzWriter(_Writer):
    def __init__(self, f: BinaryIO, kind: str) -> None:
        super().__init__(f, kind)
        self.zip = zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True)
        self.sentences: list[np.ndarray] = []

    def _put(self, name: str, array: np.ndarray) -> None:
        with self.zip.open(f"{name}.npy", "w", force_zip64=True) as entry:
            np.lib.format.write_array(entry, np.asarray(array), allow_pickle=False)

    def write(self, ids: list[Any], texts: list[str], results: Any) -> None:
        for i, result in enumerate(results if self.kind != "sentence" else []):
            n = self.count + i
            self._put(f"vectors_{n}", result.vectors)
            self._put(f"offsets_{n}", result.offsets)
            labels = result.tokens if isinstance(result, TokenEmbeddings) else result.words
            self._put(f"{'tokens' if self.kind == 'token' else 'words'}_{n}", np.array(labels, str))
        if self.kind == "sentence":
            self._put(f"embeddings_{self.count}", results)  # one entry per chunk of rows
        self._put(f"ids_{self.count}", np.array([str(i) for i in ids]))
        self.count += len(texts)

    def close(self) -> None:
        self.zip.close()


class _JsonlWriter(_Writer):
    def write(self, ids: list[Any], texts: list[str], results: Any) -> None:
        lines = []
        for i, r in zip(ids, results, strict=True):
            if isinstance(r, np.ndarray):
                record: dict[str, Any] = {"id": i, "embedding": r.tolist()}
            elif isinstance(r, TokenEmbeddings):
                record = {
                    "id": i,
                    "tokens": r.tokens,
                    "offsets": r.offsets.tolist(),
                    "word_ids": r.word_ids.tolist(),
                    "vectors": r.vectors.tolist(),
                }
            else:
                assert isinstance(r, WordEmbeddings)
                record = {
                    "id": i,
                    "words": r.words,
                    "offsets": r.offsets.tolist(),
                    "vectors": r.vectors.tolist(),
                }
            lines.append(json.dumps(record, ensure_ascii=False))
        self.f.write(("\n".join(lines) + "\n").encode("utf-8"))
        self.count += len(texts)


_WRITERS = {"npy": _NpyWriter, "npz": _NpzWriter, "jsonl": _JsonlWriter}


@contextlib.contextmanager
def open_writer(path: Path, fmt: str, kind: str) -> Iterator[_Writer]:
    """A writer for ``path``; the file appears (atomically) only if the block succeeds."""
    if fmt not in _WRITERS:
        raise InputError(f"{path}: unknown output format {fmt!r} (npy, npz or jsonl)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w+b") as f:
            writer = _WRITERS[fmt](f, kind)
            yield writer
            writer.close()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
