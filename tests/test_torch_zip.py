"""npdistil.weights.torch_zip: reading pytorch_model.bin without torch, and refusing what isn't
weights.

Valid files come from tests/torchzip_writer.py, which writes torch 2.13's layout byte for byte
(checked by hand against torch.load); hostile ones are crafted here opcode by opcode.
"""

from __future__ import annotations

import os
import pickle
import pickletools
import shlex
import struct
import subprocess
import time
import tracemalloc
from collections import Counter
from dataclasses import astuple
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torchzip_writer import (
    TensorRecord,
    ZipEntry,
    from_bfloat16_bits,
    pickle_global,
    pickle_int,
    pickle_str,
    plan,
    to_bfloat16_bits,
    torch_entries,
    torch_pickle,
    torch_zip_bytes,
    write_torch_zip,
    write_zip,
)

from npdistil.errors import CheckpointError, UnsafeCheckpointError
from npdistil.weights import torch_zip
from npdistil.weights.torch_zip import read_torch_zip

RNG = np.random.default_rng(0)


def refused(path: Path, *fragments: str, error: type[Exception] = CheckpointError) -> str:
    """Reads path expecting `error`, whose message names the file and every fragment."""
    with pytest.raises(error) as info:
        read_torch_zip(path)
    message = str(info.value)
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def write_records(
    path: Path, records: list[TensorRecord], storages: dict[str, bytes], **options: object
) -> Path:
    write_zip(path, torch_entries(records, storages, **options))  # type: ignore[arg-type]
    return path


# ---------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------

ALL_DTYPES: dict[str, np.ndarray] = {
    "f32": RNG.standard_normal((3, 4)).astype(np.float32),
    "f16": RNG.standard_normal(7).astype(np.float16),
    "f64": RNG.standard_normal((2, 1, 3)),
    "i64": np.array([-(2**62), 2**62, 0, -1]),
    "i32": np.array([-(2**31), 2**31 - 1], np.int32),
    "i16": np.array([-300, 300, 7], np.int16),
    "i8": np.array([-128, 127], np.int8),
    "u8": np.array([0, 255, 9], np.uint8),
    "bool": np.array([[True, False], [False, True]]),
    "scalar": np.array(2.5, np.float32),
    "empty": np.zeros((0, 5), np.float32),
    "block.layer.0.weight": RNG.standard_normal((2, 2, 2, 2, 2)).astype(np.float32),
}


@pytest.mark.parametrize("protocol", [2, 4])
def test_every_dtype_round_trips_exactly(tmp_path: Path, protocol: int) -> None:
    path = tmp_path / "all.bin"
    write_torch_zip(path, ALL_DTYPES, protocol=protocol)
    state = read_torch_zip(path)
    assert list(state) == list(ALL_DTYPES)
    for key, expected in ALL_DTYPES.items():
        got = state[key]
        assert got.dtype == expected.dtype and got.shape == expected.shape, key
        assert np.array_equal(got, expected), key
        assert got.flags.c_contiguous and got.flags.writeable, key


def test_bfloat16_becomes_float32_exactly(tmp_path: Path) -> None:
    bits = np.array([0x3F80, 0xC000, 0x7F80, 0xFF80, 0x0001, 0x8000, 0x4049, 0x7F7F], np.uint16)
    expected = [1.0, -2.0, np.inf, -np.inf, 2.0**-133, -0.0, 3.140625, 3.3895313892515355e38]
    record = TensorRecord("bf", "BFloat16Storage", "0", bits.size, 0, (2, 4), (4, 1))
    path = write_records(tmp_path / "bf16.bin", [record], {"0": bits.tobytes()})
    got = read_torch_zip(path)["bf"]
    assert got.dtype == np.float32 and got.shape == (2, 4)
    assert got.ravel().tolist() == expected
    assert np.signbit(got.ravel()[5])
    # through the writer's float32 -> bfloat16 rounding, a transposed view too
    x = RNG.standard_normal((3, 5)).astype(np.float32)
    write_torch_zip(tmp_path / "bf16b.bin", {"x": x, "xt": x.T}, bfloat16={"x", "xt"})
    state = read_torch_zip(tmp_path / "bf16b.bin")
    rounded = from_bfloat16_bits(to_bfloat16_bits(x))
    assert np.array_equal(state["x"], rounded) and np.array_equal(state["xt"], rounded.T)
    print("bf16 max abs rounding of the writer:", float(np.abs(rounded - x).max()))


def test_tied_weights_share_one_storage_read_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    embeddings = RNG.standard_normal((6, 4)).astype(np.float32)
    state = {"word_embeddings.weight": embeddings, "bias": np.ones(6, np.float32)}
    path = tmp_path / "tied.bin"
    write_torch_zip(path, state, tie={"vocab_projector.weight": "word_embeddings.weight"})
    reads: list[str] = []
    original = torch_zip._Archive.read_storage

    def counting(self: torch_zip._Archive, name: str) -> np.ndarray:
        reads.append(name)
        return original(self, name)

    monkeypatch.setattr(torch_zip._Archive, "read_storage", counting)
    got = read_torch_zip(path)
    assert list(got) == ["word_embeddings.weight", "bias", "vocab_projector.weight"]
    assert np.array_equal(got["vocab_projector.weight"], embeddings)
    assert sorted(reads) == ["archive/data/0", "archive/data/1"]  # each storage once
    got["word_embeddings.weight"][0, 0] = 99.0  # the two keys are independent arrays
    assert got["vocab_projector.weight"][0, 0] == embeddings[0, 0]


def test_one_tensor_under_two_keys(tmp_path: Path) -> None:
    w = RNG.standard_normal((2, 3)).astype(np.float32)
    path = tmp_path / "alias.bin"
    write_torch_zip(path, {"a": w, "b": w})  # pickled once, then BINGET: one tensor object
    ops = [op.name for op, _, _ in pickletools.genops(torch_pickle(plan({"a": w, "b": w})[0]))]
    assert ops.count("BINPERSID") == 1
    got = read_torch_zip(path)
    assert np.array_equal(got["a"], w) and np.array_equal(got["b"], w)
    assert not np.shares_memory(got["a"], got["b"])


def test_transposed_and_strided_views(tmp_path: Path) -> None:
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    big = np.arange(40, dtype=np.int64).reshape(5, 8)
    views: dict[str, np.ndarray] = {
        "w": w,
        "w.T": w.T,
        "col": big[:, 3],
        "block": big[1:4, ::3],
        "tail": big[4, 2:],
    }
    records, _ = plan(views)
    assert [r.stride for r in records] == [(4, 1), (1, 4), (8,), (8, 3), (1,)]
    assert [r.offset for r in records] == [0, 0, 3, 8, 34]
    path = tmp_path / "views.bin"
    write_torch_zip(path, views)
    got = read_torch_zip(path)
    for key, expected in views.items():
        assert np.array_equal(got[key], expected), key
        assert got[key].flags.c_contiguous, key
    assert got["w.T"].tolist() == w.T.tolist()


def test_prefix_parameters_and_old_files_without_byteorder(tmp_path: Path) -> None:
    w = RNG.standard_normal((2, 2)).astype(np.float32)
    path = tmp_path / "pytorch_model.bin"
    write_torch_zip(path, {"p": w}, prefix="pytorch_model", parameters={"p"}, byteorder=None)
    assert np.array_equal(read_torch_zip(path)["p"], w)


def test_full_size_distilbert(tmp_path: Path) -> None:
    """The real model's 106 tensors, 65.8M parameters, 251 MiB, tied MLM projector."""
    shapes: dict[str, tuple[int, ...]] = {
        "distilbert.embeddings.word_embeddings.weight": (28996, 768)
    }
    shapes["distilbert.embeddings.position_embeddings.weight"] = (512, 768)
    shapes["distilbert.embeddings.LayerNorm.weight"] = (768,)
    shapes["distilbert.embeddings.LayerNorm.bias"] = (768,)
    for i in range(6):
        layer = f"distilbert.transformer.layer.{i}"
        for lin in ("q_lin", "k_lin", "v_lin", "out_lin"):
            shapes[f"{layer}.attention.{lin}.weight"] = (768, 768)
            shapes[f"{layer}.attention.{lin}.bias"] = (768,)
        for norm in ("sa_layer_norm", "output_layer_norm"):
            shapes[f"{layer}.{norm}.weight"] = shapes[f"{layer}.{norm}.bias"] = (768,)
        shapes[f"{layer}.ffn.lin1.weight"], shapes[f"{layer}.ffn.lin1.bias"] = (3072, 768), (3072,)
        shapes[f"{layer}.ffn.lin2.weight"], shapes[f"{layer}.ffn.lin2.bias"] = (768, 3072), (768,)
    shapes["vocab_transform.weight"], shapes["vocab_transform.bias"] = (768, 768), (768,)
    shapes["vocab_layer_norm.weight"] = shapes["vocab_layer_norm.bias"] = (768,)
    shapes["vocab_projector.bias"] = (28996,)
    state = {k: np.full(s, i / 7, np.float32) for i, (k, s) in enumerate(shapes.items())}
    tied = "distilbert.embeddings.word_embeddings.weight"
    path = tmp_path / "distilbert.bin"
    start = time.perf_counter()
    write_torch_zip(path, state, tie={"vocab_projector.weight": tied})
    written = time.perf_counter()
    got = read_torch_zip(path)
    done = time.perf_counter()
    n_params = sum(a.size for a in state.values())
    print(f"{n_params / 1e6:.1f}M parameters, {path.stat().st_size / 2**20:.0f} MiB: "
          f"write {written - start:.2f} s, read {done - written:.2f} s")  # fmt: skip
    assert n_params == 65_812_036 and len(got) == len(state) + 1  # distilbert-base-cased
    for key, expected in state.items():
        assert got[key].shape == expected.shape and got[key].flat[-1] == expected.flat[0], key
    assert np.array_equal(got["vocab_projector.weight"], state[tied])


# ---------------------------------------------------------------------------------------------
# Pickles that would run code. The payloads create a marker file if they run.
# ---------------------------------------------------------------------------------------------


def _tuple1(*ops: bytes) -> bytes:
    return b"".join(ops) + b"\x85"


def hostile_pickles(marker: Path) -> dict[str, tuple[bytes, str]]:
    """name -> (pickle bytes, the global the refusal must name)."""
    command = f"touch {shlex.quote(str(marker))}"

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return os.system, (command,)

    class EvilPopen:
        def __reduce__(self) -> tuple[object, tuple[list[str]]]:
            return subprocess.Popen, (["touch", str(marker)],)

    cmd = pickle_str(command)
    # fmt: off
    return {
        "os.system GLOBAL": (
            b"\x80\x02" + pickle_global("os", "system") + _tuple1(cmd) + b"R.",
            "os.system",
        ),
        "posix.system STACK_GLOBAL": (
            b"\x80\x04" + pickle_str("posix", 4) + pickle_str("system", 4) + b"\x93"
            + _tuple1(pickle_str(command, 4)) + b"R.",
            "posix.system",
        ),
        "builtins.eval": (
            b"\x80\x02" + pickle_global("builtins", "eval")
            + _tuple1(pickle_str(f"__import__('os').system({command!r})")) + b"R.",
            "builtins.eval",
        ),
        "subprocess.Popen": (
            b"\x80\x02" + pickle_global("subprocess", "Popen")
            + _tuple1(b"]", pickle_str("touch"), b"a", pickle_str(str(marker)), b"a") + b"R.",
            "subprocess.Popen",
        ),
        "builtins.getattr(__import__('os'), 'system')": (
            b"\x80\x02" + pickle_global("builtins", "getattr")
            + pickle_global("builtins", "__import__") + _tuple1(pickle_str("os")) + b"R"
            + pickle_str("system") + b"\x86R" + _tuple1(cmd) + b"R.",
            "builtins.getattr",
        ),
        "__reduce__ protocol 2": (pickle.dumps(Evil(), protocol=2), "posix.system"),
        "__reduce__ protocol 5": (pickle.dumps(Evil(), protocol=5), "posix.system"),
        "__reduce__ Popen": (pickle.dumps(EvilPopen(), protocol=4), "subprocess.Popen"),
        # protocol 2 spells it the Python 2 way; the stdlib's find_class maps it back
        "__reduce__ Popen protocol 2": (pickle.dumps(EvilPopen(), protocol=2), "commands.Popen"),
        "copyreg._reconstructor": (
            b"\x80\x02" + pickle_global("copyreg", "_reconstructor")
            + pickle_global("os", "system") + b"N" + cmd + b"\x87R.",
            "copyreg._reconstructor",
        ),
        "dotted name off an allowed global": (
            b"\x80\x04" + pickle_str("torch._utils", 4)
            + pickle_str("_rebuild_tensor_v2.__globals__", 4) + b"\x93.",
            "torch._utils._rebuild_tensor_v2.__globals__",
        ),
        "INST (protocol 0)": (b"(" + cmd + b"ios\nsystem\n.", "os.system"),
        "os.system after valid tensors, as BUILD state": (
            torch_pickle(plan({"a": np.ones(2, np.float32)})[0], metadata=False)[:-1]
            + b"}" + pickle_str("evil") + pickle_global("os", "system") + _tuple1(cmd)
            + b"Rsb.",
            "os.system",
        ),
    }
    # fmt: on


HOSTILE = list(hostile_pickles(Path("/x")))


def test_the_payloads_are_live(tmp_path: Path) -> None:
    """Control: the stdlib unpickler does run the os.system payload."""
    marker = tmp_path / "ran"
    pickle.loads(hostile_pickles(marker)["__reduce__ protocol 2"][0])
    assert marker.exists()


@pytest.mark.parametrize("name", HOSTILE)
def test_code_running_pickles_are_refused_and_never_run(tmp_path: Path, name: str) -> None:
    marker = tmp_path / "ran"
    payload, global_name = hostile_pickles(marker)[name]
    path = tmp_path / "evil.bin"
    write_torch_zip(path, {"a": np.ones(2, np.float32)}, pickle_bytes=payload)
    refused(path, global_name, error=UnsafeCheckpointError)
    assert not marker.exists()


@pytest.mark.parametrize("name", HOSTILE)
def test_symbolic_unpickler_refuses_them_without_the_opcode_check(
    tmp_path: Path, name: str
) -> None:
    """Defence in depth: skip the static check; find_class alone still refuses."""
    marker = tmp_path / "ran"
    payload, global_name = hostile_pickles(marker)[name]
    with pytest.raises(UnsafeCheckpointError, match=rf"x\.bin.*{global_name}"):
        torch_zip._unpickle_symbolic(payload, "x.bin", "archive/data.pkl")
    assert not marker.exists()


def pickle_file(tmp_path: Path, payload: bytes, name: str = "p.bin") -> Path:
    path = tmp_path / name
    write_torch_zip(path, {"a": np.ones(2, np.float32)}, pickle_bytes=payload)
    return path


OD = pickle_global("collections", "OrderedDict")
REBUILD = pickle_global("torch._utils", "_rebuild_tensor_v2")


@pytest.mark.parametrize(
    ("payload", "error", "fragment"),
    [
        (b"\x80\x02" + OD + b"}b.", UnsafeCheckpointError, "BUILD on collections.OrderedDict"),
        (b"\x80\x02" + REBUILD + b"N}" + pickle_str("name") + pickle_str("OrderedDict")
         + b"s\x86b.", UnsafeCheckpointError, "BUILD on torch._utils._rebuild_tensor_v2"),
        (b"\x80\x02" + OD + b")R" + pickle_int(3) + b"b.", UnsafeCheckpointError, "int state"),
        (b"\x80\x02" + OD + b")\x81.", UnsafeCheckpointError, "opcode NEWOBJ"),
        (b"\x80\x02" + pickle_global("torch", "FloatStorage") + b")R.", CheckpointError,
         "refuses call torch.FloatStorage"),
        (b"\x80\x02" + OD + b"]" + pickle_str("k") + b"a\x85R.", CheckpointError,
         "refuses call collections.OrderedDict"),
        (b"\x80\x04" + OD + b"N\x93.", UnsafeCheckpointError, "computed names"),
        (b"\x80\x02]" + pickle_int(1) + b"a.", CheckpointError, "holds a list"),
        (b"\x80\x02}" + pickle_str("epoch") + pickle_int(3) + b"s.", CheckpointError,
         "key 'epoch' is a 3, not a tensor"),
        (b"\x80\x02}" + pickle_int(3) + pickle_int(3) + b"s.", CheckpointError, "non-string key"),
    ],
    ids=["build-od", "build-slots", "build-int", "newobj", "call-storage", "od-args",
         "stack-global-computed", "list", "not-tensor", "int-key"],
)  # fmt: skip
def test_objects_and_builds_outside_a_state_dict(
    tmp_path: Path, payload: bytes, error: type[Exception], fragment: str
) -> None:
    refused(pickle_file(tmp_path, payload), fragment, "archive/data.pkl", error=error)


# ---------------------------------------------------------------------------------------------
# Malformed pickles: clean, fast errors, no giant allocations
# ---------------------------------------------------------------------------------------------

VALID_PICKLE = torch_pickle(plan({"a": np.ones((2, 3), np.float32), "b": np.arange(4)})[0])


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"\x80\x02\xff.", "unknown"),
        (VALID_PICKLE[: len(VALID_PICKLE) // 2], "malformed pickle"),
        (VALID_PICKLE[:-1], "malformed pickle"),
        (b"", "malformed pickle"),
        (b"\x80\x02\x8d" + struct.pack("<Q", 2**31) + b"abc.", "2147483648 bytes"),  # 2 GiB str
        (b"\x80\x02\x8e" + struct.pack("<Q", 2**31) + b"abc.", "malformed pickle"),  # bytes
        (b"\x80\x02X" + struct.pack("<I", 2**32 - 1) + b"abc.", "malformed pickle"),
        (b"\x80\x04\x95" + struct.pack("<Q", 2**40) + b"N.", "FRAME"),
        (b"\x80\x02Nr" + struct.pack("<I", 2**28) + b".", "memo index 268435456"),
        (b"\x80\x02h\x05.", "never set"),
        (b"\x80\x02}" + b")" + b"\x85" * 100_000 + b"Ns.", "nested deeper"),
        (b"\x80\x02NN.", "unbalanced"),
        (b"\x80\x02s.", "underflow"),
        (b"\x80\x02S'x'\n.", "unsupported opcode STRING"),
        (b"\x80\x02N" + b"0" * 10 + b".", "unsupported opcode POP"),
        (b"\x80\x63N.", "malformed pickle"),  # protocol 99
    ],
    ids=["unknown-opcode", "truncated-half", "no-stop", "empty", "binunicode8-2GiB",
         "binbytes8-2GiB", "binunicode-4GiB", "frame-1TiB", "memo-2**28", "bad-get",
         "deep-tuple-key", "two-results", "underflow", "py2-string", "pop", "protocol-99"],
)  # fmt: skip
def test_malformed_pickles_fail_fast_and_small(
    tmp_path: Path, payload: bytes, fragment: str
) -> None:
    path = pickle_file(tmp_path, payload)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        refused(path, fragment, "archive/data.pkl")
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 1.0 and peak < 16 * 2**20, (elapsed, peak)


def test_opcode_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch_zip, "MAX_PICKLE_OPS", 1000)
    path = pickle_file(tmp_path, b"\x80\x02]" + b"Na" * 600 + b".")
    refused(path, "more than 1000 opcodes")


def test_pickle_size_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch_zip, "MAX_PICKLE_BYTES", 100)
    path = tmp_path / "big.bin"
    write_torch_zip(path, {"a": np.ones(2, np.float32)})
    refused(path, "archive/data.pkl", "limit 100")


# ---------------------------------------------------------------------------------------------
# Storages and tensor layouts that don't fit
# ---------------------------------------------------------------------------------------------


def f32_bytes(n: int) -> bytes:
    return np.arange(n, dtype=np.float32).tobytes()


def one_tensor(path: Path, numel: int = 12, stored: int = 12, **layout: object) -> Path:
    fields: dict = {"offset": 0, "size": (3, 4), "stride": (4, 1), **layout}
    record = TensorRecord("w", "FloatStorage", "0", numel, **fields)
    return write_records(path, [record], {"0": f32_bytes(stored)})


@pytest.mark.parametrize(
    ("layout", "fragment"),
    [
        ({"offset": 1}, "reach element 12"),
        ({"offset": 13, "size": (0,), "stride": (1,)}, "offset 13 is past"),
        ({"stride": (5, 1)}, "reach element 13"),
        ({"stride": (1, 4)}, "reach element 14"),
        ({"size": (3, 5)}, "reach element 12"),
        ({"size": (-3, 4)}, "negative size"),
        ({"stride": (4, -1)}, "negative size or stride"),
        ({"offset": -1}, "offset -1 is not a non-negative int"),
        ({"size": (3, 4, 1)}, "equal length"),
        ({"size": (12, 12), "stride": (0, 1)}, "broadcast views refused"),
        ({"size": (1,) * 40, "stride": (1,) * 40}, "up to 32 ints"),
        ({"size": (2**70,), "stride": (1,)}, "outside the storage"),
    ],
    ids=["offset", "empty-offset", "stride", "transposed-stride", "size", "negative-size",
         "negative-stride", "negative-offset", "ndim-mismatch", "broadcast", "too-many-dims",
         "huge-size"],
)  # fmt: skip
def test_out_of_bounds_layouts(tmp_path: Path, layout: dict, fragment: str) -> None:
    refused(one_tensor(tmp_path / "oob.bin", **layout), "tensor 'w'", fragment)


def test_tensor_without_a_storage(tmp_path: Path) -> None:
    payload = b"\x80\x02}" + pickle_str("a") + REBUILD + b"(NNNNNNtRs."
    refused(pickle_file(tmp_path, payload), "tensor 'a'", "storage is a NoneType")


def test_zero_size_and_size_one_dims_with_any_stride(tmp_path: Path) -> None:
    path = one_tensor(tmp_path / "ok.bin", offset=12, size=(0, 4), stride=(4, 1))
    assert read_torch_zip(path)["w"].shape == (0, 4)
    path = one_tensor(tmp_path / "ok1.bin", offset=2, size=(1, 3), stride=(2**40, 1))
    assert read_torch_zip(path)["w"].tolist() == [[2.0, 3.0, 4.0]]


def test_storage_size_must_match_numel(tmp_path: Path) -> None:
    path = one_tensor(tmp_path / "size.bin", numel=12, stored=11)
    refused(path, "'archive/data/0' has 44 bytes", "FloatStorage of 12 elements needs 48")


def test_missing_storage_entry(tmp_path: Path) -> None:
    path = tmp_path / "missing.bin"
    write_torch_zip(
        path,
        {"a": np.ones(3, np.float32), "b": np.ones(2, np.int64)},
        edit=lambda entries: [e for e in entries if e.name != "archive/data/1"],
    )
    refused(path, "'archive/data/1' is missing")


def test_one_storage_declared_two_ways(tmp_path: Path) -> None:
    records = [
        TensorRecord("a", "FloatStorage", "0", 4, 0, (4,), (1,)),
        TensorRecord("b", "IntStorage", "0", 4, 0, (4,), (1,)),
    ]
    path = write_records(tmp_path / "two.bin", records, {"0": f32_bytes(4)})
    refused(path, "tensor 'b'", "FloatStorage[4] and IntStorage[4]")


def test_many_keys_on_one_storage_are_capped(tmp_path: Path) -> None:
    one = TensorRecord("k", "FloatStorage", "0", 2**18, 0, (2**18,), (1,))
    records = [TensorRecord(f"k{i}", *astuple(one)[1:]) for i in range(20)]  # 20 MiB from 1
    path = write_records(tmp_path / "fan.bin", records, {"0": f32_bytes(2**18)})
    refused(path, "more than 8 times")


@pytest.mark.parametrize(
    "pid",
    [
        b"(" + pickle_str("storage") + pickle_global("torch", "FloatStorage") + pickle_str("0")
        + pickle_str("cpu") + b"t",  # 4 items
        b"(" + pickle_str("storagex") + pickle_global("torch", "FloatStorage") + pickle_str("0")
        + pickle_str("cpu") + pickle_int(4) + b"t",
        b"(" + pickle_str("storage") + pickle_global("collections", "OrderedDict")
        + pickle_str("0") + pickle_str("cpu") + pickle_int(4) + b"t",
        b"(" + pickle_str("storage") + pickle_global("torch", "FloatStorage") + pickle_int(0)
        + pickle_str("cpu") + pickle_int(4) + b"t",
        b"(" + pickle_str("storage") + pickle_global("torch", "FloatStorage") + pickle_str("0")
        + pickle_str("cpu") + pickle_int(-4) + b"t",
        pickle_str("storage"),
    ],
    ids=["short", "tag", "class", "key-type", "negative-numel", "not-a-tuple"],
)  # fmt: skip
def test_malformed_persistent_ids(tmp_path: Path, pid: bytes) -> None:
    payload = b"\x80\x02}" + pickle_str("a") + pid + b"Qs."
    refused(pickle_file(tmp_path, payload), "malformed storage reference", "archive/data.pkl")


def test_tensor_metadata_and_hooks_refused(tmp_path: Path) -> None:
    # torch writes a 7th argument {"neg": True} for a negated view: values would be wrong
    pid = (b"(" + pickle_str("storage") + pickle_global("torch", "FloatStorage")
           + pickle_str("0") + pickle_str("cpu") + pickle_int(2) + b"tQ")  # fmt: skip
    payload = (b"\x80\x02}" + pickle_str("n") + REBUILD + b"(" + pid + pickle_int(0)
               + pickle_int(2) + b"\x85" + pickle_int(1) + b"\x85\x89" + OD + b")R}"
               + pickle_str("neg") + b"\x88stRs.")  # fmt: skip
    path = tmp_path / "neg.bin"
    write_zip(path, torch_entries([], {"0": f32_bytes(2)}, pickle_bytes=payload))
    refused(path, "tensor 'n'", "metadata")


# ---------------------------------------------------------------------------------------------
# Zip archives torch.save would not write
# ---------------------------------------------------------------------------------------------


def small_entries(**options: object) -> list[ZipEntry]:
    records, storages = plan({"a": np.arange(4, dtype=np.float32)})
    return torch_entries(records, storages, **options)  # type: ignore[arg-type]


def test_two_data_pkl(tmp_path: Path) -> None:
    path = tmp_path / "two.bin"
    write_zip(path, small_entries() + small_entries(prefix="other"))
    refused(path, "found 2", "'archive/data.pkl'", "'other/data.pkl'")


def test_no_data_pkl(tmp_path: Path) -> None:
    path = tmp_path / "none.bin"
    write_zip(path, [e for e in small_entries() if not e.name.endswith("data.pkl")])
    refused(path, "found 0")


def test_compressed_entry(tmp_path: Path) -> None:
    path = tmp_path / "deflated.bin"
    entries = [ZipEntry(e.name, e.data, deflate=e.name.endswith("/0")) for e in small_entries()]
    write_zip(path, entries)
    refused(path, "compressed zip entry 'archive/data/0' (method 8)")


def test_zip_bomb_refused_before_decompressing(tmp_path: Path) -> None:
    path = tmp_path / "bomb.bin"
    bomb = ZipEntry("archive/data/0", np.zeros(256 * 2**20, np.uint8), deflate=True,
                    declared_size=16)  # fmt: skip
    write_zip(path, [*(e for e in small_entries() if e.name != bomb.name), bomb])
    assert path.stat().st_size < 2**20  # 256 MiB of zeros in a few hundred KiB
    tracemalloc.start()
    start = time.perf_counter()
    try:
        refused(path, "compressed zip entry 'archive/data/0'")
        elapsed, peak = time.perf_counter() - start, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 1.0 and peak < 4 * 2**20, (elapsed, peak)


@pytest.mark.parametrize(
    "name", ["archive/../../etc/cron.d/x", "/etc/passwd", "archive\\..\\x", "C:/x"]
)
def test_dangerous_entry_names(tmp_path: Path, name: str) -> None:
    path = tmp_path / "names.bin"
    write_zip(path, [*small_entries(), ZipEntry(name, b"x")])
    refused(path, repr(name))


def test_duplicate_entry(tmp_path: Path) -> None:
    path = tmp_path / "dup.bin"
    entries = small_entries()
    write_zip(path, [*entries, ZipEntry("archive/data/0", b"\0" * 16)])
    refused(path, "'archive/data/0' appears twice")


def test_entry_claiming_more_than_the_file(tmp_path: Path) -> None:
    path = tmp_path / "liar.bin"
    entries = [ZipEntry(e.name, e.data, declared_size=2**31 if e.name.endswith("/0") else None)
               for e in small_entries()]  # fmt: skip
    write_zip(path, entries)
    refused(path, "'archive/data/0' claims 2147483648 bytes")


def test_overlapping_entries(tmp_path: Path) -> None:
    """Each entry within the file, but all claiming the same big storage's bytes."""
    good = torch_zip_bytes({f"k{i}": np.ones(i + 1, np.uint8) for i in range(3)}
                           | {"big": np.ones(2**16, np.float32)})  # fmt: skip
    patched = bytearray(good)
    records = [i for i in range(len(good)) if good.startswith(b"PK\x01\x02", i)]
    by_name = {good[r + 46 : r + 46 + struct.unpack_from("<H", good, r + 28)[0]]: r
               for r in records}  # fmt: skip
    big = by_name[b"archive/data/3"]
    for name in (b"archive/data/0", b"archive/data/1", b"archive/data/2"):
        # same offset and sizes as the big storage's entry
        patched[by_name[name] + 16 : by_name[name] + 28] = good[big + 16 : big + 28]
        patched[by_name[name] + 42 : by_name[name] + 46] = good[big + 42 : big + 46]
    (tmp_path / "overlap.bin").write_bytes(patched)
    refused(tmp_path / "overlap.bin", "overlapping entries")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", "empty file"),
        (b"this is not a checkpoint\n" * 10, "not a PyTorch zip checkpoint"),
        # what torch.save(..., _use_new_zipfile_serialization=False) starts with
        (b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19.\x80\x02M\xe9\x03.", "legacy pre-1.6"),
        (b"PK\x05\x06" + b"\0" * 18, "found 0"),  # an empty zip
        (b"PK\x03\x04" + b"\xff" * 100, "not a PyTorch zip checkpoint"),
    ],
    ids=["empty", "text", "legacy", "empty-zip", "zip-header-only"],
)
def test_not_a_torch_zip(tmp_path: Path, content: bytes, fragment: str) -> None:
    path = tmp_path / "file.bin"
    path.write_bytes(content)
    refused(path, fragment)


def test_unreadable_paths(tmp_path: Path) -> None:
    refused(tmp_path / "absent.bin", "cannot read")
    refused(tmp_path, "cannot read")


@pytest.mark.parametrize("order", [b"big", b"middle", b"x" * 40])
def test_byteorder_other_than_little(tmp_path: Path, order: bytes) -> None:
    path = tmp_path / "order.bin"
    write_zip(path, small_entries(byteorder=order))
    refused(path, "'archive/byteorder'")


def test_corrupted_and_truncated_archives(tmp_path: Path) -> None:
    good = torch_zip_bytes({"a": np.arange(64, dtype=np.float32)})
    data_at = good.index(np.arange(64, dtype=np.float32).tobytes())
    flipped = bytearray(good)
    flipped[data_at + 5] ^= 0x40
    (tmp_path / "crc.bin").write_bytes(flipped)
    refused(tmp_path / "crc.bin", "'archive/data/0'", "CRC")
    (tmp_path / "cut.bin").write_bytes(good[: len(good) - 30])
    refused(tmp_path / "cut.bin", "not a PyTorch zip checkpoint")


# ---------------------------------------------------------------------------------------------
# Mutation fuzzing: whatever the bytes, a CheckpointError or arrays, never anything else
# ---------------------------------------------------------------------------------------------

FUZZ_STATE: dict[str, np.ndarray] = {
    "w": np.arange(6, dtype=np.float32).reshape(2, 3),
    "h": np.array([1.5, -2.0], np.float16),
    "i": np.array([7], np.int64),
    "b": np.array([True, False]),
}
FUZZ_STATE["w.T"] = FUZZ_STATE["w"].T
FUZZ_RECORDS, FUZZ_STORAGES = plan(FUZZ_STATE, tie={"tied": "w"}, bfloat16=())
FUZZ_PICKLE = torch_pickle(FUZZ_RECORDS)
FUZZ_ZIP = torch_zip_bytes(FUZZ_STATE, tie={"tied": "w"})

edits = st.lists(
    st.tuples(
        st.sampled_from(["flip", "set", "insert", "delete"]),
        st.integers(0, 2**31),
        st.integers(0, 255),
    ),
    min_size=1,
    max_size=4,
)


def mutate(data: bytes, changes: list[tuple[str, int, int]]) -> bytes:
    out = bytearray(data)
    for how, where, value in changes:
        at = where % (len(out) + 1)
        if how == "insert":
            out[at:at] = bytes([value])
        elif out and how == "delete":
            del out[at % len(out)]
        elif out and how == "flip":
            out[at % len(out)] ^= 1 << (value % 8)
        elif out:
            out[at % len(out)] = value
    return bytes(out)


def test_mutated_files_fail_cleanly(tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = tmp_path_factory.mktemp("fuzz")
    outcomes: Counter[str] = Counter()

    @settings(
        max_examples=300,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(target=st.sampled_from(["pickle", "zip"]), changes=edits)
    def run(target: str, changes: list[tuple[str, int, int]]) -> None:
        path = folder / "mutant.bin"
        if target == "pickle":
            entries = torch_entries(
                FUZZ_RECORDS, FUZZ_STORAGES, pickle_bytes=mutate(FUZZ_PICKLE, changes)
            )
            write_zip(path, entries)
        else:
            path.write_bytes(mutate(FUZZ_ZIP, changes))
        try:
            state = read_torch_zip(path)
        except UnsafeCheckpointError:
            outcomes[f"{target}: unsafe"] += 1
        except CheckpointError as e:
            assert str(path) in str(e)
            outcomes[f"{target}: refused"] += 1
        else:
            assert all(isinstance(a, np.ndarray) for a in state.values())
            outcomes[f"{target}: read"] += 1

    run()
    print(f"mutation cases run: {sum(outcomes.values())} {dict(sorted(outcomes.items()))}")
    assert sum(outcomes.values()) >= 300
