"""Reading and writing safetensors files: strictly checked, memory-mapped, written atomically.

The format: 8 bytes little-endian header length N, N bytes of JSON
``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}``,
then the tensors' bytes. The reference parser (the ``safetensors`` package) accepts duplicate
names (the last one wins) and its NumPy API copies every tensor into memory; npdistil refuses
duplicates and gaps and maps the data straight from the page cache, so several processes that
load the same file share its pages. Writing goes through the ``safetensors`` package, to a
temporary file that is renamed into place: a reader never sees a half-written file, and a file
another process has mapped is never truncated under it (which would kill that process).
"""

from __future__ import annotations

import contextlib
import json
import math
import mmap
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .errors import CheckpointError

__all__ = [
    "TensorInfo",
    "gather_rows",
    "read_header",
    "read_tensors",
    "write_atomic",
    "replace_atomic",
]

# safetensors' own limit on the JSON header.
MAX_HEADER_BYTES = 100 * 1024 * 1024

DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # NumPy has no bfloat16: read as raw bits, widened to float32
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}


class TensorInfo(NamedTuple):
    dtype: str  # a safetensors dtype name, e.g. "F32"
    shape: tuple[int, ...]
    begin: int  # byte offsets into the data section
    end: int


class Header(NamedTuple):
    data_start: int  # file offset of the data section (8 + N)
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    seen: dict[str, object] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"duplicate key {key!r}")
        seen[key] = value
    return seen


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_header(path: str | os.PathLike[str]) -> Header:
    """Parse and check a safetensors header; raise CheckpointError naming the file and tensor."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise CheckpointError(f"{path}: not a safetensors file ({size} bytes, too short)")
            n = int.from_bytes(prefix, "little")
            if n > MAX_HEADER_BYTES or 8 + n > size:
                raise CheckpointError(
                    f"{path}: not a safetensors file (header length {n} does not fit in "
                    f"{size} bytes)"
                )
            raw = f.read(n)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a directory, not a safetensors file") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: can't read ({exc})") from None
    try:
        doc = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{path}: safetensors header is not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise CheckpointError(f"{path}: safetensors header is not a JSON object")

    metadata = doc.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise CheckpointError(f"{path}: __metadata__ must map strings to strings")

    tensors: dict[str, TensorInfo] = {}
    for name, entry in doc.items():
        tensors[name] = _tensor_info(path, name, entry)

    # The spans must tile the data section exactly: no gaps, no overlaps, nothing past the end.
    data_size = size - 8 - n
    cursor = 0
    for name, info in sorted(tensors.items(), key=lambda kv: (kv[1].begin, kv[1].end)):
        if info.begin != cursor:
            what = "overlaps another tensor" if info.begin < cursor else "leaves a gap before it"
            raise CheckpointError(f"{path}: tensor {name!r} {what} (offset {info.begin})")
        cursor = info.end
    if cursor != data_size:
        raise CheckpointError(
            f"{path}: tensors cover {cursor} bytes but the data section has {data_size} "
            "(truncated or padded file)"
        )
    return Header(8 + n, tensors, dict(metadata))


def _tensor_info(path: Path, name: str, entry: object) -> TensorInfo:
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise CheckpointError(
            f"{path}: tensor {name!r} needs exactly 'dtype', 'shape' and 'data_offsets'"
        )
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in DTYPES:
        raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {dtype!r}")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise CheckpointError(f"{path}: tensor {name!r} has a malformed shape {shape!r}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_is_count(o) for o in offsets)
        or offsets[1] < offsets[0]
    ):
        raise CheckpointError(f"{path}: tensor {name!r} has malformed data_offsets {offsets!r}")
    nbytes = math.prod(shape) * DTYPES[dtype].itemsize
    if offsets[1] - offsets[0] != nbytes:
        raise CheckpointError(
            f"{path}: tensor {name!r} of shape {shape} and dtype {dtype} needs {nbytes} bytes "
            f"but its span holds {offsets[1] - offsets[0]}"
        )
    return TensorInfo(dtype, tuple(shape), offsets[0], offsets[1])


def read_tensors(
    path: str | os.PathLike[str],
    header: Header | None = None,
) -> dict[str, np.ndarray]:
    """Every tensor of a checked file, as read-only arrays mapped from the file.

    BF16 tensors are widened to float32 (a copy); everything else is a view of the mapping.
    """
    header = header or read_header(path)
    if not header.tensors:
        return {}
    try:
        with open(path, "rb") as f:
            mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: can't map ({exc})") from None
    mapped = np.frombuffer(mapping, dtype=np.uint8)
    out: dict[str, np.ndarray] = {}
    for name, info in header.tensors.items():
        start = header.data_start + info.begin
        raw = mapped[start : header.data_start + info.end]
        array = (
            raw.view(DTYPES[info.dtype]).reshape(info.shape)
            if raw.size
            else np.zeros(info.shape, DTYPES[info.dtype])
        )
        if info.dtype == "BF16":
            array = (array.astype(np.uint32) << 16).view(np.float32)
        out[name] = array
    return out


def gather_rows(table: np.ndarray, ids: np.ndarray) -> np.ndarray:  # [V, D], [N] -> [N, D]
    """``table[ids]``, then, when ``table`` is mapped from a file, its pages are let go from
    this process (they stay in the OS page cache, for the next lookup).

    A lookup of a few thousand rows touches pages all over the 89 MB word-embedding table, and
    the kernel maps their neighbours too: without this, all of it would count in the process's
    resident memory for the rest of its life.
    """
    rows = table[ids]
    owner, root = _mapping_of(table)
    if owner is not None and hasattr(owner, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        start = table.__array_interface__["data"][0] - root.__array_interface__["data"][0]
        first = start - start % mmap.PAGESIZE
        length = min(start + table.nbytes, len(owner)) - first
        with contextlib.suppress(OSError, ValueError):
            owner.madvise(mmap.MADV_DONTNEED, first, length)
    return rows


def _mapping_of(array: np.ndarray) -> tuple[mmap.mmap | None, np.ndarray]:
    """The mmap an array views, and the array over the whole mapping (None when not mapped)."""
    root = array
    while isinstance(root.base, np.ndarray):
        root = root.base
    owner = root.base.obj if isinstance(root.base, memoryview) else root.base
    return (owner if isinstance(owner, mmap.mmap) else None), root


def replace_atomic(path: str | os.PathLike[str], write: Callable[[str], object]) -> None:
    """Run ``write(tmp_path)`` on a temporary file beside ``path``, then rename it over ``path``.

    The rename is atomic: readers see the old file or the whole new one, never a part, and a
    crash leaves at most a stray ``.tmp`` file, removed here on any error.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(
    path: str | os.PathLike[str], tensors: Mapping[str, np.ndarray], metadata: dict[str, str]
) -> None:
    """Write a safetensors file through the reference library, atomically."""
    import safetensors.numpy  # only conversion writes files: keep it off the start-up path

    arrays = {name: np.ascontiguousarray(a) for name, a in tensors.items()}
    replace_atomic(path, lambda tmp: safetensors.numpy.save_file(arrays, tmp, metadata=metadata))
