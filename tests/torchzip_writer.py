"""Write PyTorch zip checkpoints (``pytorch_model.bin``) with numpy only, for tests without torch.

The layout is the one torch 2.13's ``torch.save(state_dict, path)`` writes (checked by hand once:
``torch.load(path, weights_only=True)`` reads these files back with identical values):

- a protocol-2 pickle ``<prefix>/data.pkl``: ``collections.OrderedDict`` rebuilt by REDUCE, one
  ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`` per
  key with persistent id ``("storage", torch.<Type>Storage, "<n>", "cpu", numel)``, SETITEMS in
  batches of 1000, then BUILD with the ``_metadata`` attribute a module's state dict carries;
- ``<prefix>/data/<n>`` raw little-endian storages, in order of first use;
- ``.format_version``, ``.storage_alignment``, ``byteorder``, ``version``,
  ``.data/serialization_id``;
- zip entries stored, their data 64-byte aligned by an "FB" padding extra field, each followed by
  a data descriptor, and zip64 end records, as torch's miniz writes them.

Storages follow numpy: arrays that are views of one base array share one storage, so pass
``{"w": w, "wt": w.T}`` for a transposed view of a shared storage; the same array object under
two keys is pickled as one tensor (as ``torch.save`` does for one tensor under two names).

Hostile files: :func:`write_zip` writes any list of :class:`ZipEntry` (compressed, misnamed,
lying about their size), :func:`torch_pickle` makes the pickle from explicit
:class:`TensorRecord` layouts, and ``write_torch_zip(..., pickle_bytes=..., edit=...)`` swaps
the pickle or edits the entry list before writing.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import BinaryIO

import numpy as np

STORAGE_CLASSES = {
    np.dtype(np.float32): "FloatStorage",
    np.dtype(np.float16): "HalfStorage",
    np.dtype(np.float64): "DoubleStorage",
    np.dtype(np.int64): "LongStorage",
    np.dtype(np.int32): "IntStorage",
    np.dtype(np.int16): "ShortStorage",
    np.dtype(np.int8): "CharStorage",
    np.dtype(np.uint8): "ByteStorage",
    np.dtype(np.bool_): "BoolStorage",
}
BF16 = "BFloat16Storage"

ALIGNMENT = 64
SETITEMS_BATCH = 1000  # pickle's _BATCHSIZE


@dataclass(frozen=True)
class TensorRecord:
    """One tensor as the pickle describes it (sizes, strides and offset count elements)."""

    key: str
    storage_class: str  # "FloatStorage", ...
    storage_key: str  # the zip entry <prefix>/data/<storage_key>
    numel: int  # elements in the storage
    offset: int = 0
    size: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    same_as: str | None = None  # pickle as the very same tensor object as this earlier key
    parameter: bool = False  # an nn.Parameter: _rebuild_parameter(tensor, True, OrderedDict())


@dataclass(frozen=True)
class ZipEntry:
    name: str
    data: bytes | np.ndarray  # an ndarray must be C-contiguous uint8
    deflate: bool = False
    declared_size: int | None = None  # an uncompressed size to claim instead of the real one


# ---------------------------------------------------------------------------------------------
# State dict -> tensor records and storages
# ---------------------------------------------------------------------------------------------


def to_bfloat16_bits(a: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounded to nearest even. Finite values only."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def from_bfloat16_bits(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _root(a: np.ndarray) -> np.ndarray:
    root = a
    while isinstance(root.base, np.ndarray):
        root = root.base
    return root


def _storage_view(a: np.ndarray) -> tuple[np.ndarray, int, tuple[int, ...]]:
    """(storage array, element offset, element strides) of a, sharing a's base when it can."""
    root, itemsize = _root(a), a.itemsize
    delta = a.__array_interface__["data"][0] - root.__array_interface__["data"][0]
    shares = (
        root.dtype == a.dtype
        and root.flags.c_contiguous
        and delta % itemsize == 0
        and all(s >= 0 and s % itemsize == 0 for s in a.strides)
    )
    if not shares:  # e.g. negative strides, which torch doesn't have: store a copy
        root = np.ascontiguousarray(a)
        return root, 0, tuple(s // itemsize for s in root.strides)
    return root, delta // itemsize, tuple(s // itemsize for s in a.strides)


def plan(
    state_dict: Mapping[str, np.ndarray],
    *,
    tie: Mapping[str, str] | None = None,
    bfloat16: Iterable[str] = (),
    parameters: Iterable[str] = (),
) -> tuple[list[TensorRecord], dict[str, np.ndarray]]:
    """Tensor records and storages (key -> little-endian bytes as uint8) for a state dict.

    ``tie`` maps extra keys to existing ones: each is written after the state dict's keys as its
    own tensor over the same storage, as a module's state dict has tied weights (``detach()``
    makes separate tensors). ``bfloat16`` names float32 arrays to store as bfloat16;
    ``parameters`` names tensors to pickle as ``nn.Parameter`` (torch.save of a parameter).
    """
    bf16, params = set(bfloat16), set(parameters)
    records: list[TensorRecord] = []
    storages: dict[str, np.ndarray] = {}
    by_root: dict[int, tuple[str, str]] = {}  # id(root) -> (storage key, class)
    keep: list[np.ndarray] = []  # holds roots alive so their ids stay unique
    first_key_of: dict[int, str] = {}  # id(array) -> first key it appeared under
    for key, value in state_dict.items():
        if id(value) in first_key_of:
            first = next(r for r in records if r.key == first_key_of[id(value)])
            records.append(replace(first, key=key, same_as=first.key))
            continue
        a = np.asarray(value)
        first_key_of[id(value)] = key
        cls = BF16 if key in bf16 else STORAGE_CLASSES[np.dtype(a.dtype.name)]
        if cls == BF16 and a.dtype != np.float32:
            raise ValueError(f"{key}: bfloat16 storage needs a float32 array")
        root, offset, stride = _storage_view(a)
        keep.append(root)
        if id(root) not in by_root:
            storage_key = str(len(storages))
            by_root[id(root)] = (storage_key, cls)
            flat = root.reshape(-1)
            if cls == BF16:
                flat = to_bfloat16_bits(flat)
            storages[storage_key] = flat.astype(flat.dtype.newbyteorder("<")).view(np.uint8)
        storage_key, root_cls = by_root[id(root)]
        if root_cls != cls:
            raise ValueError(f"{key}: shares a base array stored as {root_cls}, not {cls}")
        records.append(
            TensorRecord(
                key, cls, storage_key, root.size, offset, a.shape, stride, parameter=key in params
            )
        )
    for key, source in (tie or {}).items():
        first = next(r for r in records if r.key == source)
        records.append(replace(first, key=key, same_as=None))
    return records, storages


# ---------------------------------------------------------------------------------------------
# The pickle, emitted opcode by opcode as CPython's pickler does for torch's state dicts
# ---------------------------------------------------------------------------------------------


def pickle_int(x: int) -> bytes:
    if 0 <= x < 0x100:
        return b"K" + bytes([x])
    if 0 <= x < 0x10000:
        return b"M" + struct.pack("<H", x)
    if -(2**31) <= x < 2**31:
        return b"J" + struct.pack("<i", x)
    n = (x.bit_length() >> 3) + 1
    data = x.to_bytes(n, "little", signed=True)
    if x < 0 and n > 1 and data[-1] == 0xFF and data[-2] & 0x80:
        data = data[:-1]
    return b"\x8a" + bytes([len(data)]) + data


def pickle_str(s: str, protocol: int = 2) -> bytes:
    data = s.encode("utf-8", "surrogatepass")
    if protocol >= 4 and len(data) < 256:
        return b"\x8c" + bytes([len(data)]) + data
    return b"X" + struct.pack("<I", len(data)) + data


def pickle_global(module: str, name: str) -> bytes:
    """The protocol-2 GLOBAL opcode (protocol 4 uses STACK_GLOBAL of two strings)."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


class _Emitter:
    """Opcodes plus the pickler's memo: every string, global, tuple and object is memoized."""

    def __init__(self, protocol: int) -> None:
        self.protocol = protocol
        self.ops: list[bytes] = []
        self.memo: dict[object, int] = {}

    def emit(self, *ops: bytes) -> None:
        self.ops.extend(ops)

    def put(self, tag: object) -> None:
        index = len(self.memo)
        self.memo[tag] = index
        if self.protocol >= 4:
            self.emit(b"\x94")  # MEMOIZE
        elif index < 256:
            self.emit(b"q" + bytes([index]))
        else:
            self.emit(b"r" + struct.pack("<I", index))

    def get(self, tag: object) -> bool:
        if tag not in self.memo:
            return False
        index = self.memo[tag]
        self.emit(b"h" + bytes([index]) if index < 256 else b"j" + struct.pack("<I", index))
        return True

    def string(self, s: str, tag: object = None) -> None:
        if tag is not None and self.get(tag):
            return
        self.emit(pickle_str(s, self.protocol))
        self.put(tag if tag is not None else object())

    def global_(self, module: str, name: str) -> None:
        if self.get(("global", module, name)):
            return
        if self.protocol >= 4:
            self.string(module, ("str", module))
            self.string(name, ("str", name))
            self.emit(b"\x93")  # STACK_GLOBAL
        else:
            self.emit(pickle_global(module, name))
        self.put(("global", module, name))

    def int_tuple(self, values: tuple[int, ...]) -> None:
        if not values:
            self.emit(b")")
            return
        ints = [pickle_int(v) for v in values]
        if len(values) <= 3:
            self.emit(*ints, b"\x85\x86\x87"[len(values) - 1 : len(values)])
        else:
            self.emit(b"(", *ints, b"t")
        self.put(object())

    def ordered_dict(self) -> None:
        self.global_("collections", "OrderedDict")
        self.emit(b")R")
        self.put(object())

    def tensor(self, r: TensorRecord) -> None:
        if r.same_as is not None:
            if not self.get(("tensor", r.same_as)):
                raise ValueError(f"{r.key}: same_as {r.same_as!r} was not written before")
            return
        if r.parameter:
            self.global_("torch._utils", "_rebuild_parameter")
        self.global_("torch._utils", "_rebuild_tensor_v2")
        self.emit(b"((")  # MARK args, MARK persistent id
        self.string("storage", "storage")
        self.global_("torch", r.storage_class)
        self.string(r.storage_key, ("storage key", r.storage_key))
        self.string("cpu", "cpu")
        self.emit(pickle_int(r.numel), b"t")
        self.put(object())
        self.emit(b"Q", pickle_int(r.offset))  # BINPERSID
        self.int_tuple(r.size)
        self.int_tuple(r.stride)
        self.emit(b"\x89")  # requires_grad False
        self.ordered_dict()  # backward hooks
        self.emit(b"t")
        self.put(object())
        self.emit(b"R")
        if r.parameter:
            self.put(object())
            self.emit(b"\x88")  # requires_grad True
            self.ordered_dict()
            self.emit(b"\x87")  # TUPLE3
            self.put(object())
            self.emit(b"R")
        self.put(("tensor", r.key))

    def metadata(self, modules: list[str]) -> None:
        """BUILD state {"_metadata": OrderedDict(module -> {"version": 1})}."""
        self.emit(b"}")
        self.put(object())
        self.string("_metadata")
        self.ordered_dict()
        if len(modules) > 1:
            self.emit(b"(")
        for module in modules:
            self.string(module)
            self.emit(b"}")
            self.put(object())
            self.string("version", "version")
            self.emit(pickle_int(1), b"s")
        self.emit(b"u" if len(modules) > 1 else b"s", b"sb")  # modules; "_metadata"; BUILD

    def framed(self) -> bytes:
        """Protocol 4 wraps opcodes in FRAMEs of about 64 KiB, as CPython's framer does."""
        head = b"\x80" + bytes([self.protocol])
        if self.protocol < 4:
            return head + b"".join(self.ops)
        frames, current = [], b""
        for op in self.ops:
            current += op
            if len(current) >= 65536:
                frames.append(current)
                current = b""
        frames.append(current)
        return head + b"".join(b"\x95" + struct.pack("<Q", len(f)) + f for f in frames if f)


def torch_pickle(
    records: Iterable[TensorRecord], *, protocol: int = 2, metadata: bool = True
) -> bytes:
    """data.pkl for these tensors, as torch.save(state_dict) pickles it (protocol 2 or 4)."""
    records = list(records)
    e = _Emitter(protocol)
    e.ordered_dict()
    for start in range(0, len(records), SETITEMS_BATCH):
        batch = records[start : start + SETITEMS_BATCH]
        if len(batch) > 1:
            e.emit(b"(")
        for r in batch:
            e.string(r.key)
            e.tensor(r)
        e.emit(b"u" if len(batch) > 1 else b"s")
    if metadata:
        modules = sorted({r.key.rpartition(".")[0] for r in records} | {""})
        e.metadata(modules)
    e.emit(b".")
    return e.framed()


# ---------------------------------------------------------------------------------------------
# The zip archive, laid out as torch's miniz writer does
# ---------------------------------------------------------------------------------------------

SERIALIZATION_ID = b"1234567890123456789012345678901234567890"


def torch_entries(
    records: Iterable[TensorRecord],
    storages: Mapping[str, np.ndarray | bytes],
    *,
    prefix: str = "archive",
    pickle_bytes: bytes | None = None,
    byteorder: bytes | None = b"little",
    protocol: int = 2,
) -> list[ZipEntry]:
    if pickle_bytes is None:
        pickle_bytes = torch_pickle(records, protocol=protocol)
    entries = [
        ZipEntry(f"{prefix}/data.pkl", pickle_bytes),
        ZipEntry(f"{prefix}/.format_version", b"1"),
        ZipEntry(f"{prefix}/.storage_alignment", b"64"),
    ]
    if byteorder is not None:
        entries.append(ZipEntry(f"{prefix}/byteorder", byteorder))
    entries += [ZipEntry(f"{prefix}/data/{key}", data) for key, data in storages.items()]
    entries += [
        ZipEntry(f"{prefix}/version", b"3\n"),
        ZipEntry(f"{prefix}/.data/serialization_id", SERIALIZATION_ID),
    ]
    return entries


def _bytes_of(data: bytes | np.ndarray) -> memoryview:
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8).data
    return memoryview(data)


def _deflate(view: memoryview) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunks = [c.compress(view[i : i + 2**24]) for i in range(0, len(view), 2**24)]
    return b"".join(chunks) + c.flush()


def write_zip(file: str | os.PathLike[str] | BinaryIO, entries: Iterable[ZipEntry]) -> None:
    """A zip with torch's layout: 64-byte aligned data, data descriptors, zip64 end records."""
    if isinstance(file, str | os.PathLike):
        with open(file, "wb") as f:
            write_zip(f, entries)
        return
    out, offset, central = file, 0, []
    for entry in entries:
        name = entry.name.encode("utf-8")
        raw = _bytes_of(entry.data)
        crc, size = zlib.crc32(raw), len(raw)
        payload = _deflate(raw) if entry.deflate else raw
        method = 8 if entry.deflate else 0
        flags = 0x0808 if size else 0x0800  # UTF-8 names; a data descriptor unless empty
        pad = -(offset + 30 + len(name) + 4) % ALIGNMENT
        extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
        # fmt: off
        header = struct.pack(
            "<IHHHHHIIIHH", 0x04034B50,  # local file header
            0, flags, method, 0, 0,  # version needed, flags, method, time, date
            0 if size else crc, 0, 0,  # crc, sizes: in the data descriptor instead
            len(name), len(extra),
        )
        # fmt: on
        declared = size if entry.declared_size is None else entry.declared_size
        descriptor = struct.pack("<IIII", 0x08074B50, crc, len(payload), declared) if size else b""
        out.write(header + name + extra)
        out.write(payload)
        out.write(descriptor)
        # fmt: off
        central.append(struct.pack(
            "<IHHHHHHIIIHHHHHII", 0x02014B50,  # central directory header
            0, 0, flags, method, 0, 0,  # made by, needed, flags, method, time, date
            crc, len(payload), declared,  # crc, compressed and uncompressed sizes
            len(name), 0, 0, 0, 0, 0,  # name, extra, comment lengths; disk; attributes
            offset,
        ) + name)
        # fmt: on
        offset += len(header) + len(name) + len(extra) + len(payload) + len(descriptor)
    directory = b"".join(central)
    n = len(central)
    zip64_end = struct.pack(
        "<IQHHIIQQQQ", 0x06064B50, 44, 0x031E, 0x2D, 0, 0, n, n, len(directory), offset
    )
    locator = struct.pack("<IIQI", 0x07064B50, 0, offset + len(directory), 1)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n, n, len(directory), offset, 0)
    out.write(directory + zip64_end + locator + end)


def write_torch_zip(
    path: str | os.PathLike[str] | BinaryIO,
    state_dict: Mapping[str, np.ndarray],
    *,
    prefix: str = "archive",
    tie: Mapping[str, str] | None = None,
    bfloat16: Iterable[str] = (),
    parameters: Iterable[str] = (),
    protocol: int = 2,
    pickle_bytes: bytes | None = None,
    byteorder: bytes | None = b"little",
    edit: Callable[[list[ZipEntry]], list[ZipEntry]] | None = None,
) -> None:
    """Write ``state_dict`` as torch.save would (see the module docstring for the options)."""
    records, storages = plan(state_dict, tie=tie, bfloat16=bfloat16, parameters=parameters)
    entries = torch_entries(
        records,
        storages,
        prefix=prefix,
        pickle_bytes=pickle_bytes,
        byteorder=byteorder,
        protocol=protocol,
    )
    write_zip(path, edit(entries) if edit else entries)


def torch_zip_bytes(state_dict: Mapping[str, np.ndarray], **options: object) -> bytes:
    buffer = io.BytesIO()
    write_torch_zip(buffer, state_dict, **options)  # type: ignore[arg-type]
    return buffer.getvalue()
