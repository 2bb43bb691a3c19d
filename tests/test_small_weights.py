"""Small-weights files (int8, float16): what they store, that the forward pass runs them exactly
as the weights they hold, and how close they stay to float32 (full-size and real weights)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, tiny_reference

import npdistil
from npdistil.errors import CheckpointError, InputError
from npdistil.model import quantize, reference
from npdistil.model.numerics import Int8Array
from npdistil.weights import storage

TEXTS = tiny_reference()[0]["texts"][:4] + [
    "Small machines get small weights.",
    "An int8 file holds a quarter of the bytes.",
]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return (a64 * b64).sum(1) / np.linalg.norm(a64, axis=1) / np.linalg.norm(b64, axis=1)


@pytest.mark.parametrize(
    "folder", ["tiny", "tiny-mlm", "tiny-bert", "st-distilbert-cls-dense-normalize"]
)
@pytest.mark.parametrize("dtype", ["int8", "float16"])
def test_a_small_file_stores_its_big_matrices_small_and_loads_with_no_option(
    folder, dtype, tmp_path
):
    src = FIXTURES / folder
    if not src.is_dir():
        pytest.skip(f"no fixture {folder}")
    full = npdistil.convert_folder(src, tmp_path / "f32.safetensors")
    small = npdistil.convert_folder(src, tmp_path / f"{dtype}.safetensors", dtype=dtype)
    header = storage.read_header(small)
    assert header.metadata["dtype"] == dtype
    kinds = {name: info.dtype for name, info in header.tensors.items()}
    big = quantize.compressed_names(kinds)
    assert "embeddings.word" in big and any(n.endswith("ffn_in.weight") for n in big)
    for name in big:
        assert kinds[name] == {"int8": "I8", "float16": "F16"}[dtype], name
        assert (f"{name}.scale" in kinds) == (dtype == "int8")
    assert kinds["embeddings.norm.weight"] == "F32"  # everything else stays float32
    model = npdistil.load(small)
    assert isinstance(model.weights.embeddings.word, Int8Array if dtype == "int8" else np.ndarray)
    got, want = model.encode(TEXTS), npdistil.load(full).encode(TEXTS)
    worst = float(_cosines(got, want).min())
    print(f"{folder} {dtype}: sentence cosine vs float32 >= {worst:.6f}")
    assert worst > 0.99
    if "mlm" in folder:  # the tied projector reads the small word table too
        ids = model.tokenizer(TEXTS[:2]).input_ids
        small_logits, logits = model.masked_lm(ids), npdistil.load(full).masked_lm(ids)
        d = small_logits.shape[-1]
        assert _cosines(small_logits.reshape(-1, d), logits.reshape(-1, d)).min() > 0.99


@pytest.mark.parametrize("dtype", ["int8", "float16"])
def test_the_fast_path_runs_a_small_file_exactly_as_the_weights_it_holds(dtype, tmp_path, parity):
    """The independent reference: the file's tensors widened here with NumPy (values x scale,
    or float16 -> float32), run through reference.py in float64."""
    path = npdistil.convert_folder(FIXTURES / "tiny", tmp_path / "m.safetensors", dtype=dtype)
    model = npdistil.load(path)
    tensors = storage.read_tensors(path)
    widened = {
        name: (a.astype(np.float64) * tensors[f"{name}.scale"] if a.dtype == np.int8 else a)
        for name, a in tensors.items()
        if not name.endswith(".scale")
    }
    assert widened["embeddings.word"].dtype == (np.float64 if dtype == "int8" else np.float16)
    by_hand = npdistil.weights.layout.build_weights(
        {k: np.asarray(v, np.float32) for k, v in widened.items()}, model.config, "by hand"
    )
    batch = model.tokenizer(TEXTS)
    fast = model(batch.input_ids, batch.attention_mask).last_hidden_state
    textbook = reference.encoder(batch.input_ids, batch.attention_mask, by_hand, model.config)
    mask = batch.attention_mask.astype(bool)
    parity(f"{dtype} file: fast path vs its widened weights", fast[mask], textbook[0][mask])
    # One short text: its products split by columns, each part widening its columns only.
    short = model.tokenizer(TEXTS[:1])
    fast = model(short.input_ids, short.attention_mask).last_hidden_state
    textbook = reference.encoder(short.input_ids, short.attention_mask, by_hand, model.config)
    parity(f"{dtype} file, one short text: fast path vs its widened weights", fast, textbook[0])


def test_int8_rounding_is_within_half_a_step_per_channel():
    rng = np.random.default_rng(5)
    w = (rng.standard_normal((64, 48)) * rng.uniform(0.01, 3, 48)).astype(np.float32)
    w[:, 7] = 0  # an all-zero channel
    for axis in (0, 1):
        values, scale = quantize.quantize_int8(w, axis)
        assert values.dtype == np.int8 and np.abs(values).max() == 127
        err = np.abs(values * scale - w)
        assert np.all(err <= scale / 2 + 1e-7 * np.abs(w)), axis
    assert np.all(quantize.quantize_int8(w, 1)[0][:, 7] == 0)


@pytest.mark.parametrize("dtype", ["int8", "float16"])
def test_full_size_small_files_size_and_agreement(full_size_folder, dtype, tmp_path):
    full = npdistil.convert_folder(full_size_folder, tmp_path / "f32.safetensors")
    small = npdistil.convert_folder(full_size_folder, tmp_path / "s.safetensors", dtype=dtype)
    ratio = small.stat().st_size / full.stat().st_size
    model, base = npdistil.load(small), npdistil.load(full)
    texts = [f"{t} {i}" for i, t in enumerate(TEXTS * 3)]
    worst = float(_cosines(model.encode(texts), base.encode(texts)).min())
    print(f"full size {dtype}: file {ratio:.3f}x of float32, sentence cosine >= {worst:.7f}")
    assert ratio <= {"int8": 0.27, "float16": 0.52}[dtype]
    assert worst >= {"int8": 0.999, "float16": 0.99999}[dtype]


def test_real_minilm_int8_agrees_with_float32(minilm_folder, tmp_path):
    full = npdistil.convert_folder(minilm_folder, tmp_path / "f32.safetensors")
    small = npdistil.convert_folder(minilm_folder, tmp_path / "i8.safetensors", dtype="int8")
    texts = json.loads((FIXTURES / "minilm_reference.json").read_text())["texts"]
    got, want = npdistil.load(small).encode(texts), npdistil.load(full).encode(texts)
    worst = float(_cosines(got, want).min())
    print(f"all-MiniLM-L6-v2 int8: {len(texts)} texts, sentence cosine vs float32 >= {worst:.5f}")
    assert worst >= 0.995


def test_bad_dtypes_and_bad_small_files_are_refused(tmp_path):
    with pytest.raises(InputError, match="dtype must be one of"):
        npdistil.convert_folder(FIXTURES / "tiny", tmp_path / "x.safetensors", dtype="int4")
    path = npdistil.convert_folder(FIXTURES / "tiny", tmp_path / "i8.safetensors", dtype="int8")
    header = storage.read_header(path)
    tensors = dict(storage.read_tensors(path, header))
    del tensors["blocks.1.ffn_in.weight.scale"]
    broken = tmp_path / "broken.safetensors"
    storage.write_atomic(broken, tensors, header.metadata)
    with pytest.raises(CheckpointError, match="'blocks.1.ffn_in.weight' needs a float32 scale"):
        npdistil.load(broken)


def test_npdistil_convert_dtype_from_a_folder_and_from_a_float32_file(tmp_path):
    script = str(Path(sys.executable).parent / "npdistil")

    def convert(*args: object) -> subprocess.CompletedProcess:
        return subprocess.run([script, "convert", *map(str, args)], capture_output=True, text=True)

    p = convert(FIXTURES / "tiny", tmp_path / "i8.safetensors", "--dtype", "int8")
    assert p.returncode == 0, p.stderr
    assert convert(FIXTURES / "tiny", tmp_path / "f32.safetensors").returncode == 0
    p = convert(tmp_path / "f32.safetensors", tmp_path / "f16.safetensors", "--dtype", "float16")
    assert p.returncode == 0, p.stderr
    p = convert(tmp_path / "i8.safetensors", tmp_path / "copy.safetensors")  # a copy, as it is
    assert p.returncode == 0, p.stderr
    for name, dtype in [("i8", "int8"), ("f32", "float32"), ("f16", "float16"), ("copy", "int8")]:
        info = json.loads(
            subprocess.run(
                [script, "info", tmp_path / f"{name}.safetensors"], capture_output=True, text=True
            ).stdout
        )
        assert (
            info["dtype"] == dtype
            and npdistil.load(tmp_path / f"{name}.safetensors").dtype == dtype
        )
    p = convert(tmp_path / "i8.safetensors", tmp_path / "back.safetensors", "--dtype", "float32")
    assert p.returncode == 1 and "int8 already" in p.stderr  # rounding can't be undone


def test_float16_widening_equals_numpys_conversion_for_every_value():
    """``dense`` widens float16 by moving bits (4x faster than NumPy's cast): the same bits as
    NumPy's own conversion for each of the 65,536 float16 values (subnormals, zeros of both
    signs, infinities and NaNs included), in a matrix and in a strided column slice of one."""
    from npdistil.model.numerics import dense

    every = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16)
    got = dense(every.reshape(256, 256))
    assert got.dtype == np.float32
    assert np.array_equal(got.reshape(-1).view(np.uint32), every.astype(np.float32).view(np.uint32))
    w = np.random.default_rng(0).standard_normal((64, 96)).astype(np.float16)
    part = w[:, 17:80]  # as the column split slices a weight matrix
    assert np.array_equal(dense(part).view(np.uint32), part.astype(np.float32).view(np.uint32))
