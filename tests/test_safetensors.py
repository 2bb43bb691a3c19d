"""The strict safetensors reader: every malformed file is a CheckpointError naming the file
(and the tensor), never a crash, a hang or a silent wrong answer. Ends with a fuzzer."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from npdistil.errors import CheckpointError
from npdistil.weights.storage import read_header, read_tensors


def _raw(header: dict, data: bytes, pad: bool = True) -> bytes:
    text = json.dumps(header).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def _good(tmp_path: Path) -> Path:
    path = tmp_path / "good.safetensors"
    safetensors.numpy.save_file(
        {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(4, np.float16)},
        path,
        metadata={"k": "v"},
    )
    return path


def test_a_good_file_reads_as_the_reference_library_reads_it(tmp_path):
    path = _good(tmp_path)
    ours = read_tensors(path)
    ref = safetensors.numpy.load_file(path)
    assert ours.keys() == ref.keys()
    for k in ref:
        np.testing.assert_array_equal(ours[k], ref[k])
        assert ours[k].dtype == ref[k].dtype
    assert read_header(path).metadata == {"k": "v"}


A = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
CASES = {
    "empty file": b"",
    "7 bytes": b"\x01" * 7,
    "header length past the end": struct.pack("<Q", 1000) + b"{}",
    "absurd header length": struct.pack("<Q", 2**62) + b"{}",
    "header not JSON": struct.pack("<Q", 8) + b"not json",
    "header not UTF-8": struct.pack("<Q", 8) + b"\xff\xfe{}    ",
    "header a list": _raw([], b""),  # type: ignore[arg-type]
    "unknown dtype": _raw({"a": {**A, "dtype": "F8_E4M3"}}, b"\0" * 8),
    "shape not a list": _raw({"a": {**A, "shape": 2}}, b"\0" * 8),
    "negative dimension": _raw({"a": {**A, "shape": [-2]}}, b"\0" * 8),
    "shape x dtype not the span": _raw({"a": {**A, "shape": [3]}}, b"\0" * 8),
    "offsets reversed": _raw({"a": {**A, "data_offsets": [8, 0]}}, b"\0" * 8),
    "offsets out of bounds": _raw({"a": {**A, "data_offsets": [8, 16]}}, b"\0" * 8),
    "gap between tensors": _raw({"a": A, "b": {**A, "data_offsets": [12, 20]}}, b"\0" * 20),
    "overlapping tensors": _raw({"a": A, "b": {**A, "data_offsets": [4, 12]}}, b"\0" * 12),
    "trailing bytes": _raw({"a": A}, b"\0" * 12),
    "truncated data": _raw({"a": A}, b"\0" * 5),
    "extra entry field": _raw({"a": {**A, "extra": 1}}, b"\0" * 8),
    "non-string metadata": _raw({"__metadata__": {"k": 1}, "a": A}, b"\0" * 8),
    "metadata a list": _raw({"__metadata__": ["k"], "a": A}, b"\0" * 8),
    "duplicate tensor names": struct.pack("<Q", 120)
    + (
        b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
        b'"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
    ).ljust(120)
    + b"\0" * 8,
}


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_files_are_refused_naming_the_file(tmp_path, case):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(CASES[case])
    with pytest.raises(CheckpointError) as info:
        read_tensors(path)
    assert str(path) in str(info.value)
    print(f"{case}: {info.value}")


def test_the_reference_library_keeps_the_last_of_duplicate_names_but_we_refuse(tmp_path):
    path = tmp_path / "dup.safetensors"
    path.write_bytes(CASES["duplicate tensor names"])
    assert "a" in safetensors.numpy.load_file(path)  # silently accepted there
    with pytest.raises(CheckpointError, match="duplicate key 'a'"):
        read_header(path)


def test_a_directory_and_a_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="is a directory"):
        read_header(tmp_path)
    with pytest.raises(CheckpointError, match="no such file"):
        read_header(tmp_path / "nope.safetensors")


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_fuzz_mutated_files_give_checkpoint_errors_or_arrays(tmp_path, data):
    """Flip, insert, delete and overwrite bytes of a valid file (header and data)."""
    raw = bytearray(_good(tmp_path).read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "insert", "delete", "length"]))
        pos = data.draw(st.integers(0, len(raw) - 1))
        if kind == "flip":
            raw[pos] ^= data.draw(st.integers(1, 255))
        elif kind == "insert":
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete" and len(raw) > 1:
            del raw[pos]
        else:
            raw[:8] = struct.pack("<Q", data.draw(st.integers(0, 2**64 - 1)))
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(bytes(raw))
    try:
        tensors = read_tensors(path)
    except CheckpointError:
        return
    for array in tensors.values():  # whatever was accepted is readable
        np.asarray(array).sum()
