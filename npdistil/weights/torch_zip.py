"""Read PyTorch ``pytorch_model.bin`` checkpoints without torch, and without running their pickle.

A ``.bin`` file is a zip archive whose ``data.pkl`` is a pickle, and unpickling calls whatever
functions the pickle names: ``torch.load`` warns never to load untrusted files, and even its
``weights_only`` allow-list had a remote-code-execution hole (CVE-2025-32434). So nothing here
imports or calls what the pickle names: the pickle is checked opcode by opcode, then unpickled
symbolically (an allow-listed global becomes an inert marker), and tensors are cut from the raw
storages by numpy.

Layout written by ``torch.save`` (torch >= 1.6; the prefix is the file stem or ``archive``)::

    <prefix>/data.pkl       protocol-2 pickle: OrderedDict of key -> _rebuild_tensor_v2(...)
    <prefix>/data/<n>       raw little-endian storage n, stored uncompressed, 64-byte aligned
    <prefix>/byteorder      b"little" (absent before torch 1.10: little is assumed)
    <prefix>/version, <prefix>/.format_version, <prefix>/.storage_alignment, ...

Each tensor is ``_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)`` with
``storage`` a persistent id ``("storage", torch.FloatStorage, "<n>", "cpu", numel)``; sizes,
strides and offsets count elements. Tied weights share a storage; a transposed view has a
non-contiguous stride.

The module is longer than the others (~700 lines) on purpose: it is one security boundary,
the only place npdistil reads a pickle, and the opcode check, the symbolic unpickler and the
storage cutting are meant to be audited together, top to bottom.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import pickletools
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import CheckpointError, UnsafeCheckpointError

__all__ = ["read_torch_zip"]

# ---------------------------------------------------------------------------------------------
# Limits. A real data.pkl holds ~40 opcodes (~160 bytes) per tensor: DistilBERT's is ~20 KB.
# ---------------------------------------------------------------------------------------------

MAX_PICKLE_BYTES = 64 * 2**20
# ~50,000 tensors; the opcode check costs ~1 us per opcode, so this also bounds its time.
MAX_PICKLE_OPS = 2_000_000
# Tuples nest 2 deep in a torch pickle. CPython hashes nested tuples recursively with no
# recursion guard: a million-deep tuple used as a dict key crashes the interpreter.
MAX_TUPLE_DEPTH = 32
MAX_NDIM = 32
# The arrays returned may total at most this many times the bytes of the storages they come from
# (tied weights are copied once per key, bfloat16 doubles): a small file can't claim terabytes.
MAX_EXPANSION = 8
_READ_CHUNK = 16 * 2**20

# torch < 1.6 wrote a pickle of this magic number (LONG1, 10 bytes) first, not a zip.
_LEGACY_MAGIC = b"\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"

# ---------------------------------------------------------------------------------------------
# The allow-list: every global a torch 2.13 state dict pickle names, and nothing else.
# ---------------------------------------------------------------------------------------------

# storage class (module torch) -> dtype of its bytes in the file
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype("<u2"),  # no numpy bfloat16: widened to float32 when cut
    "DoubleStorage": np.dtype("<f8"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("u1"),  # one byte per bool; nonzero is True
}
_ORDERED_DICT = ("collections", "OrderedDict")
_REBUILD_TENSOR = ("torch._utils", "_rebuild_tensor_v2")
_REBUILD_PARAMETER = ("torch._utils", "_rebuild_parameter")  # torch.save of an nn.Parameter
ALLOWED_GLOBALS = frozenset(
    {_ORDERED_DICT, _REBUILD_TENSOR, _REBUILD_PARAMETER, *(("torch", s) for s in _STORAGE_DTYPES)}
)

# Opcodes that make plain data, as written by torch.save (protocol 2, or 4 if asked for).
_DATA_OPCODES = frozenset(
    {
        "PROTO", "FRAME", "STOP", "MARK",
        "NONE", "NEWTRUE", "NEWFALSE", "BININT", "BININT1", "BININT2", "LONG1",
        "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8",
        "EMPTY_TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "TUPLE",
        "EMPTY_DICT", "SETITEM", "SETITEMS", "EMPTY_LIST", "APPEND", "APPENDS",
        "BINPUT", "LONG_BINPUT", "MEMOIZE", "BINGET", "LONG_BINGET",
        "GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD", "BINPERSID",
    }
)  # fmt: skip
_STRING_OPCODES = frozenset({"BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"})
_SCALAR_OPCODES = frozenset(
    {"NONE", "NEWTRUE", "NEWFALSE", "BININT", "BININT1", "BININT2", "LONG1", "EMPTY_DICT",
     "EMPTY_LIST"}
)  # fmt: skip
# Opcodes that make objects of arbitrary classes: a state dict never needs them.
_OBJECT_OPCODES = frozenset({"INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "EXT1", "EXT2", "EXT4"})


def read_torch_zip(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read the state dict of a PyTorch zip checkpoint (``torch.save``, torch >= 1.6), safely.

    Returns ``{key: array}`` in the file's order. Arrays are float32, float16, float64, int64,
    int32, int16, int8, uint8 or bool, each its own C-contiguous copy; bfloat16 tensors become
    float32 exactly. Nothing the pickle names is imported or called: anything but plain
    tensors raises :class:`UnsafeCheckpointError`, a malformed file :class:`CheckpointError`.

    >>> state = read_torch_zip("tests/fixtures/tiny-mlm/pytorch_model.bin")  # the tiny test model
    >>> state["distilbert.embeddings.word_embeddings.weight"].shape  # [V, D]
    (700, 20)
    """
    where = os.fsdecode(path)
    with _open_zip(where) as zf:
        archive = _Archive.check(zf, where)
        tensors = _unpickle_state_dict(archive.read_pickle(), where, archive.pickle_name)
        return _materialize(tensors, archive)


# ---------------------------------------------------------------------------------------------
# The zip archive: refuse anything torch.save would not have written, before reading data.
# ---------------------------------------------------------------------------------------------


def _open_zip(where: str) -> zipfile.ZipFile:
    try:
        with open(where, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise CheckpointError(f"{where}: cannot read the checkpoint: {e.strerror or e}") from e
    if not head:
        raise CheckpointError(f"{where}: empty file, not a PyTorch checkpoint")
    if _LEGACY_MAGIC in head:
        raise CheckpointError(
            f"{where}: legacy pre-1.6 torch format is not supported; re-save with torch>=1.6"
        )
    try:
        return zipfile.ZipFile(where)
    except Exception as e:  # zipfile raises BadZipFile, but also EOFError, ValueError, ...
        raise CheckpointError(
            f"{where}: not a PyTorch zip checkpoint ({type(e).__name__}: {e})"
        ) from e


def _unsafe_entry_name(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    absolute = name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":")
    return absolute or ".." in parts


@dataclass(frozen=True)
class _Archive:
    """A checked zip: every entry stored uncompressed, sized within the file, safely named."""

    zf: zipfile.ZipFile
    where: str
    entries: dict[str, zipfile.ZipInfo]
    prefix: str  # entries are "<prefix>/data.pkl", "<prefix>/data/<key>", ...

    @property
    def pickle_name(self) -> str:
        return f"{self.prefix}/data.pkl"

    @classmethod
    def check(cls, zf: zipfile.ZipFile, where: str) -> _Archive:
        file_size = os.path.getsize(where)
        entries: dict[str, zipfile.ZipInfo] = {}
        for info in zf.infolist():
            name = info.filename
            if _unsafe_entry_name(name):
                raise CheckpointError(f"{where}: refuses zip entry {name!r}: absolute or '..' path")
            if name in entries:
                raise CheckpointError(f"{where}: zip entry {name!r} appears twice")
            if info.flag_bits & 0x1:
                raise CheckpointError(f"{where}: zip entry {name!r} is encrypted")
            if info.compress_type != zipfile.ZIP_STORED:
                raise CheckpointError(
                    f"{where}: refuses compressed zip entry {name!r} (method "
                    f"{info.compress_type}); torch.save stores entries uncompressed"
                )
            if info.compress_size != info.file_size or (
                info.header_offset + info.file_size > file_size
            ):
                raise CheckpointError(
                    f"{where}: zip entry {name!r} claims {info.file_size} bytes, "
                    f"inconsistent with the {file_size}-byte file"
                )
            entries[name] = info
        claimed = sum(info.file_size for info in entries.values())
        if claimed > file_size:  # entries overlapping: a small file read many times over
            raise CheckpointError(
                f"{where}: zip entries claim {claimed} bytes in all, more than the "
                f"{file_size}-byte file holds: overlapping entries"
            )
        pickles = sorted(n for n in entries if n.endswith("/data.pkl"))
        if len(pickles) != 1:
            raise CheckpointError(
                f"{where}: expected one '<prefix>/data.pkl' zip entry, found {len(pickles)}"
                + (f": {', '.join(map(repr, pickles[:4]))}" if pickles else "")
            )
        archive = cls(zf, where, entries, pickles[0][: -len("/data.pkl")])
        archive.check_byteorder()
        return archive

    def check_byteorder(self) -> None:
        name = f"{self.prefix}/byteorder"
        if name not in self.entries:
            return  # torch < 1.10 wrote none; those files are little-endian
        if self.entries[name].file_size > 16:
            raise CheckpointError(f"{self.where}: zip entry {name!r} is too long for a byteorder")
        order = self.read(name).strip()
        if order != b"little":
            raise CheckpointError(
                f"{self.where}: zip entry {name!r} says {order!r}; only little-endian "
                "checkpoints are supported"
            )

    def read(self, name: str) -> bytes:
        try:
            return self.zf.read(self.entries[name])
        except Exception as e:  # bad CRC, truncated file, bad local header, ...
            raise CheckpointError(f"{self.where}: cannot read zip entry {name!r}: {e}") from e

    def read_pickle(self) -> bytes:
        size = self.entries[self.pickle_name].file_size
        if size > MAX_PICKLE_BYTES:
            raise CheckpointError(
                f"{self.where}: zip entry {self.pickle_name!r} is {size} bytes; a state dict "
                f"pickle is far smaller (limit {MAX_PICKLE_BYTES})"
            )
        return self.read(self.pickle_name)

    def read_storage(self, name: str) -> np.ndarray:
        """The entry's bytes as a fresh uint8 array, read in chunks (no whole-entry temporary)."""
        info = self.entries[name]
        out = np.empty(info.file_size, np.uint8)
        try:
            with self.zf.open(info) as f:
                pos = 0
                while pos < out.size:
                    chunk = f.read(min(_READ_CHUNK, out.size - pos))
                    if not chunk:
                        raise EOFError(f"ends after {pos} of {out.size} bytes")
                    out[pos : pos + len(chunk)] = np.frombuffer(chunk, np.uint8)
                    pos += len(chunk)
                if f.read(1):  # also makes zipfile check the CRC
                    raise ValueError(f"longer than its {out.size} bytes")
        except CheckpointError:
            raise
        except Exception as e:
            raise CheckpointError(f"{self.where}: cannot read zip entry {name!r}: {e}") from e
        return out


# ---------------------------------------------------------------------------------------------
# The pickle, step 1: a static check of every opcode, before any object is made.
#
# It simulates the unpickler's stack with stand-ins (a str for a string, an int for a tuple's
# nesting depth, None for anything else) to name refused globals, even those that
# STACK_GLOBAL takes from the stack, and to bound what the C unpickler would otherwise trust:
# a 6-byte LONG_BINPUT 2**28 makes it allocate and zero 4 GiB of memo.
# ---------------------------------------------------------------------------------------------


def _refuse_global(module: str, name: str, where: str, entry: str, how: str) -> None:
    if (module, name) not in ALLOWED_GLOBALS:
        raise UnsafeCheckpointError(
            f"{where}: {entry} refuses global {module}.{name} ({how}); a state dict only "
            "needs collections.OrderedDict, torch._utils._rebuild_tensor_v2 and torch storages"
        )


def _opcodes(data: bytes, where: str, entry: str) -> Iterator[tuple[str, Any, int]]:
    ops = pickletools.genops(data)  # parses, never executes; lengths are checked against data
    while True:
        try:
            op, arg, pos = next(ops)
        except StopIteration:
            return
        except Exception as e:  # unknown opcode, truncated argument, bad UTF-8, ...
            raise CheckpointError(f"{where}: malformed pickle in {entry}: {e}") from None
        yield op.name, arg, pos or 0  # pos is None only for file-like input


def _check_pickle(data: bytes, where: str, entry: str) -> None:
    """Walks the opcodes, refusing any global off the allow-list and any opcode outside
    _DATA_OPCODES, and checking stack, memo, nesting and size as the unpickler will use them."""
    stack: list[object] = []
    marks: list[int] = []
    memo: dict[int, object] = {}

    def fail(message: str, pos: int) -> CheckpointError:
        return CheckpointError(f"{where}: malformed pickle in {entry} at byte {pos}: {message}")

    def pop(n: int, pos: int) -> list[object]:
        floor = marks[-1] if marks else 0
        if len(stack) - n < floor:
            raise fail("stack underflow", pos)
        items = stack[len(stack) - n :]
        del stack[len(stack) - n :]
        return items

    def pop_mark(pos: int) -> list[object]:
        if not marks:
            raise fail("no MARK to pop to", pos)
        items = stack[marks[-1] :]
        del stack[marks.pop() :]
        return items

    def push_tuple(items: list[object], pos: int) -> None:
        depth = 1 + max((d for d in items if type(d) is int), default=0)
        if depth > MAX_TUPLE_DEPTH:
            raise fail(f"tuples nested deeper than {MAX_TUPLE_DEPTH}", pos)
        stack.append(depth)

    for count, (name, arg, pos) in enumerate(_opcodes(data, where, entry)):
        if count >= MAX_PICKLE_OPS:
            raise fail(f"more than {MAX_PICKLE_OPS} opcodes", pos)
        if name in _OBJECT_OPCODES:
            if name == "INST":
                module, _, attr = str(arg).partition(" ")
                _refuse_global(module, attr, where, entry, "INST")
            raise UnsafeCheckpointError(f"{where}: {entry} refuses opcode {name} at byte {pos}")
        if name not in _DATA_OPCODES:
            raise fail(f"unsupported opcode {name}", pos)
        if name == "FRAME" and arg > len(data) - pos - 9:
            raise fail(f"FRAME of {arg} bytes runs past the end", pos)
        if name == "MARK":
            marks.append(len(stack))
        elif name in _STRING_OPCODES:
            stack.append(arg)
        elif name in _SCALAR_OPCODES:
            stack.append(None)
        elif name == "EMPTY_TUPLE":
            push_tuple([], pos)
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            push_tuple(pop(int(name[-1]), pos), pos)
        elif name == "TUPLE":
            push_tuple(pop_mark(pos), pos)
        elif name in ("SETITEM", "APPEND", "BUILD"):
            pop(2 if name == "SETITEM" else 1, pos)
            pop(1, pos)  # the dict, list or object acted on stays, as a plain stand-in
            stack.append(None)
        elif name in ("SETITEMS", "APPENDS"):
            if len(pop_mark(pos)) % 2 and name == "SETITEMS":
                raise fail("SETITEMS with an odd number of items", pos)
            pop(1, pos)
            stack.append(None)
        elif name == "GLOBAL":
            module, _, attr = str(arg).partition(" ")
            _refuse_global(module, attr, where, entry, "GLOBAL")
            stack.append(None)
        elif name == "STACK_GLOBAL":
            names = pop(2, pos)
            if not all(type(n) is str for n in names):
                raise UnsafeCheckpointError(
                    f"{where}: {entry} refuses STACK_GLOBAL of computed names at byte {pos}"
                )
            _refuse_global(str(names[0]), str(names[1]), where, entry, "STACK_GLOBAL")
            stack.append(None)
        elif name in ("REDUCE", "BINPERSID"):
            pop(2 if name == "REDUCE" else 1, pos)
            stack.append(None)
        elif name in ("BINPUT", "LONG_BINPUT", "MEMOIZE"):
            index = len(memo) if name == "MEMOIZE" else arg
            if index >= MAX_PICKLE_OPS:
                raise fail(f"memo index {index} out of range", pos)
            memo[index] = pop(1, pos)[0]
            stack.append(memo[index])
        elif name in ("BINGET", "LONG_BINGET"):
            if arg not in memo:
                raise fail(f"memo index {arg} was never set", pos)
            stack.append(memo[arg])
        elif name == "STOP":
            if len(stack) != 1 or marks:
                raise fail("STOP with an unbalanced stack", pos)
            return
    raise fail("no STOP opcode", len(data))


# ---------------------------------------------------------------------------------------------
# The pickle, step 2: a symbolic unpickler. find_class hands back inert markers, REDUCE on a
# marker records its arguments, persistent ids become storage references. BUILD on anything of
# ours is refused, except the state dict's own (torch sets its _metadata), which is ignored.
# ---------------------------------------------------------------------------------------------


class _Refusal(Exception):
    """Raised by the markers below; the unpickler's caller adds the file and entry."""

    def __init__(self, message: str, *, unsafe: bool) -> None:
        super().__init__(message)
        self.unsafe = unsafe


class _Inert:
    __slots__ = ()

    def __setstate__(self, state: object) -> None:
        raise _Refusal(f"refuses BUILD on {self!r}", unsafe=True)


class _Global(_Inert):
    """Stands for an allow-listed global; calling it (REDUCE) builds a record, nothing more."""

    __slots__ = ("module", "name")

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __repr__(self) -> str:
        return f"{self.module}.{self.name}"

    def __call__(self, *args: object) -> object:
        key = (self.module, self.name)
        if key == _ORDERED_DICT and not args:
            return _PickledDict()
        if key == _REBUILD_TENSOR and len(args) in (6, 7):
            return _TensorRef(*args)
        if key == _REBUILD_PARAMETER and len(args) == 3 and type(args[0]) is _TensorRef:
            return args[0]  # (tensor, requires_grad, backward_hooks)
        raise _Refusal(f"refuses call {self}(<{len(args)} arguments>)", unsafe=False)


class _PickledDict(dict):  # type: ignore[type-arg]
    """collections.OrderedDict() as unpickled here: a dict whose BUILD state is ignored."""

    __slots__ = ()

    def __setstate__(self, state: object) -> None:
        if type(state) is not dict:  # torch: {"_metadata": OrderedDict(...)}
            kind = type(state).__name__
            raise _Refusal(f"refuses BUILD on a dict with a {kind} state", unsafe=True)


class _TensorRef(_Inert):
    """The arguments of one _rebuild_tensor_v2 call, unchecked until its key is known."""

    __slots__ = ("storage", "offset", "size", "stride", "requires_grad", "hooks", "metadata")

    def __init__(self, *args: object) -> None:
        self.storage, self.offset, self.size, self.stride, self.requires_grad, self.hooks = args[:6]
        self.metadata = args[6] if len(args) > 6 else None

    def __repr__(self) -> str:
        return "a tensor"


@dataclass(frozen=True)
class _StorageRef:
    """A persistent id, checked: the storage's zip key, class name and element count."""

    key: str
    storage: str  # a key of _STORAGE_DTYPES
    numel: int

    def __setstate__(self, state: object) -> None:
        raise _Refusal("refuses BUILD on a storage", unsafe=True)


def _kind(obj: object) -> str:
    """Names an untrusted object without repr-ing it (it may be deep or huge)."""
    if type(obj) in (int, str) and len(str(obj)) <= 40:
        return repr(obj)
    return type(obj).__name__


class _SymbolicUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, where: str, entry: str) -> None:
        super().__init__(io.BytesIO(data))
        self.where, self.entry = where, entry

    def find_class(self, module: str, name: str) -> _Global:
        # Reached by GLOBAL, STACK_GLOBAL, INST and OBJ alike; nothing is imported here.
        _refuse_global(module, name, self.where, self.entry, "find_class")
        return _Global(module, name)

    def persistent_load(self, pid: object) -> _StorageRef:
        if not (
            type(pid) is tuple
            and len(pid) == 5
            and type(pid[0]) is str
            and pid[0] == "storage"
            and type(pid[1]) is _Global
            and pid[1].module == "torch"
            and pid[1].name in _STORAGE_DTYPES
            and type(pid[2]) is str
            and 0 < len(pid[2]) <= 255
            and type(pid[3]) is str  # the device it was saved from: irrelevant here
            and type(pid[4]) is int
            and pid[4] >= 0
        ):
            raise _Refusal(
                "has a malformed storage reference: expected "
                "('storage', torch.<Type>Storage, key, location, numel)",
                unsafe=False,
            )
        return _StorageRef(key=pid[2], storage=pid[1].name, numel=pid[4])


def _unpickle_symbolic(data: bytes, where: str, entry: str) -> object:
    """Unpickle with markers for globals. Callers check the pickle with _check_pickle first."""
    try:
        return _SymbolicUnpickler(data, where, entry).load()
    except CheckpointError:
        raise
    except _Refusal as e:
        error = UnsafeCheckpointError if e.unsafe else CheckpointError
        raise error(f"{where}: {entry} {e}") from None
    except Exception as e:  # UnpicklingError, TypeError from a bad REDUCE, ...
        raise CheckpointError(
            f"{where}: malformed pickle in {entry}: {type(e).__name__}: {e}"
        ) from None


def _unpickle_state_dict(data: bytes, where: str, entry: str) -> dict[str, _TensorRef]:
    _check_pickle(data, where, entry)
    result = _unpickle_symbolic(data, where, entry)
    if type(result) not in (_PickledDict, dict):
        raise CheckpointError(f"{where}: {entry} holds a {_kind(result)}, not a state dict")
    assert isinstance(result, dict)
    for key, value in result.items():
        if type(key) is not str:
            raise CheckpointError(f"{where}: {entry} has a non-string key {_kind(key)}")
        if type(value) is not _TensorRef:
            raise CheckpointError(
                f"{where}: {entry} key {key!r} is a {_kind(value)}, not a tensor "
                "(only plain state dicts of tensors are supported)"
            )
    return dict(result)


# ---------------------------------------------------------------------------------------------
# Tensors: check each (storage, offset, size, stride) against its storage, read each storage
# once, cut the tensors out of it with numpy strides, copy.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.size)


def _int_tuple(value: object) -> tuple[int, ...] | None:
    if type(value) is not tuple or len(value) > MAX_NDIM:
        return None
    if not all(type(v) is int for v in value):
        return None
    return value


def _layout(key: str, ref: _TensorRef, where: str) -> _Layout:
    """The tensor's checked layout: every element it names lies inside its storage."""
    size, stride = _int_tuple(ref.size), _int_tuple(ref.stride)
    problem: str | None
    if type(ref.storage) is not _StorageRef:
        problem = f"storage is a {_kind(ref.storage)}, not a persistent storage reference"
    elif type(ref.offset) is not int or ref.offset < 0:
        problem = f"storage offset {_kind(ref.offset)} is not a non-negative int"
    elif size is None or stride is None or len(size) != len(stride):
        problem = f"size and stride must be tuples of up to {MAX_NDIM} ints, of equal length"
    elif any(s < 0 for s in size) or any(s < 0 for s in stride):
        problem = f"negative size or stride: size {size}, stride {stride}"
    elif type(ref.requires_grad) is not bool or type(ref.hooks) not in (_PickledDict, dict):
        problem = "malformed requires_grad or backward hooks"
    elif ref.hooks or ref.metadata not in (None, {}):
        problem = "backward hooks or tensor metadata (e.g. a negated view) are not supported"
    else:
        layout = _Layout(ref.storage, ref.offset, size, stride)
        problem = _out_of_bounds(layout)
        if problem is None:
            return layout
    raise CheckpointError(f"{where}: tensor {key!r}: {problem}")


def _out_of_bounds(layout: _Layout) -> str | None:
    numel, offset = layout.storage.numel, layout.offset
    if layout.numel == 0:
        if offset > numel:
            return f"storage offset {offset} is past the storage's {numel} elements"
        return None
    last = offset + sum((n - 1) * s for n, s in zip(layout.size, layout.stride, strict=True))
    if last >= numel:
        return (
            f"size {layout.size}, stride {layout.stride} at offset {offset} reach element "
            f"{last}, outside the storage's {numel} elements"
        )
    if layout.numel > numel:  # only overlapping (stride 0) views can
        return f"{layout.numel} elements from a storage of {numel}: broadcast views refused"
    return None


def _output_dtype(storage: str) -> np.dtype:
    if storage == "BFloat16Storage":
        return np.dtype(np.float32)
    if storage == "BoolStorage":
        return np.dtype(np.bool_)
    return _STORAGE_DTYPES[storage].newbyteorder("=")


def _cut(data: np.ndarray, layout: _Layout) -> np.ndarray:
    """The tensor's elements from its storage (typed, 1-D), as a new C-contiguous array."""
    if layout.numel == 0:
        return np.zeros(layout.size, _output_dtype(layout.storage.storage))
    # a dimension of size 1 never steps, whatever its stride says (torch allows any)
    pairs = zip(layout.size, layout.stride, strict=True)
    strides = [s * data.itemsize if n > 1 else 0 for n, s in pairs]
    view = np.lib.stride_tricks.as_strided(
        data[layout.offset :], shape=layout.size, strides=strides, writeable=False
    )
    if layout.storage.storage == "BFloat16Storage":  # bfloat16 is float32's upper half
        return (view.astype(np.uint32, order="C") << 16).view(np.float32)
    if layout.storage.storage == "BoolStorage":
        return np.not_equal(view, 0, order="C")
    return view.astype(_output_dtype(layout.storage.storage), order="C")


def _is_whole(layout: _Layout, data: np.ndarray) -> bool:
    """Whether the tensor is its whole storage, in C order, with the output dtype already."""
    if layout.offset or layout.numel != data.size or layout.storage.storage == "BoolStorage":
        return False
    if data.dtype != _output_dtype(layout.storage.storage):  # bfloat16, big-endian hosts
        return False
    expected = 1
    for n, s in zip(reversed(layout.size), reversed(layout.stride), strict=True):
        if n > 1 and s != expected:
            return False
        expected *= n
    return True


def _storages(layouts: dict[str, _Layout], archive: _Archive) -> dict[str, _StorageRef]:
    """Each storage key's reference; all tensors sharing one must agree, its entry must fit."""
    where, found = archive.where, dict[str, _StorageRef]()
    for key, layout in layouts.items():
        ref = layout.storage
        seen = found.setdefault(ref.key, ref)
        if seen != ref:
            raise CheckpointError(
                f"{where}: tensor {key!r}: storage {ref.key!r} is declared as both "
                f"{seen.storage}[{seen.numel}] and {ref.storage}[{ref.numel}]"
            )
    for ref in found.values():
        name = f"{archive.prefix}/data/{ref.key}"
        if name not in archive.entries:
            raise CheckpointError(f"{where}: storage zip entry {name!r} is missing")
        nbytes = ref.numel * _STORAGE_DTYPES[ref.storage].itemsize
        if archive.entries[name].file_size != nbytes:
            raise CheckpointError(
                f"{where}: zip entry {name!r} has {archive.entries[name].file_size} bytes, "
                f"but {ref.storage} of {ref.numel} elements needs {nbytes}"
            )
    return found


def _materialize(tensors: dict[str, _TensorRef], archive: _Archive) -> dict[str, np.ndarray]:
    where = archive.where
    layouts = {key: _layout(key, ref, where) for key, ref in tensors.items()}
    storages = _storages(layouts, archive)
    stored = sum(r.numel * _STORAGE_DTYPES[r.storage].itemsize for r in storages.values())
    wanted = sum(
        lay.numel * _output_dtype(lay.storage.storage).itemsize for lay in layouts.values()
    )
    if wanted > MAX_EXPANSION * stored + 2**20:
        raise CheckpointError(
            f"{where}: its tensors would take {wanted} bytes from {stored} bytes of storage "
            f"(more than {MAX_EXPANSION} times): too many keys share the same storages"
        )
    uses: dict[str, int] = {}
    for layout in layouts.values():
        uses[layout.storage.key] = uses.get(layout.storage.key, 0) + 1
    loaded: dict[str, np.ndarray] = {}
    out: dict[str, np.ndarray] = {}
    for key, layout in layouts.items():
        ref = layout.storage
        if ref.key not in loaded:
            raw = archive.read_storage(f"{archive.prefix}/data/{ref.key}")
            loaded[ref.key] = raw.view(_STORAGE_DTYPES[ref.storage])
        if uses[ref.key] == 1 and _is_whole(layout, loaded[ref.key]):
            # the usual case: the storage was read for this tensor alone, so it can be the
            # array itself; saves a copy of every weight (a quarter of the load time)
            out[key] = loaded[ref.key].reshape(layout.size)
        else:
            out[key] = _cut(loaded[ref.key], layout)
        uses[ref.key] -= 1
        if not uses[ref.key]:
            del loaded[ref.key]  # free each storage after its last tensor
    return out
