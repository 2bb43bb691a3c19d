"""Embedding files written as results arrive, in bounded memory, in input order.

Formats (the README's *Command line* section shows them):

- ``jsonl``: one JSON object per text, with its ``id``; vectors as float32's shortest decimal
  form (each number reads back as the very same float32).
- ``npy`` (sentence embeddings only): one float32 array ``[N, D]``, row i for the i-th text.
- ``npz``: sentence embeddings as one array ``embeddings`` [N, D]; token and word embeddings as
  ``vectors_{i}``, ``offsets_{i}`` and ``tokens_{i}`` (plus ``word_ids_{i}``) or ``words_{i}``
  for the i-th text; and ``ids`` [N], the id of each text.

A regular file appears (renamed from a temporary name) only when complete; a pipe, FIFO or
``/dev/stdout`` is written directly, as results arrive (see ``storage.open_replacing``).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO

import numpy as np

from ..errors import InputError
from ..text.encode import TokenEmbeddings, WordEmbeddings
from ..weights.storage import open_replacing

__all__ = ["FORMATS", "open_writer", "float32_json"]

FORMATS = ("jsonl", "npy", "npz")

# A .npy header with room for any row count; rewritten in place with the final shape.
_NPY_HEADER_BYTES = 128
_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}  # as json.dumps writes them


def _npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    text = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}"
    body = text.ljust(_NPY_HEADER_BYTES - 10 - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body.encode("latin1")


def float32_json(values: np.ndarray) -> str:
    """A float32 vector (or matrix) as JSON, each number in float32's shortest round-trip form:
    ``0.1`` rather than float64's ``0.10000000149011612``.

    >>> float32_json(np.array([0.1, -2.5, 1e-5], dtype=np.float32))
    '[0.1,-2.5,1e-05]'
    """
    values = np.asarray(values, dtype=np.float32)
    if values.ndim > 1:
        return "[" + ",".join(float32_json(row) for row in values) + "]"
    # str() of a NumPy float32 is its shortest repr that reads back as the same float32.
    text = [str(x) for x in values]
    if not np.isfinite(values).all():
        text = [_NON_FINITE.get(t, t) for t in text]
    return "[" + ",".join(text) + "]"


class _Writer:
    """Takes each chunk's ids and results in order; ``close`` finishes the file."""

    def __init__(self, f: BinaryIO, kind: str, dim: int) -> None:
        self.f, self.kind, self.dim, self.count = f, kind, dim, 0

    def write(self, ids: list[Any], results: Any) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _JsonlWriter(_Writer):
    def write(self, ids: list[Any], results: Any) -> None:
        lines = []
        for i, r in zip(ids, results, strict=True):
            head = f'{{"id": {json.dumps(i, ensure_ascii=False)}'
            if isinstance(r, np.ndarray):
                lines.append(f'{head}, "embedding": {float32_json(r)}}}')
            elif isinstance(r, TokenEmbeddings):
                lines.append(
                    f'{head}, "tokens": {json.dumps(r.tokens, ensure_ascii=False)}, '
                    f'"offsets": {json.dumps(r.offsets.tolist())}, '
                    f'"word_ids": {json.dumps(r.word_ids.tolist())}, '
                    f'"vectors": {float32_json(r.vectors)}}}'
                )
            else:
                assert isinstance(r, WordEmbeddings)
                lines.append(
                    f'{head}, "words": {json.dumps(r.words, ensure_ascii=False)}, '
                    f'"offsets": {json.dumps(r.offsets.tolist())}, '
                    f'"vectors": {float32_json(r.vectors)}}}'
                )
        self.f.write(("\n".join(lines) + "\n").encode("utf-8"))
        self.f.flush()  # a reader at the other end of a pipe gets each chunk as it is done
        self.count += len(ids)


class _NpyWriter(_Writer):
    """Rows appended after a header that is rewritten with the final row count at the end; a
    target that can't seek back (a pipe) gets the rows spooled in a temporary file first."""

    def __init__(self, f: BinaryIO, kind: str, dim: int) -> None:
        if kind != "sentence":
            raise InputError("npy output holds sentence embeddings only: use npz or jsonl")
        super().__init__(f, kind, dim)
        self.out: BinaryIO | None = None
        if not f.seekable():
            self.out, self.f = f, tempfile.TemporaryFile()  # noqa: SIM115 (closed in close)
        self.f.write(_npy_header((0, dim)))

    def write(self, ids: list[Any], results: Any) -> None:
        self.f.write(np.ascontiguousarray(results, dtype="<f4").tobytes())
        self.count += len(ids)

    def close(self) -> None:
        self.f.seek(0)
        self.f.write(_npy_header((self.count, self.dim)))
        if self.out is not None:
            self.f.seek(0)
            shutil.copyfileobj(self.f, self.out, 1 << 20)
            self.f.close()


class _Ids:
    """Every text's id, spooled to a temporary file, then written as one array: int64 when all
    ids are integers (line numbers), else strings."""

    def __init__(self) -> None:
        self.spool: IO[str] = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115
        self.count, self.width, self.integers = 0, 1, True

    def add(self, ids: list[Any]) -> None:
        for i in ids:
            integer = isinstance(i, int) and not isinstance(i, bool)
            text = i if isinstance(i, str) else json.dumps(i, ensure_ascii=False)
            self.integers = self.integers and integer
            self.width = max(self.width, len(text))
            self.spool.write(json.dumps(text) + "\n")
        self.count += len(ids)

    def write_to(self, entry: IO[bytes]) -> None:
        dtype = np.dtype("<i8") if self.integers else np.dtype(f"<U{self.width}")
        entry.write(_npy_header((self.count,), dtype.str))
        self.spool.seek(0)
        while lines := self.spool.readlines(1 << 20):
            texts = [json.loads(line) for line in lines]
            entry.write(np.array([int(t) for t in texts] if self.integers else texts, dtype).data)
        self.spool.close()


class _NpzWriter(_Writer):
    def __init__(self, f: BinaryIO, kind: str, dim: int) -> None:
        super().__init__(f, kind, dim)
        self.zip = zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True)
        self.ids = _Ids()
        # Sentence rows go to one array whose length is known only at the end: spooled here.
        self.rows: IO[bytes] | None = None
        if kind == "sentence":
            self.rows = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close)

    def _put(self, name: str, array: np.ndarray) -> None:
        with self.zip.open(f"{name}.npy", "w", force_zip64=True) as entry:
            np.lib.format.write_array(entry, np.asarray(array), allow_pickle=False)

    def write(self, ids: list[Any], results: Any) -> None:
        if self.rows is not None:
            self.rows.write(np.ascontiguousarray(results, dtype="<f4").tobytes())
        else:
            for n, r in enumerate(results, start=self.count):
                self._put(f"vectors_{n}", r.vectors)
                self._put(f"offsets_{n}", r.offsets)
                if isinstance(r, TokenEmbeddings):
                    self._put(f"tokens_{n}", np.array(r.tokens, dtype=str))
                    self._put(f"word_ids_{n}", r.word_ids)
                else:
                    self._put(f"words_{n}", np.array(r.words, dtype=str))
        self.ids.add(ids)
        self.count += len(ids)

    def close(self) -> None:
        if self.rows is not None:
            with self.zip.open("embeddings.npy", "w", force_zip64=True) as entry:
                entry.write(_npy_header((self.count, self.dim)))
                self.rows.seek(0)
                shutil.copyfileobj(self.rows, entry, 1 << 20)
            self.rows.close()
        with self.zip.open("ids.npy", "w", force_zip64=True) as entry:
            self.ids.write_to(entry)
        self.zip.close()


_WRITERS = {"jsonl": _JsonlWriter, "npy": _NpyWriter, "npz": _NpzWriter}


class _WholeWrites:
    """A binary stream whose ``write`` writes everything or raises. A pipe whose reader went
    away can take part of a write (a short count, which BufferedWriter passes on) before it
    refuses the rest with EPIPE: without the loop, the rest would be dropped silently."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        while view:
            view = view[self._f.write(view) or 0 :]
        return len(memoryview(data).cast("B"))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


@contextlib.contextmanager
def open_writer(target: Path | BinaryIO, fmt: str, kind: str, dim: int) -> Iterator[_Writer]:
    """A writer of ``kind`` (sentence, token or word) embeddings of width ``dim`` in ``fmt``
    to ``target``: a path (a regular file appears only if the block succeeds) or an open binary
    stream such as ``sys.stdout.buffer``."""
    if fmt not in _WRITERS:
        raise InputError(f"{target}: unknown output format {fmt!r} (jsonl, npy or npz)")
    if isinstance(target, Path):
        with open_replacing(target) as f:
            writer = _WRITERS[fmt](_WholeWrites(f), kind, dim)  # type: ignore[arg-type]
            yield writer
            writer.close()
    else:
        writer = _WRITERS[fmt](_WholeWrites(target), kind, dim)  # type: ignore[arg-type]
        yield writer
        writer.close()
        target.flush()
