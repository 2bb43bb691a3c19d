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
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO, NamedTuple

try:
    import fcntl
except ImportError:  # Windows: no flock; temporary files are then judged by age alone
    fcntl = None  # type: ignore[assignment]

import numpy as np

from ..errors import CheckpointError

__all__ = [
    "TensorInfo",
    "read_header",
    "read_tensors",
    "write_atomic",
    "replace_atomic",
    "open_replacing",
    "is_regular_target",
    "remove_abandoned_temps",
    "temp_state",
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


# ---- writing files whole ----------------------------------------------------------------------
#
# A new file is written under a temporary name beside its destination (``.{name}.XXXX.tmp``, a
# file or a folder) and renamed over it, so a reader sees the old file or the whole new one.
# While it writes, the writer holds an exclusive flock on that temporary file or folder: a
# cleanup (``remove_abandoned_temps``) only removes what it can lock, so it never pulls a file
# from under a live writer, only what a crashed or killed process left (the kernel drops a dead
# process's locks), and only once it is an hour old.

TEMP_SUFFIX = ".tmp"
# A temporary file untouched for this long, and locked by no one, was abandoned.
ABANDONED_AFTER_S = 3600


def _umask() -> int:
    """The process's umask, read without changing it where the OS allows (os.umask alone can
    only be read by setting it, which races with other threads creating files)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _new_temp(directory: str | os.PathLike[str] | None, name: str) -> tuple[int, str]:
    """A new locked temporary file in ``directory`` (None: the system's temporary folder),
    with the permissions an ordinary new file gets (mkstemp alone makes it 0600)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=TEMP_SUFFIX, dir=directory)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    return fd, tmp


def is_regular_target(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is written by temporary name and rename: a regular file or a new name.

    Anything else is written directly, in place: a pipe, a FIFO, a terminal, a device,
    ``/dev/stdout`` (renaming over it would replace the device node or symlink), and any
    symlink (which stays a symlink)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return True


@contextlib.contextmanager
def open_replacing(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """A binary file to write the whole new content of ``path`` to.

    A regular file (or a new name) is written under a temporary name beside it and renamed over
    it when the block ends without an error; on an error the temporary file is removed and
    ``path`` is left as it was. Any other target (see ``is_regular_target``) is written directly.
    """
    path = Path(path)
    if not is_regular_target(path):
        with open(path, "wb") as f:
            yield f
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _new_temp(path.parent, path.name)
    try:
        with os.fdopen(fd, "w+b", closefd=False) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)  # drops the lock, after the rename


def replace_atomic(path: str | os.PathLike[str], write: Callable[[str], object]) -> None:
    """Run ``write(tmp_path)``, then rename what it wrote over ``path``.

    The rename is atomic: readers see the old file or the whole new one, never a part. The
    temporary file lives in a locked temporary folder beside ``path`` (so that a writer that
    itself writes through a temporary name, as the safetensors library does, leaves nothing
    outside it); any error removes it, and after a crash ``remove_abandoned_temps`` does. A
    target that is not a regular file (a FIFO, ``/dev/stdout``, a symlink) is not replaced:
    the file is written in the system's temporary folder, then copied into it.
    """
    path = Path(path)
    regular = is_regular_target(path)
    if regular:
        path.parent.mkdir(parents=True, exist_ok=True)
    folder = tempfile.mkdtemp(
        prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent if regular else None
    )
    fd = os.open(folder, os.O_RDONLY)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        tmp = os.path.join(folder, path.name)
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # what a new file gets (the writer may have made 0600)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if regular:
            os.replace(tmp, path)
        else:
            with open(tmp, "rb") as src, open(path, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        os.close(fd)  # drops the lock


def remove_abandoned_temps(
    folder: str | os.PathLike[str], older_than_s: float = ABANDONED_AFTER_S
) -> list[tuple[Path, int]]:
    """Remove the temporary files (and folders) under ``folder`` that no live writer holds and
    that were not touched for ``older_than_s`` seconds; returns (path, bytes) of each removed."""
    removed = []
    for tmp in sorted(Path(folder).rglob(f".*{TEMP_SUFFIX}")):
        state, size = temp_state(tmp, older_than_s, remove=True)
        if state == "removed":
            removed.append((tmp, size))
    return removed


def temp_state(
    tmp: Path, older_than_s: float = ABANDONED_AFTER_S, *, remove: bool = False
) -> tuple[str, int]:
    """What a temporary file or folder is, and its size: ``"in use"`` (a live writer holds its
    lock), ``"recent"``, ``"abandoned"`` (``"removed"``, if ``remove`` asked), or ``"gone"``."""
    try:
        fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return "gone", 0
    try:
        st = os.fstat(fd)
        size, newest = _size_and_mtime(tmp, st)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return "in use", size
        if time.time() - newest < older_than_s:
            return "recent", size
        if not remove:
            return "abandoned", size
        # Remove it while holding its lock, and only if the name still is this file (a writer
        # may have renamed it into place since it was opened here).
        try:
            same = os.stat(tmp, follow_symlinks=False).st_ino == st.st_ino
        except OSError:
            same = False
        if not same:
            return "gone", 0
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(tmp)
        else:
            os.unlink(tmp)
        return "removed", size
    finally:
        os.close(fd)


def _size_and_mtime(tmp: Path, st: os.stat_result) -> tuple[int, float]:
    """Bytes held, and the last modification, of a temporary file or folder."""
    if not stat.S_ISDIR(st.st_mode):
        return st.st_size, st.st_mtime
    size, newest = 0, st.st_mtime
    for f in tmp.rglob("*"):
        try:
            fst = f.lstat()
        except OSError:
            continue
        newest = max(newest, fst.st_mtime)
        size += fst.st_size if stat.S_ISREG(fst.st_mode) else 0
    return size, newest


def write_atomic(
    path: str | os.PathLike[str], tensors: Mapping[str, np.ndarray], metadata: dict[str, str]
) -> None:
    """Write a safetensors file through the reference library, atomically."""
    import safetensors.numpy  # only conversion writes files: keep it off the start-up path

    arrays = {name: np.ascontiguousarray(a) for name, a in tensors.items()}
    replace_atomic(path, lambda tmp: safetensors.numpy.save_file(arrays, tmp, metadata=metadata))
